"""`fleet sim samsara`: a mock of the Samsara REST API, in the shapes Samsara documents.

Serves ``GET /fleet/vehicles/stats/feed`` (types, at most 3; ``after`` cursor; pages with
``pagination.endCursor`` / ``hasNextPage``; cursors that expire), ``GET /fleet/vehicles``
and ``GET /fleet/safety-events`` (startTime/endTime, paginated), with Bearer-token auth,
429 + fractional ``Retry-After`` and occasional 5xx (seeded, configurable). Vehicles move
by the project's vehicle model (`simulators.vehicle`), or by a small built-in route model
(`use_model=False`). See docs/integrations.md.

`fleet sim` imports this module to register its options, on a gateway too: aiohttp, a server
library, is imported only when the mock serves.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.stopping import StopSignals
from simulators.vehicle import VehicleModel

if TYPE_CHECKING:
    from aiohttp import web

SUPPORTED_TYPES = ("gps", "engineStates", "fuelPercents", "obdOdometerMeters", "obdEngineSeconds")
MAX_TYPES = 3


def iso(t_s: float) -> str:
    """RFC 3339 time with milliseconds, as Samsara writes it."""
    return datetime.fromtimestamp(t_s, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class _Truck:
    """Built-in motion: a loop around a centre point, with engine, fuel and odometer."""

    id: str
    name: str
    lat0: float
    lon0: float
    phase: float
    speed_kph: float = 50.0
    odometer_m: float = 10_000_000.0
    engine_s: float = 3_600_000.0
    fuel_pct: float = 80.0
    engine_on: bool = True
    lat: float = 0.0
    lon: float = 0.0
    heading: float = 0.0

    def step(self, dt_s: float) -> None:
        """Move along a ~2 km circle."""
        dist_m = self.speed_kph / 3.6 * dt_s if self.engine_on else 0.0
        self.odometer_m += dist_m
        if self.engine_on:
            self.engine_s += dt_s
            self.fuel_pct = max(5.0, self.fuel_pct - dist_m / 1000 * 0.05)
        self.phase += dist_m / 2000.0
        self.lat = self.lat0 + 0.018 * math.sin(self.phase)
        self.lon = self.lon0 + 0.025 * math.cos(self.phase)
        self.heading = (math.degrees(-self.phase) + 360) % 360


class _ModelTruck(_Truck):
    """Motion from simulators.vehicle.VehicleModel (the project's vehicle model)."""

    model: Any = None

    def step(self, dt_s: float) -> None:
        """Advance the model and copy the signals the mock reports."""
        self.model.step(dt_s)
        st = self.model.state
        self.lat = float(getattr(st, "lat_deg", self.lat))
        self.lon = float(getattr(st, "lon_deg", self.lon))
        self.speed_kph = float(getattr(st, "speed_kph", self.speed_kph) or 0.0)
        self.heading = float(getattr(st, "heading_deg", self.heading) or 0.0) % 360
        odo_km = getattr(st, "odometer_km", None)
        self.odometer_m = float(odo_km) * 1000 if odo_km is not None else (
            self.odometer_m + self.speed_kph / 3.6 * dt_s)
        fuel = getattr(st, "fuel_pct", None)
        self.fuel_pct = float(fuel) if fuel is not None else self.fuel_pct
        ign = getattr(st, "ignition", None)
        self.engine_on = bool(ign) if ign is not None else True
        hours = getattr(st, "engine_hours_h", None)
        self.engine_s = float(hours) * 3600 if hours is not None else self.engine_s + dt_s


def _make_truck(i: int, seed: int, lat0: float, lon0: float, *,
                use_model: bool = True) -> _Truck:
    name = f"Truck {i + 1:03d}"
    vid = str(281474976710000 + i)
    if not use_model:
        truck = _Truck(vid, name, lat0 + 0.05 * i, lon0, phase=i * 0.7)
        truck.step(0)
        return truck
    truck = _ModelTruck(vid, name, lat0 + 0.05 * i, lon0, phase=0.0)
    truck.model = VehicleModel(seed + i)
    truck.step(0)
    return truck


@dataclass
class Fault:
    """A scripted answer for the next matching request (tests queue these)."""

    status: int
    retry_after: str | None = None
    body: dict[str, Any] | None = None


@dataclass
class MockSamsara:
    """State of the mock: vehicles, an append-only log of stat points, safety events."""

    token: str = "samsara-mock-token"  # noqa: S105 - the mock's own test token
    vehicles: int = 3
    seed: int = 1
    page_size: int = 200
    """Stat points per feed page (Samsara tunes its page size; clients must page)."""
    cursor_ttl_s: float = 30 * 24 * 3600.0
    """Cursors older than this are refused as expired (Samsara: 30 days)."""
    error_rate: float = 0.0
    """Probability of a random 500/502/503 on any request (seeded)."""
    rate_limit_per_s: float = 0.0
    """Requests per second per token before 429 (0: unlimited)."""
    retry_after_s: float = 0.25
    lat0: float = 52.52
    lon0: float = 13.405
    use_vehicle_model: bool = True
    """Move vehicles with simulators.vehicle.VehicleModel; False: a steady 50 km/h loop."""
    start_offset_s: float = 0.0
    """Simulated time starts this many seconds after the wall clock (negative: in the past)."""
    unknown_vehicle_ids: list[str] = field(default_factory=list)
    """Extra Samsara vehicles that appear in feeds (to exercise unmapped ids)."""
    clock: Callable[[], float] = time.time
    log: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    safety: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - simulation, not security
        self.trucks = [_make_truck(i, self.seed, self.lat0, self.lon0,
                                   use_model=self.use_vehicle_model)
                       for i in range(self.vehicles)]
        for v in self.unknown_vehicle_ids:
            extra = _Truck(v, f"Unlinked {v}", self.lat0 - 0.1, self.lon0, 0.0)
            extra.step(0)
            self.trucks.append(extra)
        self._window_start = 0.0
        self._window_count = 0
        self.now = self.clock() + self.start_offset_s
        self.record()

    # -- data generation ------------------------------------------------------------------
    def _points(self, truck: _Truck, t: float) -> dict[str, dict[str, Any]]:
        ts = iso(t)
        return {
            "gps": {"time": ts, "latitude": round(truck.lat, 7), "longitude": round(truck.lon, 7),
                    "headingDegrees": round(truck.heading, 1),
                    "speedMilesPerHour": round(truck.speed_kph / 1.609344, 2),
                    "reverseGeo": {"formattedLocation": "Mock Street 1, Berlin"}},
            "engineStates": {"time": ts, "value": "On" if truck.engine_on else "Off"},
            "fuelPercents": {"time": ts, "value": round(truck.fuel_pct)},
            "obdOdometerMeters": {"time": ts, "value": int(truck.odometer_m)},
            "obdEngineSeconds": {"time": ts, "value": int(truck.engine_s)},
        }

    def record(self) -> None:
        """Append the current state of every vehicle to the log."""
        for truck in self.trucks:
            for kind, point in self._points(truck, self.now).items():
                self.log.append((truck.id, kind, point))

    def advance(self, dt_s: float = 5.0, steps: int = 1) -> None:
        """Move every vehicle `steps` times by `dt_s` and log the new stats."""
        for _ in range(steps):
            self.now += dt_s
            for truck in self.trucks:
                truck.step(dt_s)
            self.record()

    def add_safety_event(self, vehicle_id: str, label: str = "harshBrake",
                         t_s: float | None = None) -> dict[str, Any]:
        """Add a safety event of a vehicle at its current position."""
        truck = next(t for t in self.trucks if t.id == vehicle_id)
        when = self.now if t_s is None else t_s
        event = {
            "id": f"{vehicle_id}-{int(when * 1000)}",
            "time": iso(when),
            "vehicle": {"id": vehicle_id, "name": truck.name},
            "driver": {"id": "88668", "name": "Mock Driver"},
            "location": {"latitude": truck.lat, "longitude": truck.lon},
            "behaviorLabels": [{"label": label, "source": "automated", "name": label}],
            "maxAccelerationGForce": 0.52,
            "coachingState": "needsReview",
            "downloadForwardVideoUrl": f"https://mock.samsara.local/video/{vehicle_id}/{int(when)}.mp4",
        }
        self.safety.append(event)
        return event

    # -- cursors --------------------------------------------------------------------------
    def _cursor(self, index: int) -> str:
        raw = json.dumps({"i": index, "t": self.clock()}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _parse_cursor(self, cursor: str) -> tuple[int, float] | None:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = json.loads(raw)
            return int(data["i"]), float(data["t"])
        except (ValueError, KeyError, TypeError):
            return None

    # -- request handling -----------------------------------------------------------------
    def _gate(self, auth: str | None) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """Auth, scripted faults, rate limit and random errors; None when the call may pass."""
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized", "requestId": self._req_id()}, {}
        if self.faults:
            fault = self.faults.pop(0)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body or {"message": "injected", "requestId": self._req_id()}
            return fault.status, body, headers
        if self.rate_limit_per_s > 0:
            now = self.clock()
            if now - self._window_start >= 1.0:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            if self._window_count > self.rate_limit_per_s:
                return 429, {"message": "Rate limit exceeded", "requestId": self._req_id()}, {
                    "Retry-After": f"{self.retry_after_s:.5f}"}
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            status = self._rng.choice((500, 502, 503))
            return status, {"message": "Internal error", "requestId": self._req_id()}, {}
        return None

    def _req_id(self) -> str:
        return f"{self._rng.getrandbits(64):016x}"

    def feed(self, types_param: str | None,  # noqa: PLR0911 - one return per documented error
             after: str | None) -> tuple[int, dict[str, Any]]:
        """The body of GET /fleet/vehicles/stats/feed."""
        types = [t for t in (types_param or "").split(",") if t]
        if not types:
            return 400, {"message": "types is required", "requestId": self._req_id()}
        if len(types) > MAX_TYPES:
            return 400, {"message": f"at most {MAX_TYPES} types may be requested",
                         "requestId": self._req_id()}
        bad = [t for t in types if t not in SUPPORTED_TYPES]
        if bad:
            return 400, {"message": f"unsupported types: {bad}", "requestId": self._req_id()}
        wanted = set(types)
        if not after:
            # Latest known value of each requested type per vehicle.
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for vid, kind, point in self.log:
                if kind in wanted:
                    latest[(vid, kind)] = point
            data = self._group(list(latest.items()))
            return 200, {"data": data, "pagination": {"endCursor": self._cursor(len(self.log)),
                                                      "hasNextPage": False}}
        parsed = self._parse_cursor(after)
        if parsed is None:
            return 400, {"message": "Invalid cursor", "requestId": self._req_id()}
        start, issued = parsed
        if self.clock() - issued > self.cursor_ttl_s:
            return 400, {"message": "Invalid cursor: cursor has expired, restart the feed"
                         " without the after parameter", "requestId": self._req_id()}
        picked: list[tuple[tuple[str, str], dict[str, Any]]] = []
        index = start
        while index < len(self.log) and len(picked) < self.page_size:
            vid, kind, point = self.log[index]
            index += 1
            if kind in wanted:
                picked.append(((vid, kind), point))
        # Skip trailing points of other types so the cursor does not stall on them.
        while index < len(self.log) and self.log[index][1] not in wanted:
            index += 1
        return 200, {"data": self._group(picked),
                     "pagination": {"endCursor": self._cursor(index),
                                    "hasNextPage": index < len(self.log)}}

    def _group(self, points: list[tuple[tuple[str, str], dict[str, Any]]]) -> list[dict[str, Any]]:
        by_vehicle: dict[str, dict[str, Any]] = {}
        names = {t.id: t.name for t in self.trucks}
        for (vid, kind), point in points:
            entry = by_vehicle.setdefault(vid, {"id": vid, "name": names.get(vid, vid)})
            entry.setdefault(kind, []).append(point)
        return list(by_vehicle.values())

    def safety_page(self, start: str | None, end: str | None,
                    after: str | None) -> tuple[int, dict[str, Any]]:
        """The body of GET /fleet/safety-events."""
        try:
            lo = datetime.fromisoformat((start or "").replace("Z", "+00:00")).timestamp()
            hi = datetime.fromisoformat((end or "").replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 400, {"message": "startTime and endTime (RFC 3339) are required",
                         "requestId": self._req_id()}
        rows = [e for e in self.safety if lo <= datetime.fromisoformat(
            e["time"].replace("Z", "+00:00")).timestamp() < hi]
        offset = 0
        if after:
            parsed = self._parse_cursor(after)
            offset = parsed[0] if parsed else 0
        page = rows[offset:offset + 2]  # small pages so clients must paginate
        more = offset + 2 < len(rows)
        return 200, {"data": page, "pagination": {
            "endCursor": self._cursor(offset + 2) if more else "", "hasNextPage": more}}

    # -- aiohttp ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application serving this mock."""
        from aiohttp import web  # noqa: PLC0415 - server library, only when serving

        async def handle(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path_qs}")
            gated = self._gate(request.headers.get("Authorization"))
            if gated is not None:
                status, body, headers = gated
                return web.json_response(body, status=status, headers=headers)
            q = request.query
            if request.path == "/fleet/vehicles/stats/feed":
                status, body = self.feed(q.get("types"), q.get("after"))
            elif request.path == "/fleet/safety-events":
                status, body = self.safety_page(q.get("startTime"), q.get("endTime"),
                                                q.get("after"))
            elif request.path == "/fleet/vehicles":
                status, body = 200, {"data": [{"id": t.id, "name": t.name} for t in self.trucks],
                                     "pagination": {"endCursor": "", "hasNextPage": False}}
            else:
                status, body = 404, {"message": "Not found", "requestId": self._req_id()}
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        return app


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet sim samsara`."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--token", default="samsara-mock-token", help="accepted Bearer token")
    parser.add_argument("--vehicles", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick-s", type=float, default=5.0, help="seconds between updates")
    parser.add_argument("--error-rate", type=float, default=0.02,
                        help="probability of a random 5xx per request")
    parser.add_argument("--rate-limit-per-s", type=float, default=150.0)
    parser.add_argument("--page-size", type=int, default=200)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the mock until interrupted, advancing the vehicles every --tick-s seconds."""
    from aiohttp import web  # noqa: PLC0415 - server library, only when serving

    mock = MockSamsara(token=args.token, vehicles=args.vehicles, seed=args.seed,
                       error_rate=args.error_rate, rate_limit_per_s=args.rate_limit_per_s,
                       page_size=args.page_size)
    app = mock.app()

    async def ticker(_app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(args.tick_s)
                mock.advance(args.tick_s)
                if mock._rng.random() < 0.05:
                    mock.add_safety_event(mock._rng.choice(mock.trucks).id)
        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app.cleanup_ctx.append(ticker)
    print(f"samsara mock on http://{args.host}:{args.port} token={args.token}")
    StopSignals("sim samsara").serve(web.run_app, app, host=args.host, port=args.port, print=None)
    return 0
