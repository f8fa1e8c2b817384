"""Calls to the Smartcar APIs, 2.0 and v3 (base URLs from the settings: real service or mock).

API 2.0 (`SmartcarClient`): a Connect consent gives a per-vehicle access/refresh token pair.
Shapes (2.0): ``GET /vehicles`` -> ``{"vehicles": [ids], "paging": {"count", "offset"}}``;
``/vehicles/{id}/location`` -> ``{"latitude", "longitude"}``; ``/odometer`` ->
``{"distance"}`` (km); ``/fuel`` -> ``{"amountRemaining", "percentRemaining" (0..1), "range"}``;
``/battery`` -> ``{"percentRemaining" (0..1), "range"}``; ``POST /security`` with
``{"action": "LOCK"|"UNLOCK"}`` -> ``{"status": "success", "message"}``. The ``SC-Data-Age``
response header says when the vehicle recorded the value. Tokens: ``POST {auth}/oauth/token``
with HTTP Basic client credentials, grant ``authorization_code`` or ``refresh_token``.
Webhooks carry ``SC-Signature``: hex HMAC-SHA256 of the raw body keyed by the application
management token.

API v3 (`SmartcarAppToken`, `SmartcarV3Client`): one application token, ``sc-user-id`` per
owner, ``/signals``, ``/commands``. v3 (announced 22 April 2026) replaces the per-vehicle token
pairs of 2.0 with one application-level token (client-credentials grant at
``{iam}/oauth2/token``, 1 hour, no refresh token). A request is scoped to a vehicle owner by
the ``sc-user-id`` header; the id arrives as ``user_id`` on the Connect redirect and is stored
per vehicle in ``smartcar_v3_connections`` (0007 migration). Shapes used (see docs/integrations.md):

* ``GET /connections?user_id=`` -> ``data[].relationships.{vehicle,user}.data.id``
* ``GET /vehicles/{id}/signals`` -> ``data[].attributes.{code, status.value, body}``,
  ``data[].meta.oemUpdatedAt`` (epoch seconds), paginated by ``links.next``
* ``POST /vehicles/{id}/commands/security/lock`` | ``/unlock`` (no body) ->
  ``data.attributes.status.value``
* webhooks: ``eventType`` ``VERIFY`` (``data.challenge``) or ``VEHICLE_STATE``
  (``data.vehicle.id``, ``data.user.id``, ``data.signals[].{code, body}``), signed with
  ``SC-Signature`` exactly as in 2.0.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from api.integrations.config import IntegrationsSettings
from api.integrations.errors import VendorError
from api.integrations.http import VendorHttp

ACCESS_TTL_S = 7200
REFRESH_TTL_S = 60 * 86400
APP_TOKEN_TTL_S = 3600.0
"""Lifetime of an application token when the answer omits ``expires_in`` (Smartcar: 1 h)."""
MAX_SIGNAL_PAGES = 20
"""Guard against a ``links.next`` loop: no vehicle has this many pages of signals."""


# API 2.0: a token pair per vehicle.
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


def data_age_ms(headers: Mapping[str, str], fallback_ms: int) -> int:
    """When the vehicle recorded a value (ms), from the ``SC-Data-Age`` header of a 2.0
    answer or webhook item; `fallback_ms` when the header is missing or unreadable."""
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
        return dict(resp.body or {}), data_age_ms(resp.headers, int(time.time() * 1000))

    async def security(self, access_token: str, vehicle_id: str, action: str) -> dict[str, Any]:
        """Lock or unlock (action LOCK / UNLOCK)."""
        resp = await self._http.request(
            "POST", self._url(f"/vehicles/{vehicle_id}/security"), json={"action": action},
            headers={"Authorization": f"Bearer {access_token}"})
        return dict(resp.body or {})


# API v3: one application token; requests name the vehicle owner.
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
