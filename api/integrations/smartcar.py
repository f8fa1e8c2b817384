"""Smartcar API 2.0: Connect consent, encrypted per-vehicle tokens, pulls, commands, webhooks.

The default is API v3 (`api.integrations.smartcar_v3`, setting
``integrations.smartcar_api_version``); this module is the 2.0 path, kept for deployments
that select "2.0" and for vehicles connected under 2.0 before a switch (docs/integrations.md).
Its helpers (webhook HMAC, location cache key, `SmartcarPuller`) serve both versions.

Shapes (2.0): ``GET /vehicles`` -> ``{"vehicles": [ids], "paging": {"count", "offset"}}``;
``/vehicles/{id}/location`` -> ``{"latitude", "longitude"}``; ``/odometer`` ->
``{"distance"}`` (km); ``/fuel`` -> ``{"amountRemaining", "percentRemaining" (0..1), "range"}``;
``/battery`` -> ``{"percentRemaining" (0..1), "range"}``; ``POST /security`` with
``{"action": "LOCK"|"UNLOCK"}`` -> ``{"status": "success", "message"}``. The ``SC-Data-Age``
response header says when the vehicle recorded the value. Tokens: ``POST {auth}/oauth/token``
with HTTP Basic client credentials, grant ``authorization_code`` or ``refresh_token``.
Webhooks carry ``SC-Signature``: hex HMAC-SHA256 of the raw body keyed by the application
management token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import asyncpg
import msgspec

from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.errors import IntegrationConfigError, NotConnectedError, VendorError
from api.integrations.http import VendorHttp
from api.integrations.publisher import Publisher, make_sample, vendor_seq
from api.integrations.smartcar_common import connected_vehicles_sql, location_cache_key, poll_each
from api.integrations.smartcar_v3 import SmartcarAppToken, SmartcarV3Client, SmartcarV3Puller
from core.protocol import Sample, Source

log = logging.getLogger(__name__)

ACCESS_TTL_S = 7200
REFRESH_TTL_S = 60 * 86400


@dataclass(frozen=True)
class TokenPair:
    """An access/refresh pair with its expiry times."""

    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime


def _pair(body: Mapping[str, Any], now: datetime) -> TokenPair:
    try:
        return TokenPair(str(body["access_token"]), str(body["refresh_token"]),
                         now + timedelta(seconds=float(body.get("expires_in", ACCESS_TTL_S))),
                         now + timedelta(seconds=REFRESH_TTL_S))
    except (KeyError, TypeError, ValueError) as exc:
        raise VendorError(f"Smartcar token answer lacks fields: {exc}") from exc


def sign_webhook(management_token: str, body: bytes) -> str:
    """The SC-Signature Smartcar sends with `body`: hex HMAC-SHA256 keyed by the token."""
    return hmac.new(management_token.encode(), body, hashlib.sha256).hexdigest()


def verify_webhook(management_token: str, signature: str | None, body: bytes) -> bool:
    """True when `signature` (the SC-Signature header) matches the raw body."""
    if not signature or not management_token:
        return False
    return hmac.compare_digest(sign_webhook(management_token, body), signature.strip().lower())


def challenge_response(management_token: str, challenge: str) -> str:
    """Answer to Smartcar's callback-URI verification: HMAC-SHA256 of the challenge."""
    return sign_webhook(management_token, challenge.encode())


def _data_age_ms(headers: Mapping[str, str], fallback_ms: int) -> int:
    raw = next((v for k, v in headers.items() if k.lower() == "sc-data-age"), None)
    if not raw:
        return fallback_ms
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return fallback_ms


