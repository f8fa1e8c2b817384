"""Samsara pull ingestion: vehicle stats feeds and safety events.

Shapes (developers.samsara.com, API v2):

* ``GET /fleet/vehicles/stats/feed?types=a,b,c&after=CURSOR`` (at most 3 types) answers
  ``{"data": [{"id", "name", "gps": [{"time", "latitude", "longitude", "headingDegrees",
  "speedMilesPerHour", ...}], "engineStates": [{"time", "value": "On"|"Off"|"Idle"}],
  "fuelPercents": [{"time", "value"}], "obdOdometerMeters": [...], "obdEngineSeconds": [...]}],
  "pagination": {"endCursor", "hasNextPage"}}``. The first call (no ``after``) gives the latest
  state; later calls give every update since the cursor. When ``hasNextPage`` is false no more
  data is ready: wait at least 5 s. Cursors expire after 30 days.
* ``GET /fleet/safety-events?startTime&endTime&after`` answers ``{"data": [{"id", "time",
  "vehicle": {"id", "name"}, "location": {"latitude", "longitude"}, "behaviorLabels":
  [{"label", "source", "name"}], "maxAccelerationGForce", "downloadForwardVideoUrl", ...}],
  "pagination": {...}}``.
* Errors: 429 with ``Retry-After`` in (fractional) seconds; error bodies are
  ``{"message", "requestId"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from api.integrations.errors import CursorExpiredError, IntegrationError, VendorError
from api.integrations.http import Sleep, VendorHttp
from api.integrations.publisher import Publisher, make_sample, vendor_seq
from api.integrations.store import IntegrationStore, TenantRef, VehicleRef
from core.protocol import Sample, Source

log = logging.getLogger(__name__)

MPH_TO_KPH = 1.609344
MAX_TYPES_PER_FEED = 3
SAFETY_FEED = "safety_events"


def _t_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _engine_on(value: Any) -> bool:
    return str(value).lower() != "off"


@dataclass(frozen=True)
class StatType:
    """How one Samsara stat type becomes sample fields."""

    slot: int
    """Sub-millisecond slot of the sequence number (see publisher.vendor_seq)."""
    convert: Callable[[Mapping[str, Any]], dict[str, Any]]


def _gps(point: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"lat_deg": point["latitude"], "lon_deg": point["longitude"]}
    if point.get("speedMilesPerHour") is not None:
        out["speed_kph"] = float(point["speedMilesPerHour"]) * MPH_TO_KPH
    if point.get("headingDegrees") is not None:
        out["heading_deg"] = float(point["headingDegrees"]) % 360
    return out


# The one table of supported stat types; anything else in a feed is ignored with a log line.
STAT_TYPES: dict[str, StatType] = {
    "gps": StatType(0, _gps),
    "engineStates": StatType(1, lambda p: {"ignition": _engine_on(p["value"])}),
    "obdOdometerMeters": StatType(2, lambda p: {"odometer_km": float(p["value"]) / 1000}),
    "gpsOdometerMeters": StatType(2, lambda p: {"odometer_km": float(p["value"]) / 1000}),
    "fuelPercents": StatType(3, lambda p: {"fuel_pct": float(p["value"])}),
    "obdEngineSeconds": StatType(4, lambda p: {"engine_hours_h": float(p["value"]) / 3600}),
    "engineRpm": StatType(5, lambda p: {"rpm": float(p["value"])}),
    "engineCoolantTemperatureMilliC": StatType(
        6, lambda p: {"coolant_c": float(p["value"]) / 1000}),
    "batteryMilliVolts": StatType(7, lambda p: {"battery_v": float(p["value"]) / 1000}),
}


@dataclass(frozen=True)
class FeedPage:
    """One page of a stats feed."""

    vehicles: list[dict[str, Any]]
    end_cursor: str | None
    has_next_page: bool


@dataclass
class Conversion:
    """Samples per vendor vehicle id, and what could not be converted."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    invalid: list[tuple[str, str, Any]] = field(default_factory=list)
    """(vehicle id, reason, point) of points that violate the wire contract."""


