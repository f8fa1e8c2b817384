"""Prometheus metrics of one API process (a registry per app, so tests can build many apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class ApiMetrics:
    """The metric families the API exports at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("fleet_api_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("fleet_api_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=r)
        self.rate_limited = Counter("fleet_api_rate_limited_total", "Requests answered 429",
                                    registry=r)
        self.cache = Counter("fleet_api_cache_total", "Redis cache lookups",
                             ["cache", "result"], registry=r)
        self.logins = Counter("fleet_api_logins_total", "Login attempts", ["outcome"],
                              registry=r)
        self.ws_clients = Gauge("fleet_api_ws_clients", "Connected live WebSocket clients",
                                registry=r)
        self.ws_frames = Counter("fleet_api_ws_frames_total", "Live frames sent", registry=r)
        self.ws_coalesced = Counter("fleet_api_ws_coalesced_total",
                                    "Position updates replaced by a newer one before sending",
                                    registry=r)
        self.ws_dropped_events = Counter("fleet_api_ws_dropped_events_total",
                                         "Events dropped for slow clients", registry=r)
        self.live_messages = Counter("fleet_api_live_messages_total",
                                     "Messages received from Redis pub/sub", ["type"],
                                     registry=r)
        # (method, route, status) -> the two labelled series; `labels()` takes a lock and
        # builds its key on every call, which shows in the per-request profile.
        self._request_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        """Count one request and its latency (route template, not raw path)."""
        key = (method, route, str(status))
        series = self._request_series.get(key)
        if series is None:
            series = (self.requests.labels(*key), self.latency.labels(method, route))
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(elapsed_s)


METRICS_KEY: web.AppKey[ApiMetrics] = web.AppKey("metrics", ApiMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics in the Prometheus text format."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