class SmartcarClient:
    """Smartcar API 2.0 calls; base URLs come from the settings (real service or mock)."""

    def __init__(self, http: VendorHttp, settings: IntegrationsSettings) -> None:
        self._http = http
        self._s = settings
        basic = f"{settings.smartcar_client_id}:{settings.smartcar_client_secret}"
        self._basic = "Basic " + base64.b64encode(basic.encode()).decode()

    @property
    def http(self) -> VendorHttp:
        """The HTTP client (shared with the v3 client built by `SmartcarPuller`)."""
        return self._http

    @property
    def settings(self) -> IntegrationsSettings:
        """The integration settings this client was built with."""
        return self._s

    def authorize_url(self, state: str) -> str:
        """The Connect URL the vehicle owner opens to give consent (one vehicle per consent)."""
        params = {"response_type": "code", "client_id": self._s.smartcar_client_id,
                  "redirect_uri": self._s.smartcar_redirect_uri,
                  "scope": " ".join(self._s.smartcar_scope), "state": state,
                  "approval_prompt": "force", "single_select": "true",
                  "mode": "test" if self._s.smartcar_test_mode else "live"}
        return f"{self._s.smartcar_connect_url.rstrip('/')}/oauth/authorize?{urlencode(params)}"

    async def _token(self, form: dict[str, str]) -> TokenPair:
        now = datetime.now(UTC)
        resp = await self._http.request(
            "POST", f"{self._s.smartcar_auth_url.rstrip('/')}/oauth/token", data=form,
            headers={"Authorization": self._basic})
        return _pair(resp.body or {}, now)

    async def exchange_code(self, code: str) -> TokenPair:
        """Trade the Connect authorization code for a token pair."""
        return await self._token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": self._s.smartcar_redirect_uri})

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair from the refresh token (the old refresh token stops working)."""
        return await self._token({"grant_type": "refresh_token",
                                  "refresh_token": refresh_token})

    def _url(self, path: str) -> str:
        return f"{self._s.smartcar_api_url.rstrip('/')}{path}"

    async def vehicles(self, access_token: str) -> list[str]:
        """Vehicle ids the token may access."""
        resp = await self._http.request("GET", self._url("/vehicles"),
                                        headers={"Authorization": f"Bearer {access_token}"})
        return [str(v) for v in (resp.body or {}).get("vehicles", [])]

    async def read(self, access_token: str, vehicle_id: str,
                   signal: str) -> tuple[dict[str, Any], int]:
        """GET /vehicles/{id}/{signal}; returns the body and the data time (ms)."""
        resp = await self._http.request(
            "GET", self._url(f"/vehicles/{vehicle_id}/{signal}"),
            headers={"Authorization": f"Bearer {access_token}", "SC-Unit-System": "metric"})
        return dict(resp.body or {}), _data_age_ms(resp.headers, int(time.time() * 1000))

    async def security(self, access_token: str, vehicle_id: str, action: str) -> dict[str, Any]:
        """Lock or unlock (action LOCK / UNLOCK)."""
        resp = await self._http.request(
            "POST", self._url(f"/vehicles/{vehicle_id}/security"), json={"action": action},
            headers={"Authorization": f"Bearer {access_token}"})
        return dict(resp.body or {})


class SmartcarTokens:
    """Encrypted token pairs in `smartcar_tokens`; refreshed before expiry, atomically.

    A refresh runs in a transaction holding the row lock (SELECT ... FOR UPDATE): two API
    replicas or the puller and a lock request never refresh the same pair twice, which
    matters because Smartcar invalidates a refresh token once it has been used. The new
    pair replaces the old one in a single UPDATE with the generation incremented.
    """

    def __init__(self, client: SmartcarClient, cipher: TokenCipher, *,
                 refresh_margin_s: float) -> None:
        self.client = client
        self.cipher = cipher
        self.margin = timedelta(seconds=refresh_margin_s)
        self.refreshes = 0

    async def store(self, conn: asyncpg.Connection, tenant_id: UUID, sc_vehicle_id: str,
                    pair: TokenPair, *, vehicle_id: UUID | None,
                    connected_by: UUID | None) -> None:
        """Insert or replace the pair of a vehicle (a new consent)."""
        await conn.execute(
            "INSERT INTO smartcar_tokens (tenant_id, smartcar_vehicle_id, vehicle_id,"
            " access_token_enc, refresh_token_enc, access_expires_at, refresh_expires_at,"
            " connected_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (tenant_id, smartcar_vehicle_id) DO UPDATE SET"
            " vehicle_id = coalesce(EXCLUDED.vehicle_id, smartcar_tokens.vehicle_id),"
            " access_token_enc = EXCLUDED.access_token_enc,"
            " refresh_token_enc = EXCLUDED.refresh_token_enc,"
            " access_expires_at = EXCLUDED.access_expires_at,"
            " refresh_expires_at = EXCLUDED.refresh_expires_at,"
            " generation = smartcar_tokens.generation + 1,"
            " connected_by = EXCLUDED.connected_by",
            tenant_id, sc_vehicle_id, vehicle_id, self.cipher.encrypt(pair.access_token),
            self.cipher.encrypt(pair.refresh_token), pair.access_expires_at,
            pair.refresh_expires_at, connected_by)

    async def access_token(self, conn: asyncpg.Connection, tenant_id: UUID,
                           sc_vehicle_id: str) -> str:
        """A valid access token, refreshing (and storing the new pair) when close to expiry."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT access_token_enc, refresh_token_enc, access_expires_at,"
                " refresh_expires_at FROM smartcar_tokens WHERE tenant_id = $1"
                " AND smartcar_vehicle_id = $2 FOR UPDATE", tenant_id, sc_vehicle_id)
            if row is None:
                raise NotConnectedError(f"Smartcar vehicle {sc_vehicle_id} is not connected")
            now = datetime.now(UTC)
            if row["access_expires_at"] - now > self.margin:
                return self.cipher.decrypt(row["access_token_enc"])
            if row["refresh_expires_at"] <= now:
                raise NotConnectedError(
                    f"Smartcar consent of vehicle {sc_vehicle_id} expired: reconnect")
            pair = await self.client.refresh(self.cipher.decrypt(row["refresh_token_enc"]))
            await conn.execute(
                "UPDATE smartcar_tokens SET access_token_enc = $3, refresh_token_enc = $4,"
                " access_expires_at = $5, refresh_expires_at = $6, generation = generation + 1"
                " WHERE tenant_id = $1 AND smartcar_vehicle_id = $2", tenant_id, sc_vehicle_id,
                self.cipher.encrypt(pair.access_token), self.cipher.encrypt(pair.refresh_token),
                pair.access_expires_at, pair.refresh_expires_at)
            self.refreshes += 1
            return pair.access_token


