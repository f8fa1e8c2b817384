"""Prometheus metrics of one API process (a registry per app, so tests can build many apps)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.db import POOL_KEY

log = logging.getLogger(__name__)

JOB_STATUSES = ("succeeded", "partial", "failed")
"""How a finished run can end (job_runs.status)."""
JOBS_REFRESH_S = 15.0
"""The job gauges are read from the database at most this often (scrapes are unauthenticated)."""


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
        self.job_status = Gauge(
            "fleet_job_last_run_status",
            "1 for the status the job's last finished run ended with (succeeded, partial: "
            "finished with failures listed, failed), 0 for the others", ["job", "status"],
            registry=r)
        self.job_finished = Gauge("fleet_job_last_run_finished_timestamp_seconds",
                                  "When the job's last finished run ended", ["job"], registry=r)
        self.job_success = Gauge("fleet_job_last_success_timestamp_seconds",
                                 "When a run of the job last succeeded", ["job"], registry=r)
        self.job_failures = Gauge("fleet_job_last_run_failures",
                                  "Parts that failed in the job's last finished run (a "
                                  "tenant-day not archived, ...)", ["job"], registry=r)
        self.job_dead_letters = Gauge("fleet_job_last_run_dead_letter_rows",
                                      "Rows the job's last finished run set aside as dead "
                                      "letters (archive_rejects)", ["job"], registry=r)
        self._jobs_read_at = float("-inf")
        # (method, route, status) -> the two labelled series; `labels()` takes a lock and
        # builds its key on every call, which shows in the per-request profile.
        self._request_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._cache_series: dict[tuple[str, str], Counter] = {}

    def observe_request(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        """Count one request and its latency (route template, not raw path)."""
        key = (method, route, str(status))
        series = self._request_series.get(key)
        if series is None:
            series = (self.requests.labels(*key), self.latency.labels(method, route))
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(elapsed_s)


    def cache_result(self, cache: str, result: str) -> None:
        """Count one cache lookup (`hit` or `miss`)."""
        series = self._cache_series.get((cache, result))
        if series is None:
            series = self._cache_series[cache, result] = self.cache.labels(cache, result)
        series.inc()

    async def refresh_jobs(self, pool: asyncpg.Pool) -> None:
        """Read each job's last finished run into the job gauges (at most every
        JOBS_REFRESH_S; on a database error the last values stay)."""
        now = time.monotonic()
        if now - self._jobs_read_at < JOBS_REFRESH_S:
            return
        self._jobs_read_at = now
        try:
            async with pool.acquire(timeout=2) as conn:
                rows = await conn.fetch(
                    "SELECT s.job, extract(epoch FROM s.last_success_at) AS success,"
                    " r.status, extract(epoch FROM r.finished_at) AS finished, r.details"
                    " FROM job_state s LEFT JOIN LATERAL (SELECT * FROM (SELECT status,"
                    " finished_at, details FROM job_runs WHERE job = s.job"
                    " AND finished_at IS NOT NULL ORDER BY started_at DESC LIMIT 5) recent"
                    # The last to finish among the last started (an on-demand run may start
                    # after a scheduled one and end before it); the index serves the inner.
                    " ORDER BY finished_at DESC LIMIT 1) r ON true")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("metrics: job runs not read: %s", exc)
            return
        for row in rows:
            job = row["job"]
            if row["success"] is not None:
                self.job_success.labels(job).set(float(row["success"]))
            if row["status"] is None:
                continue
            for status in JOB_STATUSES:
                self.job_status.labels(job, status).set(1 if row["status"] == status else 0)
            self.job_finished.labels(job).set(float(row["finished"]))
            details = row["details"] or {}  # the pool decodes jsonb (api.db)
            self.job_failures.labels(job).set(
                details.get("failure_count", len(details.get("failures") or [])))
            self.job_dead_letters.labels(job).set(details.get("rows_dead_lettered", 0))


METRICS_KEY: web.AppKey[ApiMetrics] = web.AppKey("metrics", ApiMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics in the Prometheus text format."""
    metrics = request.app[METRICS_KEY]
    if POOL_KEY in request.app:
        await metrics.refresh_jobs(request.app[POOL_KEY])
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
