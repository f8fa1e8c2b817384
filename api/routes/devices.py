"""Devices: provision an edge gateway (MQTT credentials + a ready config file), list, revoke.

The broker login is ``{tenant slug}/{vehicle code}``, and it is also the only client id the
device may connect with. With `mqtt_credentials = "dynsec"` the API gives the login its
rules in Mosquitto's dynamic-security plugin (`api.broker_logins`): publish on its own
vehicle's topics, subscribe to its own commands, nothing else. The password is generated here,
returned once, and stored only as Mosquitto's PBKDF2-SHA512 hash (``$7$`` format).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Literal
from urllib.parse import quote
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import MANAGERS, current_user, roles_except
from api.broker_logins import BrokerAdmin, BrokerLoginError, mosquitto_hash
from api.config import SETTINGS_KEY
from api.db import tenant_transaction
from api.errors import ApiError, Conflict, NotFound
from api.params import path_uuid, read_json
from api.routes.common import ensure_in_tenant, json_response
from api.routes.crud import TenantResource, crud_routes
from api.routing import AUDIT_RESOURCE_ID
from core.mqtt_url import parse_mqtt_url
from core.protocol import device_login


def gateway_toml(*, tenant: str, vehicle: str, mqtt_url: str, username: str, password: str
                 ) -> str:
    """A ready gateway configuration file for one vehicle."""
    target = parse_mqtt_url(mqtt_url)
    scheme = "mqtts" if target.tls else "mqtt"
    url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@" \
          f"{target.host}:{target.port}"
    return (
        "# fleet-telemetry edge gateway, provisioned by the API.\n"
        "# Keep this file private: it holds the device's MQTT password.\n"
        "[gateway]\n"
        f"tenant = {msgspec.json.encode(tenant).decode()}\n"
        f"vehicle = {msgspec.json.encode(vehicle).decode()}\n"
        "\n[mqtt]\n"
        f"url = {msgspec.json.encode(url).decode()}\n"
    )


class DeviceIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Provision a gateway for a vehicle."""

    vehicle_id: UUID
    kind: Literal["edge_gateway", "telematics_unit", "simulator"] = "edge_gateway"
    serial: str | None = None


# Gateways are vehicle equipment: the seed's "Vehicles" column, without drivers (a device
# inventory with broker logins is not a driver's business).
DEVICES = TenantResource(
    noun="device", path="/api/devices", table="devices", tag="devices",
    columns=("id", "vehicle_id", "kind", "serial", "mqtt_username", "software_version",
             "status", "last_seen_at", "created_at", "updated_at"),
    order_by="r.mqtt_username", read_roles=roles_except("driver"), write_roles=MANAGERS)


def _broker_admin(request: web.Request) -> BrokerAdmin | None:
    """The plugin's admin client, or None when a broker reads logins from the database."""
    settings = request.app[SETTINGS_KEY]
    if settings.api.mqtt_credentials == "database":
        return None
    if not settings.api.mqtt_admin_url:
        raise ApiError('broker logins are not configured: set api.mqtt_admin_url (the '
                       "dynamic-security plugin's admin login) or api.mqtt_credentials = "
                       '"database"', status=503, code="broker_not_configured")
    return BrokerAdmin(settings.api.mqtt_admin_url)


async def _on_broker(request: web.Request, change: str, login: str,
                     password: str | None = None) -> None:
    """Add (with a password) or remove a device login on the broker. Paho is blocking, so
    it runs off the event loop; a refusal or silence is a 502 naming the broker."""
    admin = _broker_admin(request)
    if admin is None:
        return
    try:
        if password is None:
            await asyncio.get_running_loop().run_in_executor(None, admin.remove_device, login)
        else:
            await asyncio.get_running_loop().run_in_executor(
                None, admin.add_device, login, password)
    except BrokerLoginError as exc:
        raise ApiError(f"could not {change} the broker login: {exc}", status=502,
                       code="broker_error") from exc