def new_state() -> str:
    """A random OAuth state (the capability that ties the callback to a tenant)."""
    return secrets.token_urlsafe(32)


# Signal -> (sample fields from the 2.0 body, sequence slot). Unknown fields are ignored.
def _location(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"lat_deg": float(body["latitude"]), "lon_deg": float(body["longitude"])}


def _odometer(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"odometer_km": float(body["distance"])}


def _fuel(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"fuel_pct": float(body["percentRemaining"]) * 100}


def _battery(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schema stores an EV's state of charge as fuel_level_pct (0002_hypertables.sql).
    return {"fuel_pct": float(body["percentRemaining"]) * 100,
            "extra": {"ev_range_km": float(body.get("range") or 0.0)}}


SIGNALS: dict[str, tuple[Any, int]] = {
    "location": (_location, 0),
    "odometer": (_odometer, 2),
    "fuel": (_fuel, 3),
    "battery": (_battery, 5),
}


def to_sample(signal: str, body: Mapping[str, Any], t_ms: int) -> Sample:
    """One wire-contract sample from one Smartcar 2.0 signal body."""
    convert, slot = SIGNALS[signal]
    return make_sample({"seq": vendor_seq(t_ms, slot), "t_ms": t_ms, **convert(body)})


class SmartcarPuller:
    """Pulls location, odometer and fuel/battery of every connected vehicle on a schedule.

    One pass covers vehicles connected under 2.0 (token pairs) and, when the deployment uses
    v3, those connected under v3 (`SmartcarV3Puller`, built here from the same HTTP client),
    so the job wiring needs no change when ``smartcar_api_version`` changes.
    """

    def __init__(self, pool: asyncpg.Pool, tokens: SmartcarTokens, publisher: Publisher,
                 redis: Any, *, poll_s: float, location_cache_s: int,
                 v3: SmartcarV3Puller | None = None) -> None:
        self.pool = pool
        self.tokens = tokens
        self.publisher = publisher
        self.redis = redis
        self.poll_s = poll_s
        self.location_cache_s = location_cache_s
        self.samples = 0
        self.failures = 0
        self.v3 = v3
        if v3 is None and tokens.client.settings.smartcar_api_version == "v3":
            settings = tokens.client.settings
            client = SmartcarV3Client(tokens.client.http, settings,
                                      SmartcarAppToken(tokens.client.http, settings))
            self.v3 = SmartcarV3Puller(pool, client, publisher, redis, poll_s=poll_s,
                                       location_cache_s=location_cache_s)

    async def poll_once(self) -> int:
        """One pass over every connected vehicle (2.0, then v3); returns samples published."""
        published = await self._poll_v2()
        if self.v3 is not None:
            published += await self.v3.poll_once()
        return published

    async def _poll_v2(self) -> int:
        rows = await self.pool.fetch(connected_vehicles_sql("smartcar_tokens"))
        published, failures = await poll_each(rows, self._poll_vehicle, "smartcar")
        self.failures += failures
        return published

    async def _poll_vehicle(self, row: asyncpg.Record) -> int:
        sc_id = row["smartcar_vehicle_id"]
        async with self.pool.acquire() as conn:
            token = await self.tokens.access_token(conn, row["tenant_id"], sc_id)
        samples: list[Sample] = []
        for signal in SIGNALS:
            try:
                body, t_ms = await self.tokens.client.read(token, sc_id, signal)
                samples.append(to_sample(signal, body, t_ms))
            except VendorError as exc:
                if exc.status in (404, 409, 501):
                    # Not supported by this make/model (e.g. /fuel on an EV): skip the signal.
                    continue
                raise
            except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
                log.warning("smartcar %s %s: unusable body: %s", sc_id, signal, exc)
                continue
            if signal == "location":
                await self.redis.set(location_cache_key(row["tenant_id"], sc_id),
                                     json.dumps({**body, "t_ms": t_ms}),
                                     ex=self.location_cache_s)
        if samples:
            await self.publisher.publish(row["slug"], row["code"], Source.SMARTCAR, samples)
            self.samples += len(samples)
        return len(samples)

    async def run(self) -> None:
        """Poll forever every `poll_s` seconds."""
        import asyncio

        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)


