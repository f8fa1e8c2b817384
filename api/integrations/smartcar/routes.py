"""HTTP endpoints of the Smartcar integration (mounted with the others by
`api.integrations.routes.setup`).

* ``GET /api/smartcar/auth-url`` (admin, fleet_manager): the Connect URL with a one-time state.
* ``GET /api/smartcar/callback`` (public: the owner's browser): v3 stores the owner's
  ``user_id`` per connected vehicle; 2.0 exchanges the code and stores the encrypted pair.
* ``POST /api/smartcar/vehicles/{id}/lock`` and ``/unlock`` (admin, fleet_manager; audited).
* ``GET /api/smartcar/vehicles/{id}/location``: last location, cached 5 minutes in Redis.
* ``POST /api/smartcar/webhooks`` (public, SC-Signature verified).

Webhooks carry ``SC-Signature`` (both versions): hex HMAC-SHA256 of the raw body keyed by the
application management token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from api.audit import record
from api.auth import MANAGERS, current_user, roles_except
from api.cache import REDIS_KEY
from api.config import SETTINGS_KEY
from api.db import POOL_KEY, tenant_connection, tenant_transaction
from api.errors import ApiError, Conflict, NotFound, Unauthorized, ValidationError
from api.integrations.errors import IntegrationError, NotConnectedError, VendorError
from api.integrations.publisher import MqttPublisher
from api.integrations.smartcar.consent import new_state
from api.integrations.smartcar.puller import location_cache_key
from api.integrations.smartcar.signals import (
    signals_to_samples,
    webhook_samples,
    webhook_v3_samples,
)
from api.integrations.state import INTEGRATIONS_KEY, Integrations
from api.params import path_uuid
from api.routing import ID_PARAM, ApiRoute, Param
from core.protocol import Source

log = logging.getLogger(__name__)


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


def _vendor_error(exc: IntegrationError) -> ApiError:
    if isinstance(exc, NotConnectedError):
        return Conflict(str(exc), code="not_connected")
    return ApiError(f"Smartcar: {exc}", status=502, code="vendor_error")


async def auth_url(request: web.Request) -> web.Response:
    """A Connect URL for the vehicle owner; `vehicle_id` links the consent to our vehicle."""
    integ = request.app[INTEGRATIONS_KEY]
    if integ.version == "2.0":
        integ.need_tokens()  # v3 stores no secret, so it needs no token key
    user = current_user(request)
    vehicle_raw = request.query.get("vehicle_id")
    try:
        vehicle_id = UUID(vehicle_raw) if vehicle_raw else None
    except ValueError as exc:
        raise ValidationError("vehicle_id must be a UUID", field="vehicle_id") from exc
    state = new_state()
    async with tenant_transaction(request) as conn:
        if vehicle_id is not None and not await conn.fetchval(
                "SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2", vehicle_id,
                user.tenant_id):
            raise NotFound("vehicle not found")
        await conn.execute(
            "INSERT INTO smartcar_oauth_states (state, tenant_id, user_id, vehicle_id,"
            " expires_at) VALUES ($1, $2, $3, $4, $5)", state, user.tenant_id, user.id,
            vehicle_id,
            datetime.now(UTC) + timedelta(seconds=integ.settings.smartcar_state_ttl_s))
    return web.json_response({"url": integ.client.authorize_url(state), "state": state})


async def callback(request: web.Request) -> web.Response:
    """Connect redirects the owner here: check the state, then record the consent."""
    integ = request.app[INTEGRATIONS_KEY]
    state = request.query.get("state", "")
    pool = request.app[POOL_KEY]
    async with pool.acquire() as conn:
        # No tenant yet (the owner's browser has no session): the state, used once, names it.
        pending = await conn.fetchrow(
            "SELECT tenant_id, user_id, vehicle_id FROM smartcar_consume_oauth_state($1)", state)
    if pending is None:
        raise ValidationError("unknown or expired state", field="state")
    if "error" in request.query:
        raise ApiError(f"consent refused: {request.query.get('error_description') or ''}"
                       f" ({request.query['error']})", status=400, code="consent_refused")
    tenant_id: UUID = pending["tenant_id"]
    vehicle_id: UUID | None = pending["vehicle_id"]
    if integ.version == "v3":
        vehicles, linked = await _callback_v3(request, integ, pending)
    else:
        vehicles = await _callback_v2(request, integ, pending)
        linked = vehicles[0] if vehicles else None
    async with tenant_connection(pool, tenant_id) as conn:
        if vehicle_id is not None and linked is not None:
            await conn.execute("UPDATE vehicles SET smartcar_id = $2 WHERE id = $1",
                               vehicle_id, linked)
        await record(conn, "smartcar.connect", "vehicle", vehicle_id, "success",
                     {"smartcar_vehicle_ids": vehicles, "linked": linked,
                      "api_version": integ.version},
                     tenant_id=tenant_id,
                     user_id=pending["user_id"], ip=request.remote,
                     user_agent=request.headers.get("User-Agent"))
    return web.json_response({"connected": vehicles, "linked": linked,
                              "vehicle_id": vehicle_id and str(vehicle_id)})


async def _callback_v3(request: web.Request, integ: Integrations,
                       pending: Any) -> tuple[list[str], str | None]:
    """v3: Connect hands back the owner's user id; list and store their connections.

    Returns the owner's Smartcar vehicle ids and the one to link to our vehicle. The list
    covers every vehicle this owner ever connected, so the consent just given is the one
    not stored yet; when that is ambiguous (several new ones) nothing is linked and the
    vehicles stay stored unlinked rather than being attached to the wrong vehicle.
    """
    user_id = request.query.get("user_id")
    if not user_id:
        raise ValidationError("user_id is required (Smartcar API v3 Connect)", field="user_id")
    try:
        connections = await integ.v3.connections(user_id)
    except VendorError as exc:
        raise _vendor_error(exc) from exc
    if not connections:
        raise ApiError("Smartcar lists no connected vehicle for this user", status=502,
                       code="vendor_error")
    tenant_id = pending["tenant_id"]
    async with tenant_connection(request.app[POOL_KEY], tenant_id) as conn:
        known = {r["smartcar_vehicle_id"] for r in await conn.fetch(
            "SELECT smartcar_vehicle_id FROM smartcar_v3_connections WHERE tenant_id = $1"
            " AND smartcar_vehicle_id = ANY($2::text[])", tenant_id,
            [c.vehicle_id for c in connections])}
        new = [c for c in connections if c.vehicle_id not in known]
        linked = new[0] if len(new) == 1 else connections[0] if len(connections) == 1 else None
        for connection in connections:
            await integ.v3_connections.store(
                conn, tenant_id, connection,
                vehicle_id=pending["vehicle_id"] if connection == linked else None,
                connected_by=pending["user_id"])
    return [c.vehicle_id for c in connections], None if linked is None else linked.vehicle_id


async def _callback_v2(request: web.Request, integ: Integrations, pending: Any) -> list[str]:
    """2.0: exchange the code for a token pair and store it encrypted per vehicle."""
    tokens = integ.need_tokens()
    code = request.query.get("code")
    if not code:
        raise ValidationError("code is required", field="code")
    try:
        pair = await integ.client.exchange_code(code)
        vehicles = await integ.client.vehicles(pair.access_token)
    except VendorError as exc:
        raise _vendor_error(exc) from exc
    async with tenant_connection(request.app[POOL_KEY], pending["tenant_id"]) as conn:
        for sc_id in vehicles:
            await tokens.store(conn, pending["tenant_id"], sc_id, pair,
                               vehicle_id=pending["vehicle_id"],
                               connected_by=pending["user_id"])
    return vehicles


async def _smartcar_id(conn: Any, tenant_id: UUID, vehicle_id: UUID) -> str:
    sc_id: str | None = await conn.fetchval(
        "SELECT coalesce(v.smartcar_id, c.smartcar_vehicle_id, k.smartcar_vehicle_id)"
        " FROM vehicles v LEFT JOIN smartcar_v3_connections c ON c.vehicle_id = v.id"
        " LEFT JOIN smartcar_tokens k ON k.vehicle_id = v.id"
        " WHERE v.id = $1 AND v.tenant_id = $2", vehicle_id, tenant_id)
    if sc_id is None:
        raise Conflict("vehicle is not connected to Smartcar", code="not_connected")
    return sc_id


async def _security(request: web.Request, action: str) -> web.Response:
    integ = request.app[INTEGRATIONS_KEY]
    user = current_user(request)
    vehicle_id = path_uuid(request)
    name = f"smartcar.{action.lower()}"
    try:
        async with tenant_transaction(request) as conn:
            exists = await conn.fetchval("SELECT 1 FROM vehicles WHERE id = $1"
                                         " AND tenant_id = $2", vehicle_id, user.tenant_id)
            if not exists:
                raise NotFound("vehicle not found")
            sc_id = await _smartcar_id(conn, user.tenant_id, vehicle_id)
            sc_user = await integ.v3_connections.user_id(conn, user.tenant_id, sc_id)
            token = None if sc_user else await integ.need_tokens().access_token(
                conn, user.tenant_id, sc_id)
        if sc_user is not None:
            result = await integ.v3.security(sc_user, sc_id, action)
        else:
            assert token is not None  # noqa: S101 - set above when there is no v3 user
            result = await integ.client.security(token, sc_id, action)
    except IntegrationError as exc:
        err = _vendor_error(exc)
        await record(request, name, "vehicle", vehicle_id, "failure", {"action": action},
                     error_message=err.message)
        raise err from exc
    except ApiError as err:
        await record(request, name, "vehicle", vehicle_id, "failure", {"action": action},
                     error_message=err.message)
        raise
    await record(request, name, "vehicle", vehicle_id, "success",
                 {"action": action, "smartcar_vehicle_id": sc_id,
                  "api_version": "v3" if sc_user else "2.0",
                  "vendor_status": result.get("status")})
    return web.json_response({"vehicle_id": str(vehicle_id), "action": action,
                              "status": result.get("status", "success")})


async def lock(request: web.Request) -> web.Response:
    """Lock the doors of a Smartcar-connected vehicle."""
    return await _security(request, "LOCK")


async def unlock(request: web.Request) -> web.Response:
    """Unlock the doors of a Smartcar-connected vehicle."""
    return await _security(request, "UNLOCK")


async def location(request: web.Request) -> web.Response:
    """Last Smartcar location; served from Redis when younger than the cache lifetime."""
    integ = request.app[INTEGRATIONS_KEY]
    user = current_user(request)
    vehicle_id = path_uuid(request)
    redis = request.app[REDIS_KEY]
    async with tenant_transaction(request) as conn:
        sc_id = await _smartcar_id(conn, user.tenant_id, vehicle_id)
        key = location_cache_key(user.tenant_id, sc_id)
        cached = await redis.get(key)
        if cached is not None:
            return web.json_response({**json.loads(cached), "cached": True})
        sc_user = await integ.v3_connections.user_id(conn, user.tenant_id, sc_id)
        try:
            token = None if sc_user else await integ.need_tokens().access_token(
                conn, user.tenant_id, sc_id)
        except IntegrationError as exc:
            raise _vendor_error(exc) from exc
    try:
        if sc_user is not None:
            _, found = signals_to_samples(await integ.v3.signals(sc_user, sc_id),
                                          default_ms=int(time.time() * 1000))
            if found is None:
                raise NotFound("Smartcar reports no location for this vehicle")
            value: dict[str, Any] = found
        else:
            assert token is not None  # noqa: S101 - set above when there is no v3 user
            body, t_ms = await integ.client.read(token, sc_id, "location")
            value = {**body, "t_ms": t_ms}
    except VendorError as exc:
        raise _vendor_error(exc) from exc
    await redis.set(key, json.dumps(value), ex=integ.settings.smartcar_location_cache_s)
    return web.json_response({**value, "cached": False})


async def webhook(request: web.Request) -> web.Response:
    """Smartcar webhook deliveries: signature checked on the raw body before anything else."""
    integ = request.app[INTEGRATIONS_KEY]
    raw = await request.read()
    if not verify_webhook(integ.settings.smartcar_management_token,
                          request.headers.get("SC-Signature"), raw):
        raise Unauthorized("invalid SC-Signature")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise ValidationError("body is not JSON") from exc
    event = str(payload.get("eventName") or payload.get("eventType") or "").lower()
    if event == "verify":
        challenge = str((payload.get("payload") or payload.get("data") or {}).get("challenge"))
        return web.json_response({"challenge": challenge_response(
            integ.settings.smartcar_management_token, challenge)})
    published = 0
    by_vehicle: dict[str, list[Any]] = {}
    # Both delivery formats are accepted whatever the configured version: during a migration
    # Smartcar may still deliver 2.0 webhooks for vehicles connected before it.
    for sc_id, sample in [*webhook_samples(payload), *webhook_v3_samples(payload)]:
        by_vehicle.setdefault(sc_id, []).append(sample)
    if by_vehicle:
        pool = request.app[POOL_KEY]
        publisher = await _publisher(request.app)
        async with pool.acquire() as conn:
            for sc_id, samples in by_vehicle.items():
                # Several rows only when the car's owner consented to several tenants.
                owners = await conn.fetch(
                    "SELECT tenant_slug, vehicle_code FROM smartcar_vehicle_owner($1)", sc_id)
                if not owners:
                    log.warning("smartcar webhook for unlinked vehicle %s", sc_id)
                    continue
                for owner in owners:
                    try:
                        await publisher.publish(owner["tenant_slug"], owner["vehicle_code"],
                                                Source.SMARTCAR, samples)
                    except IntegrationError as exc:
                        raise ApiError(str(exc), status=503, code="unavailable") from exc
                    published += len(samples)
    return web.json_response({"status": "received", "samples": published})


async def _publisher(app: web.Application) -> MqttPublisher:
    integ = app[INTEGRATIONS_KEY]
    if integ.publisher is None:
        publisher = MqttPublisher(app[SETTINGS_KEY].mqtt,
                                  client_id_prefix=f"{integ.settings.mqtt_client_id_prefix}-api")
        await publisher.__aenter__()
        integ.publisher = publisher
    return integ.publisher


ROUTES = [
    ApiRoute("GET", "/api/smartcar/auth-url", auth_url, "Smartcar Connect URL", "integrations",
             MANAGERS, params=(Param("vehicle_id", description="our vehicle to link"),)),
    ApiRoute("GET", "/api/smartcar/callback", callback, "Smartcar Connect redirect target",
             "integrations", None, params=(Param("code"), Param("state", required=True))),
    ApiRoute("POST", "/api/smartcar/vehicles/{id}/lock", lock, "Lock a Smartcar vehicle",
             "integrations", MANAGERS, params=(ID_PARAM,), resource="vehicle", audit=False),
    ApiRoute("POST", "/api/smartcar/vehicles/{id}/unlock", unlock, "Unlock a Smartcar vehicle",
             "integrations", MANAGERS, params=(ID_PARAM,), resource="vehicle", audit=False),
    ApiRoute("GET", "/api/smartcar/vehicles/{id}/location", location,
             "Last Smartcar location (cached 5 min)", "integrations",
             roles_except("driver"), params=(ID_PARAM,)),
    ApiRoute("POST", "/api/smartcar/webhooks", webhook, "Smartcar webhook receiver",
             "integrations", None, audit=False),
]