def convert_vehicle_stats(vehicles: Sequence[Mapping[str, Any]]) -> Conversion:
    """Turn the `data` of a feed page into wire-contract samples per Samsara vehicle id."""
    out = Conversion()
    for vehicle in vehicles:
        vid = str(vehicle.get("id", ""))
        for name, points in vehicle.items():
            kind = STAT_TYPES.get(name)
            if kind is None or not isinstance(points, list):
                continue
            for point in points:
                try:
                    t_ms = _t_ms(point["time"])
                    fields = {"seq": vendor_seq(t_ms, kind.slot), "t_ms": t_ms,
                              **kind.convert(point)}
                    sample = make_sample(fields)
                except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
                    out.invalid.append((vid, f"{name}: {exc}", point))
                    continue
                out.samples.setdefault(vid, []).append(sample)
    return out


class SamsaraClient:
    """Typed calls to the Samsara REST API (or the mock, by base URL)."""

    def __init__(self, http: VendorHttp, base_url: str, token: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def stats_feed(self, types: Sequence[str], after: str | None) -> FeedPage:
        """One page of /fleet/vehicles/stats/feed; raises CursorExpiredError for a dead cursor."""
        if not 1 <= len(types) <= MAX_TYPES_PER_FEED:
            raise IntegrationError(f"a Samsara feed takes 1..3 stat types, got {list(types)}")
        params = {"types": ",".join(types)}
        if after:
            params["after"] = after
        try:
            resp = await self._http.request("GET", f"{self._base}/fleet/vehicles/stats/feed",
                                            params=params, headers=self._headers)
        except VendorError as exc:
            if after and exc.status in (400, 410) and "cursor" in exc.body.lower():
                raise CursorExpiredError(str(exc), status=exc.status, body=exc.body) from exc
            raise
        body = resp.body or {}
        page = body.get("pagination") or {}
        return FeedPage(list(body.get("data") or []), page.get("endCursor") or None,
                        bool(page.get("hasNextPage")))

    async def safety_events(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every safety event in [start, end), following pagination."""
        params = {"startTime": start.isoformat().replace("+00:00", "Z"),
                  "endTime": end.isoformat().replace("+00:00", "Z")}
        events: list[dict[str, Any]] = []
        while True:
            resp = await self._http.request("GET", f"{self._base}/fleet/safety-events",
                                            params=params, headers=self._headers)
            body = resp.body or {}
            events.extend(body.get("data") or [])
            page = body.get("pagination") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return events
            params["after"] = page["endCursor"]


@dataclass
class PullerStats:
    """Counters of one tenant's Samsara puller."""

    pages: int = 0
    samples: int = 0
    messages: int = 0
    unknown_vehicles: int = 0
    invalid_points: int = 0
    cursor_resets: int = 0
    safety_events: int = 0


class SamsaraPuller:
    """Follows every configured stats feed of one tenant, and its safety events."""

    UNKNOWN_REPORT_INTERVAL_S = 3600.0
    """An unknown vehicle id gets a dead-letter row at most this often (the counter always)."""

    def __init__(self, tenant: TenantRef, client: SamsaraClient, store: IntegrationStore,
                 publisher: Publisher, feeds: Sequence[Sequence[str]], *,
                 caught_up_wait_s: float = 5.0, safety_poll_s: float = 60.0,
                 safety_lookback_s: float = 3600.0, sleep: Sleep = asyncio.sleep) -> None:
        self.tenant = tenant
        self.client = client
        self.store = store
        self.publisher = publisher
        self.feeds = [list(f) for f in feeds]
        self.caught_up_wait_s = max(caught_up_wait_s, 0.0)
        self.safety_poll_s = safety_poll_s
        self.safety_lookback_s = safety_lookback_s
        self.stats = PullerStats()
        self._sleep = sleep
        self._vehicles: dict[str, VehicleRef] = {}
        self._vehicles_loaded_at = 0.0
        self._unknown_reported: dict[str, float] = {}

    async def _vehicle_map(self, force: bool = False) -> dict[str, VehicleRef]:
        # Re-read the mapping when an unknown id shows up (a vehicle may just have been
        # linked), but at most every 30 s so an unmapped truck does not hammer the database.
        if force and time.monotonic() - self._vehicles_loaded_at < 30:
            force = False
        if force or not self._vehicles_loaded_at:
            self._vehicles = await self.store.vehicles_by_vendor_id(self.tenant.id, "samsara_id")
            self._vehicles_loaded_at = time.monotonic()
        return self._vehicles

    async def _report_unknown(self, samsara_id: str, what: str, payload: Any) -> None:
        self.stats.unknown_vehicles += 1
        now = time.monotonic()
        last = self._unknown_reported.get(samsara_id)
        if last is not None and now - last < self.UNKNOWN_REPORT_INTERVAL_S:
            return
        self._unknown_reported[samsara_id] = now
        log.warning("tenant %s: Samsara vehicle %s is not linked to any vehicle (%s)",
                    self.tenant.slug, samsara_id, what)
        await self.store.dead_letter(
            self.tenant.id, "samsara", "unknown_vehicle", external_id=samsara_id,
            detail=f"Samsara vehicle id {samsara_id} has no vehicles.samsara_id match ({what})",
            payload=payload)

    async def process_page(self, page: FeedPage) -> None:
        """Convert and publish one feed page (before its cursor is saved)."""
        conv = convert_vehicle_stats(page.vehicles)
        by_id = {str(v.get("id")): v for v in page.vehicles}
        vehicles = await self._vehicle_map()
        if any(vid not in vehicles for vid in conv.samples):
            vehicles = await self._vehicle_map(force=True)
        for vid, reason, point in conv.invalid:
            self.stats.invalid_points += 1
            await self.store.dead_letter(self.tenant.id, "samsara", "invalid_sample",
                                         external_id=vid, detail=reason, payload=point)
        for vid, samples in conv.samples.items():
            ref = vehicles.get(vid)
            if ref is None:
                await self._report_unknown(vid, "stats feed", {"id": vid,
                                                               "name": by_id[vid].get("name")})
                continue
            self.stats.messages += await self.publisher.publish(
                self.tenant.slug, ref.code, Source.SAMSARA, samples)
            self.stats.samples += len(samples)

    async def follow_once(self, types: Sequence[str],
                          cursor: str | None) -> tuple[str | None, bool]:
        """Fetch, publish and checkpoint one page; returns (new cursor, more pages ready)."""
        feed = ",".join(types)
        try:
            page = await self.client.stats_feed(types, cursor)
        except CursorExpiredError:
            # The cursor is older than Samsara keeps (30 days): start again from the latest
            # state. Whatever happened in between is not in the feed any more.
            log.warning("tenant %s feed %s: cursor expired, restarting", self.tenant.slug, feed)
            self.stats.cursor_resets += 1
            await self.store.save_cursor(self.tenant.id, feed, None, reset=True)
            return None, True
        await self.process_page(page)
        # Saved only after every message of the page was acknowledged by the broker: a crash
        # before this line re-publishes the page, which the (vehicle, seq) key absorbs.
        new_cursor = page.end_cursor or cursor
        await self.store.save_cursor(self.tenant.id, feed, new_cursor)
        self.stats.pages += 1
        return new_cursor, page.has_next_page

    async def follow_feed(self, types: Sequence[str], *, max_pages: int | None = None) -> None:
        """Follow one feed forever (or for `max_pages` pages, for tests and one-shot runs)."""
        feed = ",".join(types)
        cursor = await self.store.load_cursor(self.tenant.id, feed)
        pages = 0
        while max_pages is None or pages < max_pages:
            cursor, more = await self.follow_once(types, cursor)
            pages += 1
            if not more:
                await self._sleep(self.caught_up_wait_s)

    async def safety_once(self, now: datetime | None = None) -> int:
        """Fetch safety events since the last covered time into video_events; returns new rows."""
        now = now or datetime.now(UTC)
        stored = await self.store.load_cursor(self.tenant.id, SAFETY_FEED)
        if stored:
            # Samsara may finish processing an event minutes after it happened: overlap the
            # windows by 10 minutes, the unique key drops the repeats.
            start = datetime.fromisoformat(stored) - timedelta(minutes=10)
        else:
            start = now - timedelta(seconds=self.safety_lookback_s)
        events = await self.client.safety_events(start, now)
        vehicles = await self._vehicle_map(force=True)
        inserted = 0
        for event in events:
            inserted += await self._store_safety_event(event, vehicles)
        await self.store.save_cursor(self.tenant.id, SAFETY_FEED, now.isoformat())
        self.stats.safety_events += inserted
        return inserted

    async def _store_safety_event(self, event: Mapping[str, Any],
                                  vehicles: Mapping[str, VehicleRef]) -> int:
        ext_id = str(event.get("id") or "")
        vendor_vehicle = str((event.get("vehicle") or {}).get("id") or "")
        try:
            when = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
        except (KeyError, ValueError) as exc:
            await self.store.dead_letter(self.tenant.id, "samsara", "invalid_event",
                                         external_id=ext_id, payload=event,
                                         detail=f"safety event without a valid time: {exc}")
            return 0
        ref = vehicles.get(vendor_vehicle)
        if ref is None:
            # Kept (vehicle_id NULL) so the safety record is not lost, and reported.
            await self._report_unknown(vendor_vehicle, "safety event", event)
        labels = event.get("behaviorLabels") or []
        event_type = str(labels[0].get("label") or labels[0].get("name")) if labels else "unknown"
        loc = event.get("location") or {}
        lat, lon = loc.get("latitude"), loc.get("longitude")
        details = {k: event.get(k) for k in ("behaviorLabels", "coachingState",
                                             "maxAccelerationGForce", "driver", "vehicle",
                                             "downloadInwardVideoUrl")
                   if event.get(k) is not None}
        status: str = await self.store.pool.execute(
            "INSERT INTO video_events (time, tenant_id, vehicle_id, source, external_id,"
            " event_type, severity, video_url, location, details)"
            " VALUES ($1, $2, $3, 'samsara', $4, $5, $6, $7,"
            " CASE WHEN $8::float8 IS NULL THEN NULL"
            " ELSE ST_SetSRID(ST_MakePoint($9::float8, $8::float8), 4326)::geography END,"
            " $10::jsonb) ON CONFLICT DO NOTHING",
            when, self.tenant.id, ref.id if ref else None, ext_id, event_type,
            event.get("coachingState"), event.get("downloadForwardVideoUrl"),
            lat if isinstance(lat, int | float) and isinstance(lon, int | float) else None,
            lon, json.dumps(details, default=str))
        return 1 if status.endswith(" 1") else 0

    async def run_safety(self) -> None:
        """Poll safety events forever."""
        while True:
            try:
                await self.safety_once()
            except Exception as exc:  # noqa: BLE001 - a poll loop must survive and retry
                log.warning("tenant %s: safety events failed: %s", self.tenant.slug, exc)
            await self._sleep(self.safety_poll_s)

    async def run(self) -> None:
        """Run every feed and the safety poller of this tenant until cancelled."""
        async with asyncio.TaskGroup() as group:
            for types in self.feeds:
                group.create_task(self._supervise(types))
            group.create_task(self.run_safety())

    async def _supervise(self, types: Sequence[str]) -> None:
        # A feed that keeps failing (vendor down after all retries) restarts after a pause;
        # it resumes from the stored cursor, so nothing is skipped.
        while True:
            try:
                await self.follow_feed(types)
            except Exception as exc:  # noqa: BLE001 - vendor, broker or database trouble alike
                log.warning("tenant %s feed %s stopped: %s; restarting in 30 s",
                            self.tenant.slug, ",".join(types), exc)
                await self._sleep(30)