def build_puller(pool: asyncpg.Pool, http: VendorHttp, publisher: Publisher, redis: Any,
                 settings: IntegrationsSettings) -> SmartcarPuller | SmartcarV3Puller:
    """The puller the job runner runs: 2.0 and v3 connections with `integrations.token_key`
    (2.0 token pairs are stored encrypted with it); without the key, under v3, the v3
    connections alone (v3 keeps no secret per vehicle), and 2.0 connections are skipped."""
    if settings.token_key:
        tokens = SmartcarTokens(SmartcarClient(http, settings), TokenCipher(settings.token_key),
                                refresh_margin_s=settings.smartcar_refresh_margin_s)
        return SmartcarPuller(pool, tokens, publisher, redis, poll_s=settings.smartcar_poll_s,
                              location_cache_s=settings.smartcar_location_cache_s)
    if settings.smartcar_api_version != "v3":
        raise IntegrationConfigError("the Smartcar 2.0 puller needs integrations.token_key (the "
                          "vehicles' token pairs are stored encrypted with it)")
    log.warning("integrations.token_key is not set: vehicles connected under Smartcar 2.0 are "
                "not polled, those connected under v3 are")
    client = SmartcarV3Client(http, settings, SmartcarAppToken(http, settings))
    return SmartcarV3Puller(pool, client, publisher, redis, poll_s=settings.smartcar_poll_s,
                            location_cache_s=settings.smartcar_location_cache_s)


def webhook_samples(payload: Mapping[str, Any]) -> list[tuple[str, Sample]]:
    """Samples in a 2.0 webhook delivery: ``payload.vehicles[].data[]`` with path and body."""
    out: list[tuple[str, Sample]] = []
    vehicles: Sequence[Mapping[str, Any]] = (payload.get("payload") or {}).get("vehicles") or []
    for vehicle in vehicles:
        vid = str(vehicle.get("vehicleId") or "")
        for item in vehicle.get("data") or []:
            signal = str(item.get("path") or "").strip("/")
            if signal not in SIGNALS or item.get("code", 200) != 200:
                continue
            t_ms = _data_age_ms(item.get("headers") or {}, int(time.time() * 1000))
            try:
                out.append((vid, to_sample(signal, item.get("body") or {}, t_ms)))
            except (KeyError, TypeError, ValueError, msgspec.ValidationError):
                continue
    return out
