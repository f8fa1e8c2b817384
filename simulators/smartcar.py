"""`fleet sim smartcar`: a mock of Smartcar Connect, auth and the vehicle API 2.0 and v3.

One server plays three Smartcar hosts (point every base-URL setting at it):
``GET /oauth/authorize`` (Connect: approves at once and redirects to ``redirect_uri`` with
``code`` and ``state``, or ``error=access_denied`` when ``deny=1``), ``POST /oauth/token``
(HTTP Basic client auth; ``authorization_code`` codes are single-use and live 10 minutes;
``refresh_token`` rotates the pair, the old refresh token stops working), and under
``/v2.0``: ``/vehicles``, ``/vehicles/{id}``, ``/location``, ``/odometer``, ``/fuel``,
``/battery`` (with ``SC-Data-Age``) and ``POST /security``. Access tokens expire (2 h by
default, shorter in tests), 429 answers carry ``Retry-After``, and random 5xx are seeded.
`MockSmartcar.webhook` builds a signed webhook delivery (``SC-Signature``).

API v3 (``api_version="v3"``): Connect redirects with ``user_id`` (one Smartcar user per
consenting owner) instead of a code; ``POST /oauth2/token`` (the IAM host) issues one
application token for ``grant_type=client_credentials`` (``expires_in`` 3600 by default, no
refresh token); under ``/v3`` every call needs that token, and vehicle calls the
``sc-user-id`` of the vehicle's owner: ``GET /connections?user_id=`` (JSON:API list),
``GET /vehicles/{id}/signals`` (``data[].attributes.{code, status, body}``,
``meta.oemUpdatedAt`` in epoch seconds) and ``POST /vehicles/{id}/commands/security/lock``
or ``/unlock`` (no body; a ``command-execution`` answer). `MockSmartcar.webhook_v3` builds a
signed ``VEHICLE_STATE`` delivery. The same 429/5xx injection applies to both versions.

`fleet sim` imports this module to register its options, on a gateway too: aiohttp, a server
library, is imported only when the mock serves.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from core.stopping import StopSignals
from simulators.samsara import Fault, _make_truck, _Truck

if TYPE_CHECKING:
    from aiohttp import web


@dataclass
class _Grant:
    vehicle_id: str
    expires_at: float


@dataclass
class MockSmartcar:
    """State of the mock: the application, vehicles, codes and live tokens."""

    client_id: str = "mock-client-id"
    client_secret: str = "mock-client-secret"  # noqa: S105 - the mock's own test secret
    management_token: str = "mock-management-token"  # noqa: S105
    vehicles: int = 2
    seed: int = 7
    access_ttl_s: float = 7200.0
    api_version: str = "2.0"
    """Which answer Connect gives: a ``code`` (2.0) or a ``user_id`` (v3)."""
    app_token_ttl_s: float = 3600.0
    """Lifetime of a v3 application token (Smartcar: 1 hour)."""
    error_rate: float = 0.0
    clock: Callable[[], float] = time.time
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - simulation
        self.fleet: dict[str, _Truck] = {}
        self.locked: dict[str, bool] = {}
        for i in range(self.vehicles):
            truck = _make_truck(i, self.seed, 48.137, 11.575)
            vid = f"sc{self._rng.getrandbits(64):016x}"
            truck.id = vid
            self.fleet[vid] = truck
            self.locked[vid] = True
        self._next_vehicle = 0
        self.codes: dict[str, _Grant] = {}
        self.access: dict[str, _Grant] = {}
        self.refresh: dict[str, _Grant] = {}
        self.used_refresh: set[str] = set()
        self.tokens_issued = 0
        self.owners: dict[str, str] = {}
        """v3: Smartcar vehicle id -> the user id of the owner who connected it."""
        self.app_tokens: dict[str, float] = {}
        """v3: application token -> expiry (clock seconds)."""
        self.app_tokens_issued = 0

    @property
    def vehicle_ids(self) -> list[str]:
        """Smartcar ids of the mock's vehicles, in consent order."""
        return list(self.fleet)

    def advance(self, dt_s: float) -> None:
        """Move every vehicle."""
        for truck in self.fleet.values():
            truck.step(dt_s)

    # -- OAuth --------------------------------------------------------------------------------
    def authorize(self, query: dict[str, str]) -> str:
        """Where Connect sends the browser back: redirect_uri with a code (or an error)."""
        redirect = query.get("redirect_uri", "")
        state = query.get("state", "")
        if query.get("client_id") != self.client_id:
            return f"{redirect}?{urlencode({'error': 'invalid_client', 'state': state})}"
        if query.get("deny") == "1":
            return f"{redirect}?" + urlencode({
                "error": "access_denied",
                "error_description": "User denied access to application.", "state": state})
        vid = self.vehicle_ids[self._next_vehicle % len(self.fleet)]
        self._next_vehicle += 1
        if self.api_version == "v3":
            user_id = self.owners.setdefault(vid, str(uuid.uuid4()))
            return f"{redirect}?{urlencode({'user_id': user_id, 'state': state})}"
        code = secrets.token_urlsafe(16)
        self.codes[code] = _Grant(vid, self.clock() + 600)
        return f"{redirect}?{urlencode({'code': code, 'state': state})}"

    def _issue(self, vehicle_id: str) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = self.clock()
        self.access[access] = _Grant(vehicle_id, now + self.access_ttl_s)
        self.refresh[refresh] = _Grant(vehicle_id, now + 60 * 86400)
        self.tokens_issued += 1
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": int(self.access_ttl_s), "refresh_token": refresh}

    def token(self, auth: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST /oauth/token."""
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if auth != f"Basic {expected}":
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        grant = form.get("grant_type")
        now = self.clock()
        if grant == "authorization_code":
            g = self.codes.pop(form.get("code", ""), None)
            if g is None or g.expires_at < now:
                return 400, {"error": "invalid_grant", "error_description": "Invalid code"}
            return 200, self._issue(g.vehicle_id)
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            g = self.refresh.pop(old, None)
            if g is None or g.expires_at < now:
                return 400, {"error": "invalid_grant",
                             "error_description": "Invalid or already used refresh token"}
            self.used_refresh.add(old)
            return 200, self._issue(g.vehicle_id)
        return 400, {"error": "unsupported_grant_type", "error_description": str(grant)}

    # -- vehicle API ----------------------------------------------------------------------------
    def _auth_vehicle(self, auth: str | None) -> str | None:
        token = (auth or "").removeprefix("Bearer ")
        g = self.access.get(token)
        if g is None or g.expires_at < self.clock():
            return None
        return g.vehicle_id

    def _gate(self) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if self.faults:
            f = self.faults.pop(0)
            headers = {"Retry-After": f.retry_after} if f.retry_after else {}
            body = f.body or {"type": "RATE_LIMIT" if f.status == 429 else "SERVER",
                              "code": None, "description": "injected"}
            return f.status, body, headers
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return 500, {"type": "SERVER", "code": "INTERNAL",
                         "description": "Internal server error"}, {}
        return None

    def vehicle_call(self, method: str, path: str,  # noqa: PLR0911 - one per documented answer
                     auth: str | None,
                     body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Everything under /v2.0."""
        gated = self._gate()
        if gated is not None:
            return gated
        allowed = self._auth_vehicle(auth)
        if allowed is None:
            return 401, {"type": "AUTHENTICATION", "code": None,
                         "description": "The provided access token is invalid or expired"}, {}
        parts = [p for p in path.split("/") if p]
        if parts == ["vehicles"]:
            return 200, {"vehicles": [allowed], "paging": {"count": 1, "offset": 0}}, {}
        if len(parts) < 2 or parts[0] != "vehicles" or parts[1] != allowed:
            return 404, {"type": "RESOURCE_NOT_FOUND", "code": "PATH",
                         "description": "unknown vehicle or path"}, {}
        truck = self.fleet[allowed]
        headers = {"SC-Data-Age": datetime.fromtimestamp(self.clock(), UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"), "SC-Unit-System": "metric"}
        what = parts[2] if len(parts) > 2 else ""
        if method == "POST" and what == "security":
            action = str(body.get("action", ""))
            if action not in ("LOCK", "UNLOCK"):
                return 400, {"type": "VALIDATION", "code": "PARAMETER",
                             "description": "action must be LOCK or UNLOCK"}, {}
            self.locked[allowed] = action == "LOCK"
            self.commands.append((allowed, action))
            return 200, {"status": "success",
                         "message": "Successfully sent request to vehicle"}, {}
        answers: dict[str, dict[str, Any]] = {
            "": {"id": allowed, "make": "TESLA", "model": "Model 3", "year": 2024},
            "location": {"latitude": round(truck.lat, 7), "longitude": round(truck.lon, 7)},
            "odometer": {"distance": round(truck.odometer_m / 1000, 1)},
            "fuel": {"amountRemaining": round(truck.fuel_pct * 0.6, 1),
                     "percentRemaining": round(truck.fuel_pct / 100, 3),
                     "range": round(truck.fuel_pct * 6, 1)},
            "battery": {"percentRemaining": round(truck.fuel_pct / 100, 3),
                        "range": round(truck.fuel_pct * 4, 1)},
        }
        if method != "GET" or what not in answers:
            return 404, {"type": "RESOURCE_NOT_FOUND", "code": "PATH",
                         "description": f"{method} {path}"}, {}
        return 200, answers[what], headers

    # -- API v3 ----------------------------------------------------------------------------------
    def app_token(self, auth: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST /oauth2/token: client credentials in the form (or HTTP Basic) -> app token."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if auth and auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "invalid_request", "error_description": "grant_type"}
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        token = secrets.token_urlsafe(24)
        self.app_tokens[token] = self.clock() + self.app_token_ttl_s
        self.app_tokens_issued += 1
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": int(self.app_token_ttl_s)}

    def _signals(self, vid: str) -> list[dict[str, Any]]:
        truck = self.fleet[vid]
        now_s = int(self.clock())
        values: list[tuple[str, str, str, dict[str, Any]]] = [
            ("location-preciselocation", "PreciseLocation", "Location",
             {"latitude": round(truck.lat, 7), "longitude": round(truck.lon, 7),
              "heading": 90, "direction": "E", "locationType": "CURRENT"}),
            ("odometer-traveleddistance", "TraveledDistance", "Odometer",
             {"unit": "kilometers", "value": round(truck.odometer_m / 1000, 1)}),
            ("internalcombustionengine-fuellevel", "FuelLevel", "InternalCombustionEngine",
             {"unit": "percent", "value": round(truck.fuel_pct, 1)}),
            ("tractionbattery-stateofcharge", "StateOfCharge", "TractionBattery",
             {"unit": "percent", "value": round(truck.fuel_pct, 1)}),
        ]
        return [{"id": code, "type": "signal",
                 "attributes": {"code": code, "name": name, "group": group,
                                "status": {"value": "SUCCESS"}, "body": body},
                 "meta": {"retrievedAt": now_s, "oemUpdatedAt": now_s},
                 "links": {"self": f"/vehicles/{vid}/signals/{code}"}}
                for code, name, group, body in values]

    def v3_call(self, method: str, path: str,  # noqa: PLR0911 - one per documented answer
                query: dict[str, str], auth: str | None,
                user_id: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Everything under /v3 (vehicle API host)."""
        gated = self._gate()
        if gated is not None:
            return gated
        expires = self.app_tokens.get((auth or "").removeprefix("Bearer "))
        if expires is None or expires < self.clock():
            return 401, {"type": "AUTHENTICATION", "code": None,
                         "description": "The provided access token is invalid or expired"}, {}
        parts = [p for p in path.split("/") if p]
        if parts == ["connections"]:
            wanted = query.get("user_id")
            rows = [{"id": f"conn-{vid}", "type": "connection",
                     "attributes": {"permissions": ["read_location", "read_odometer"],
                                    "vehicle": {"make": "TESLA", "model": "Model 3",
                                                "year": 2024, "mode": "live"}},
                     "relationships": {"vehicle": {"data": {"id": vid, "type": "vehicle"}},
                                       "user": {"data": {"id": uid, "type": "user"}}}}
                    for vid, uid in self.owners.items() if wanted in (None, uid)]
            return 200, {"data": rows, "meta": {"page": 1, "pageSize": 100,
                                                "totalCount": len(rows)},
                         "links": {"self": "/connections", "next": None}}, {}
        if len(parts) < 3 or parts[0] != "vehicles" or parts[1] not in self.fleet:
            return 404, {"type": "RESOURCE_NOT_FOUND", "code": "PATH",
                         "description": f"{method} {path}"}, {}
        vid = parts[1]
        if not user_id or self.owners.get(vid) != user_id:
            return 403, {"type": "PERMISSION", "code": None,
                         "description": "sc-user-id has no connection to this vehicle"}, {}
        if method == "GET" and parts[2:] == ["signals"]:
            signals = self._signals(vid)
            return 200, {"data": signals,
                         "meta": {"page": 1, "pageSize": 100, "totalCount": len(signals)},
                         "links": {"self": f"/vehicles/{vid}/signals", "next": None}}, {}
        if method == "POST" and parts[2:4] == ["commands", "security"] and len(parts) == 5 \
                and parts[4] in ("lock", "unlock"):
            action = parts[4].upper()
            self.locked[vid] = action == "LOCK"
            self.commands.append((vid, action))
            now = datetime.fromtimestamp(self.clock(), UTC).isoformat().replace("+00:00", "Z")
            return 200, {"data": {"id": f"exec_{secrets.token_hex(6)}",
                                  "type": "command-execution",
                                  "attributes": {"commandType": f"security-{parts[4]}",
                                                 "status": {"value": "SUCCESS"},
                                                 "executionMode": "sync"},
                                  "meta": {"executedAt": now, "completedAt": now}}}, {}
        return 404, {"type": "RESOURCE_NOT_FOUND", "code": "PATH",
                     "description": f"{method} {path}"}, {}

    def webhook_v3(self, vehicle_id: str) -> tuple[bytes, dict[str, str]]:
        """A signed v3 ``VEHICLE_STATE`` delivery for one vehicle: (raw body, headers)."""
        signals = [{"code": s["attributes"]["code"], "name": s["attributes"]["name"],
                    "group": s["attributes"]["group"], "body": s["attributes"]["body"]}
                   for s in self._signals(vehicle_id)[:2]]
        payload = {
            "eventId": str(uuid.uuid4()), "eventType": "VEHICLE_STATE",
            "data": {"vehicle": {"id": vehicle_id, "make": "TESLA", "model": "Model 3",
                                 "year": 2024},
                     "signals": signals,
                     "user": {"id": self.owners.get(vehicle_id, str(uuid.uuid4()))}},
            "triggers": [{"type": "SIGNAL_UPDATED",
                          "signal": {"code": "odometer-traveleddistance"}}],
            "meta": {"version": "4.0", "deliveryId": str(uuid.uuid4()),
                     "deliveredAt": int(self.clock() * 1000),
                     "webhookId": "5a8e5e38-1e12-4011-a36d-56f120053f9e",
                     "webhookName": "fleet", "signalCount": len(signals), "mode": "TEST"},
        }
        raw = json.dumps(payload).encode()
        sig = hmac.new(self.management_token.encode(), raw, hashlib.sha256).hexdigest()
        return raw, {"SC-Signature": sig, "Content-Type": "application/json"}

    def webhook(self, vehicle_id: str) -> tuple[bytes, dict[str, str]]:
        """A signed 2.0 schedule delivery for one vehicle: (raw body, headers)."""
        truck = self.fleet[vehicle_id]
        age = datetime.fromtimestamp(self.clock(), UTC).isoformat().replace("+00:00", "Z")
        payload = {
            "version": "2.0", "webhookId": "5a8e5e38-1e12-4011-a36d-56f120053f9e",
            "eventName": "schedule", "mode": "test",
            "payload": {"vehicles": [{"vehicleId": vehicle_id, "requestId": secrets.token_hex(8),
                                      "data": [
                {"path": "/odometer", "code": 200, "body": {"distance": truck.odometer_m / 1000},
                 "headers": {"sc-data-age": age}},
                {"path": "/location", "code": 200,
                 "body": {"latitude": truck.lat, "longitude": truck.lon},
                 "headers": {"sc-data-age": age}}]}]},
        }
        raw = json.dumps(payload).encode()
        sig = hmac.new(self.management_token.encode(), raw, hashlib.sha256).hexdigest()
        return raw, {"SC-Signature": sig, "Content-Type": "application/json"}

    # -- aiohttp ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application serving this mock."""
        from aiohttp import web  # noqa: PLC0415 - server library, only when serving

        async def authorize(request: web.Request) -> web.Response:
            self.requests.append(f"GET {request.path_qs}")
            raise web.HTTPFound(self.authorize(dict(request.query)))

        async def token(request: web.Request) -> web.Response:
            self.requests.append("POST /oauth/token")
            form = {k: str(v) for k, v in (await request.post()).items()}
            status, body = self.token(request.headers.get("Authorization"), form)
            return web.json_response(body, status=status)

        async def api(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path}")
            body: dict[str, Any] = {}
            if request.method == "POST" and request.can_read_body:
                body = await request.json()
            status, answer, headers = self.vehicle_call(
                request.method, request.match_info["tail"], request.headers.get("Authorization"),
                body)
            return web.json_response(answer, status=status, headers=headers)

        async def app_token(request: web.Request) -> web.Response:
            self.requests.append("POST /oauth2/token")
            form = {k: str(v) for k, v in (await request.post()).items()}
            status, body = self.app_token(request.headers.get("Authorization"), form)
            return web.json_response(body, status=status)

        async def v3(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path}")
            status, answer, headers = self.v3_call(
                request.method, request.match_info["tail"], dict(request.query),
                request.headers.get("Authorization"), request.headers.get("sc-user-id"))
            return web.json_response(answer, status=status, headers=headers)

        app = web.Application()
        app.router.add_post("/oauth2/token", app_token)
        app.router.add_route("*", "/v3/{tail:.*}", v3)
        app.router.add_get("/oauth/authorize", authorize)
        app.router.add_post("/oauth/token", token)
        app.router.add_route("*", "/v2.0/{tail:.*}", api)
        return app


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet sim smartcar`."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--client-id", default="mock-client-id")
    parser.add_argument("--client-secret", default="mock-client-secret")
    parser.add_argument("--management-token", default="mock-management-token")
    parser.add_argument("--vehicles", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--access-ttl-s", type=float, default=7200.0)
    parser.add_argument("--api-version", choices=("v3", "2.0"), default="v3",
                        help="what Connect answers with: a user_id (v3) or a code (2.0)")
    parser.add_argument("--app-token-ttl-s", type=float, default=3600.0)
    parser.add_argument("--error-rate", type=float, default=0.02)
    parser.add_argument("--tick-s", type=float, default=5.0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the mock until interrupted; vehicles move every --tick-s seconds."""
    from aiohttp import web  # noqa: PLC0415 - server library, only when serving

    mock = MockSmartcar(client_id=args.client_id, client_secret=args.client_secret,
                        management_token=args.management_token, vehicles=args.vehicles,
                        seed=args.seed, access_ttl_s=args.access_ttl_s,
                        error_rate=args.error_rate, api_version=args.api_version,
                        app_token_ttl_s=args.app_token_ttl_s)
    app = mock.app()

    async def ticker(_app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(args.tick_s)
                mock.advance(args.tick_s)
        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app.cleanup_ctx.append(ticker)
    print(f"smartcar mock on http://{args.host}:{args.port} (connect, auth, /v2.0 and /v3)")
    StopSignals("sim smartcar").serve(web.run_app, app, host=args.host, port=args.port, print=None)
    return 0
