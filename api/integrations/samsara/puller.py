"""One tenant's Samsara puller: follows its stats feeds (the cursor saved only after a page is
published) and polls its safety events into `video_events`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from api.integrations.errors import CursorExpiredError
from api.integrations.http import Sleep
from api.integrations.publisher import Publisher
from api.integrations.samsara.client import FeedPage, SamsaraClient
from api.integrations.samsara.signals import convert_vehicle_stats
from api.integrations.store import IntegrationStore, TenantRef, VehicleRef
from core.protocol import Source

log = logging.getLogger(__name__)

SAFETY_FEED = "safety_events"


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
