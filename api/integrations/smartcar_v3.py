"""Smartcar API v3: one application token, ``sc-user-id`` per owner, ``/signals``, ``/commands``.

v3 (announced 22 April 2026) replaces the per-vehicle token pairs of 2.0 with one
application-level token (client-credentials grant at ``{iam}/oauth2/token``, 1 hour, no
refresh token). A request is scoped to a vehicle owner by the ``sc-user-id`` header; the id
arrives as ``user_id`` on the Connect redirect and is stored per vehicle in
``smartcar_v3_connections`` (0007 migration). Shapes used (see docs/integrations.md):

* ``GET /connections?user_id=`` -> ``data[].relationships.{vehicle,user}.data.id``
* ``GET /vehicles/{id}/signals`` -> ``data[].attributes.{code, status.value, body}``,
  ``data[].meta.oemUpdatedAt`` (epoch seconds), paginated by ``links.next``
* ``POST /vehicles/{id}/commands/security/lock`` | ``/unlock`` (no body) ->
  ``data.attributes.status.value``
* webhooks: ``eventType`` ``VERIFY`` (``data.challenge``) or ``VEHICLE_STATE``
  (``data.vehicle.id``, ``data.user.id``, ``data.signals[].{code, body}``), signed with
  ``SC-Signature`` exactly as in 2.0.

HTTP/retry (`VendorHttp`), publishing (`Publisher`, `make_sample`, `vendor_seq`), the
location cache key and webhook HMAC helpers are shared with the 2.0 module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from api.integrations.config import IntegrationsSettings
from api.integrations.errors import VendorError
from api.integrations.http import VendorHttp
from api.integrations.publisher import Publisher, make_sample, vendor_seq
from api.integrations.smartcar_common import connected_vehicles_sql, location_cache_key, poll_each
from core.protocol import Sample, Source

log = logging.getLogger(__name__)

APP_TOKEN_TTL_S = 3600.0
"""Lifetime of an application token when the answer omits ``expires_in`` (Smartcar: 1 h)."""
MAX_SIGNAL_PAGES = 20
"""Guard against a ``links.next`` loop: no vehicle has this many pages of signals."""
_MILES_KM = 1.609344


class SmartcarAppToken:
    """The cached application token, re-requested `margin_s` before it expires.

    Each API replica holds its own token: client-credentials tokens are independent of each
    other (nothing is invalidated when another replica asks for one), so no database row or
    lock is needed, unlike the single-use 2.0 refresh tokens. Concurrent callers in one
    process share one request through the lock.
    """

    def __init__(self, http: VendorHttp, settings: IntegrationsSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._s = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.requests = 0

    def invalidate(self) -> None:
        """Forget the cached token (Smartcar rejected it before its expiry)."""
        self._token = None

    async def get(self) -> str:
        """A token valid for more than the margin, requesting a new one when needed."""
        async with self._lock:
            if self._token is not None and \
                    self._expires_at - self._clock() > self._s.smartcar_app_token_margin_s:
                return self._token
            started = self._clock()
            resp = await self._http.request(
                "POST", f"{self._s.smartcar_iam_url.rstrip('/')}/oauth2/token",
                data={"grant_type": "client_credentials",
                      "client_id": self._s.smartcar_client_id,
                      "client_secret": self._s.smartcar_client_secret})
            body = resp.body or {}
            try:
                token = str(body["access_token"])
                ttl_s = float(body.get("expires_in", APP_TOKEN_TTL_S))
            except (KeyError, TypeError, ValueError) as exc:
                raise VendorError(f"Smartcar token answer lacks fields: {exc}") from exc
            # Expiry counted from before the request: never later than Smartcar's own.
            self._token, self._expires_at = token, started + ttl_s
            self.requests += 1
            return token


@dataclass(frozen=True)
class Connection:
    """One v3 connection: a Smartcar vehicle and the owner (user) who granted it."""

    vehicle_id: str
    user_id: str


class SmartcarV3Client:
    """Smartcar API v3 calls; base URLs come from the settings (real service or mock)."""

    def __init__(self, http: VendorHttp, settings: IntegrationsSettings,
                 app_token: SmartcarAppToken) -> None:
        self._http = http
        self._s = settings
        self.app_token = app_token

    def _url(self, path: str) -> str:
        return f"{self._s.smartcar_v3_api_url.rstrip('/')}{path}"

    async def _call(self, method: str, path: str, *, user_id: str | None = None,
                    params: Mapping[str, str] | None = None) -> dict[str, Any]:
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {await self.app_token.get()}"}
            if user_id is not None:
                headers["sc-user-id"] = user_id
            try:
                resp = await self._http.request(method, self._url(path), params=params,
                                                headers=headers)
            except VendorError as exc:
                # A token revoked early (credentials rotated): fetch a new one, once.
                if exc.status == 401 and attempt == 0:
                    self.app_token.invalidate()
                    continue
                raise
            return dict(resp.body or {})
        raise AssertionError("unreachable")  # pragma: no cover

    async def connections(self, user_id: str) -> list[Connection]:
        """Vehicles the owner `user_id` has connected to this application."""
        body = await self._call("GET", "/connections", params={"user_id": user_id})
        out: list[Connection] = []
        for item in body.get("data") or []:
            rel = item.get("relationships") or {}
            vid = ((rel.get("vehicle") or {}).get("data") or {}).get("id")
            uid = ((rel.get("user") or {}).get("data") or {}).get("id") or user_id
            if vid:
                out.append(Connection(str(vid), str(uid)))
        return out

    async def signals(self, user_id: str, vehicle_id: str) -> list[dict[str, Any]]:
        """Every signal of a vehicle (all pages), as the JSON:API ``data`` items."""
        items: list[dict[str, Any]] = []
        page = 1
        for _ in range(MAX_SIGNAL_PAGES):
            body = await self._call("GET", f"/vehicles/{vehicle_id}/signals", user_id=user_id,
                                    params={"page": str(page)} if page > 1 else None)
            items.extend(body.get("data") or [])
            if not (body.get("links") or {}).get("next"):
                break
            page += 1
        return items

    async def security(self, user_id: str, vehicle_id: str, action: str) -> dict[str, Any]:
        """Lock or unlock (action LOCK / UNLOCK) with the v3 security command (no body)."""
        if action not in ("LOCK", "UNLOCK"):
            raise ValueError(action)
        body = await self._call(
            "POST", f"/vehicles/{vehicle_id}/commands/security/{action.lower()}",
            user_id=user_id)
        attrs = (body.get("data") or {}).get("attributes") or {}
        status = str((attrs.get("status") or {}).get("value") or "")
        return {"status": status.lower() or "success", "execution_id":
                (body.get("data") or {}).get("id"), "command": attrs.get("commandType")}


# Signal code -> (sample fields from the signal body, sequence slot). The slots are those of
# the 2.0 table (smartcar.SIGNALS), so both versions give a vehicle the same sequence numbers
# for the same kind of reading. Codes not listed are ignored.
def _distance_km(body: Mapping[str, Any]) -> float:
    value = float(body["value"])
    return value * _MILES_KM if str(body.get("unit", "")).lower() in ("miles", "mi") else value


def _location(body: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"lat_deg": float(body["latitude"]),
                              "lon_deg": float(body["longitude"])}
    heading = body.get("heading")
    # An out-of-range heading must not cost the position: it is dropped on its own.
    if isinstance(heading, int | float) and 0 <= heading <= 360:
        fields["heading_deg"] = float(heading)
    return fields


def _odometer(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"odometer_km": _distance_km(body)}


def _fuel(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"fuel_pct": float(body["value"])}


def _soc(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schema stores an EV's state of charge as fuel_level_pct (0002_hypertables.sql).
    return {"fuel_pct": float(body["value"])}


V3_SIGNALS: dict[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], int]] = {
    "location-preciselocation": (_location, 0),
    "odometer-traveleddistance": (_odometer, 2),
    "internalcombustionengine-fuellevel": (_fuel, 3),
    "tractionbattery-stateofcharge": (_soc, 5),
}
LOCATION_CODE = "location-preciselocation"


def _epoch_ms(value: Any, fallback_ms: int) -> int:
    """Epoch seconds or milliseconds (both appear in Smartcar's v3 examples) -> ms."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return fallback_ms
    return int(number if number > 1e11 else number * 1000)


def signal_sample(code: str, body: Mapping[str, Any], t_ms: int) -> Sample:
    """One wire-contract sample from one v3 signal body (raises on unusable bodies)."""
    convert, slot = V3_SIGNALS[code]
    return make_sample({"seq": vendor_seq(t_ms, slot), "t_ms": t_ms, **convert(body)})


def signals_to_samples(items: Iterable[Mapping[str, Any]], *, default_ms: int
                       ) -> tuple[list[Sample], dict[str, Any] | None]:
    """Samples from ``/signals`` items, and the location (for the cache) if present.

    An item whose ``status.value`` is not SUCCESS (e.g. a signal the make does not support)
    or whose body fails the wire contract's range checks is skipped with a log line.
    """
    samples: list[Sample] = []
    location: dict[str, Any] | None = None
    for item in items:
        attrs = item.get("attributes") or item
        code = str(attrs.get("code") or "")
        if code not in V3_SIGNALS:
            continue
        status = str((attrs.get("status") or {}).get("value") or "SUCCESS")
        if status != "SUCCESS":
            continue
        meta = item.get("meta") or {}
        t_ms = _epoch_ms(meta.get("oemUpdatedAt") or meta.get("retrievedAt"), default_ms)
        body = attrs.get("body") or {}
        try:
            samples.append(signal_sample(code, body, t_ms))
        except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
            log.warning("smartcar v3 %s: unusable body: %s", code, exc)
            continue
        if code == LOCATION_CODE:
            location = {"latitude": float(body["latitude"]),
                        "longitude": float(body["longitude"]), "t_ms": t_ms}
    return samples, location


def webhook_v3_samples(payload: Mapping[str, Any]) -> list[tuple[str, Sample]]:
    """Samples in a v3 ``VEHICLE_STATE`` delivery (one vehicle per delivery)."""
    if str(payload.get("eventType") or "").upper() != "VEHICLE_STATE":
        return []
    data = payload.get("data") or {}
    vid = str((data.get("vehicle") or {}).get("id") or "")
    if not vid:
        return []
    delivered = _epoch_ms((payload.get("meta") or {}).get("deliveredAt"),
                          int(time.time() * 1000))
    samples, _ = signals_to_samples(data.get("signals") or [], default_ms=delivered)
    return [(vid, s) for s in samples]


class SmartcarV3Connections:
    """The owner (``sc-user-id``) of every vehicle connected through v3, per tenant.

    The user id is not a secret on its own (every request also needs the application token),
    so it is stored in clear, unlike the 2.0 token pairs.
    """

    async def store(self, conn: asyncpg.Connection, tenant_id: UUID, connection: Connection,
                    *, vehicle_id: UUID | None, connected_by: UUID | None) -> None:
        """Insert or replace a connection (a new consent)."""
        await conn.execute(
            "INSERT INTO smartcar_v3_connections (tenant_id, smartcar_vehicle_id,"
            " smartcar_user_id, vehicle_id, connected_by) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (tenant_id, smartcar_vehicle_id) DO UPDATE SET"
            " smartcar_user_id = EXCLUDED.smartcar_user_id,"
            " vehicle_id = coalesce(EXCLUDED.vehicle_id, smartcar_v3_connections.vehicle_id),"
            " connected_by = EXCLUDED.connected_by",
            tenant_id, connection.vehicle_id, connection.user_id, vehicle_id, connected_by)

    async def user_id(self, conn: asyncpg.Connection, tenant_id: UUID,
                      sc_vehicle_id: str) -> str | None:
        """The owner's Smartcar user id, or None when the vehicle has no v3 connection."""
        value: str | None = await conn.fetchval(
            "SELECT smartcar_user_id FROM smartcar_v3_connections WHERE tenant_id = $1"
            " AND smartcar_vehicle_id = $2", tenant_id, sc_vehicle_id)
        return value


class SmartcarV3Puller:
    """Pulls the signals of every v3-connected vehicle on a schedule and publishes them."""

    def __init__(self, pool: asyncpg.Pool, client: SmartcarV3Client, publisher: Publisher,
                 redis: Any, *, poll_s: float, location_cache_s: int) -> None:
        self.pool = pool
        self.client = client
        self.publisher = publisher
        self.redis = redis
        self.poll_s = poll_s
        self.location_cache_s = location_cache_s
        self.samples = 0
        self.failures = 0

    async def poll_once(self) -> int:
        """One pass over every v3-connected active vehicle; returns samples published."""
        rows = await self.pool.fetch(
            connected_vehicles_sql("smartcar_v3_connections", "smartcar_user_id"))
        published, failures = await poll_each(rows, self._poll_vehicle, "smartcar v3")
        self.failures += failures
        return published

    async def _poll_vehicle(self, row: asyncpg.Record) -> int:
        sc_id = row["smartcar_vehicle_id"]
        items = await self.client.signals(row["smartcar_user_id"], sc_id)
        samples, location = signals_to_samples(items, default_ms=int(time.time() * 1000))
        if location is not None:
            await self.redis.set(location_cache_key(row["tenant_id"], sc_id),
                                 json.dumps(location), ex=self.location_cache_s)
        if samples:
            await self.publisher.publish(row["slug"], row["code"], Source.SMARTCAR, samples)
            self.samples += len(samples)
        return len(samples)

    async def run(self) -> None:
        """Poll forever every `poll_s` seconds."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)