async def provision_device(request: web.Request) -> web.Response:
    """POST /api/devices: create credentials and return them once with a gateway config."""
    user = current_user(request)
    body = await read_json(request, DeviceIn)
    password = secrets.token_urlsafe(24)
    async with tenant_transaction(request) as conn:
        await ensure_in_tenant(conn, "vehicles", body.vehicle_id, user.tenant_id, "vehicle_id")
        # FOR SHARE: the code read here goes into the login, so it must not change (a PATCH
        # takes the row FOR UPDATE) nor the vehicle go (DELETE) before this commits.
        names = await conn.fetchrow(
            "SELECT t.slug, v.code FROM vehicles v JOIN tenants t ON t.id = v.tenant_id "
            "WHERE v.id = $1 AND v.tenant_id = $2 FOR SHARE OF v", body.vehicle_id,
            user.tenant_id)
        if names is None:
            raise NotFound("vehicle not found")
        username = device_login(names["slug"], names["code"])
        try:
            row = await conn.fetchrow(
                "INSERT INTO devices AS r (tenant_id, vehicle_id, kind, serial, mqtt_username, "  # noqa: S608 - constant column list
                "mqtt_password_hash) VALUES ($1, $2, $3, $4, $5, $6) "
                f"RETURNING {DEVICES.select_list}",
                user.tenant_id, body.vehicle_id, body.kind, body.serial, username,
                mosquitto_hash(password))
        except asyncpg.UniqueViolationError as exc:
            raise Conflict("this vehicle already has a device; revoke it first",
                           field="vehicle_id") from exc
        if row is None:
            raise ApiError("insert returned no row")
        # Inside the transaction: if the broker refuses, no device row is left behind.
        await _on_broker(request, "add", username, password)
    settings = request.app[SETTINGS_KEY]
    mqtt_url = settings.api.mqtt_public_url or settings.mqtt.url
    request[AUDIT_RESOURCE_ID] = str(row["id"])
    return json_response({
        **DEVICES.json(row), "mqtt_password": password,
        "gateway_config": gateway_toml(tenant=names["slug"], vehicle=names["code"],
                                       mqtt_url=mqtt_url, username=username,
                                       password=password)}, status=201)


async def revoke_devices(request: web.Request, conn: asyncpg.Connection, tenant_id: UUID, *,
                         device_id: UUID | None = None, vehicle_id: UUID | None = None
                         ) -> list[str]:
    """Revoke one device, or every device of a vehicle, inside the caller's transaction: the
    row keeps its history under a freed username and an unknown random password hash. With
    `mqtt_credentials = "dynsec"` the login is deleted from the broker, which ends a live
    session at once; a broker that authenticates against the database sees the new hash at
    the device's next login. Returns the logins revoked.

    The broker is told inside the transaction, so a refusal leaves nothing marked revoked;
    the reverse (the broker changed, then the transaction failed) leaves a device that cannot
    log in but is not marked revoked, and repeating the request revokes it."""
    usernames: list[str] = [r[0] for r in await conn.fetch(
        "UPDATE devices SET status = 'revoked', mqtt_password_hash = $4, "
        "mqtt_username = mqtt_username || '#revoked-' || id::text "
        "WHERE tenant_id = $1 AND status <> 'revoked' "
        "AND ($2::uuid IS NULL OR id = $2) AND ($3::uuid IS NULL OR vehicle_id = $3) "
        "RETURNING split_part(mqtt_username, '#', 1)",
        tenant_id, device_id, vehicle_id, mosquitto_hash(secrets.token_urlsafe(24)))]
    for username in usernames:
        # Inside the transaction: if the broker refuses, nothing is marked revoked.
        await _on_broker(request, "remove", username)
    return usernames


async def active_device(conn: asyncpg.Connection, tenant_id: UUID, vehicle_id: UUID
                        ) -> str | None:
    """The broker login of the vehicle's device that is not revoked, if any."""
    login: str | None = await conn.fetchval(
        "SELECT mqtt_username FROM devices WHERE tenant_id = $1 AND vehicle_id = $2 "
        "AND status <> 'revoked' LIMIT 1", tenant_id, vehicle_id)
    return login


async def revoke_device(request: web.Request) -> web.Response:
    """DELETE /api/devices/{id}: revoke; the broker login gets an unknown random password."""
    user = current_user(request)
    async with tenant_transaction(request) as conn:
        if not await revoke_devices(request, conn, user.tenant_id,
                                    device_id=path_uuid(request)):
            raise NotFound("device not found")
    return web.Response(status=204)


ROUTES = crud_routes(
    DEVICES, operations=("list", "create", "get", "delete"),
    handlers={"create": provision_device, "delete": revoke_device},
    overrides={"create": {"summary": "Provision a gateway: MQTT login and a ready config file",
                          "body": DeviceIn, "response": None},
               "delete": {"summary": "Revoke a device"}})
