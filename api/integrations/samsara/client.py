"""Calls to the Samsara REST API (or the mock, by base URL): stats feeds and safety events.

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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.integrations.errors import CursorExpiredError, IntegrationError, VendorError
from api.integrations.http import VendorHttp

MAX_TYPES_PER_FEED = 3


@dataclass(frozen=True)
class FeedPage:
    """One page of a stats feed."""

    vehicles: list[dict[str, Any]]
    end_cursor: str | None
    has_next_page: bool


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
