"""Vehicles: CRUD with pagination, filters and the seed's 5-minute list cache."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import SECTION_KEY, current_user
from api.cache import cached, invalidate
from api.db import tenant_transaction
from api.errors import ApiError, Conflict, NotFound, ValidationError
from api.params import (
    UUID_SCHEMA,
    like_pattern,
    page_params,
    path_uuid,
    query_choice,
    query_text,
    query_uuid,
    read_json,
)
from api.routes.common import (
    db_error,
    driver_scope,
    ensure_in_tenant,
    json_response,
    page_body,
)
from api.routes.devices import active_device, revoke_devices
from api.routing import AUDIT_RESOURCE_ID, PAGE_PARAMS, ApiRoute, Param
from core.protocol import ID_PATTERN, whole

# Whole-string patterns (core.protocol.whole): a code is a topic level of the wire
# contract, so it is the contract's id pattern.
Code = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Vin = Annotated[str, msgspec.Meta(pattern=whole(r"[A-HJ-NPR-Z0-9]{17}"))]
Year = Annotated[int, msgspec.Meta(ge=1950, le=2100)]
FuelType = Literal["gasoline", "diesel", "electric", "hybrid", "cng", "lpg", "hydrogen"]
Status = Literal["active", "inactive", "maintenance", "retired"]
STATUSES = ("active", "inactive", "maintenance", "retired")
# `real` in the schema: a bound keeps tiny and huge values from rounding past its CHECK.
TankLitres = Annotated[float, msgspec.Meta(ge=0.1, le=100_000, description="litres")]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class VehicleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new vehicle; `code` is its id in MQTT topics (unique per tenant)."""

    code: Code
    vin: Vin | None = None
    make: str | None = None
    model: str | None = None
    year: Year | None = None
    license_plate: str | None = None
    fuel_type: FuelType | None = None
    tank_capacity_l: TankLitres | None = None
    gps_device_id: str | None = None
    samsara_id: str | None = None
    smartcar_id: str | None = None
    odometer_km: NonNegFloat | None = None
    engine_hours_h: NonNegFloat | None = None
    status: Status = "active"
    assigned_driver_id: UUID | None = None


class VehiclePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update: only the fields present change (at least one)."""

    json_schema_extra: ClassVar[dict[str, Any]] = {"minProperties": 1}

    code: Code | Unset = UNSET
    vin: Vin | Unset | None = UNSET
    make: str | Unset | None = UNSET
    model: str | Unset | None = UNSET
    year: Year | Unset | None = UNSET
    license_plate: str | Unset | None = UNSET
    fuel_type: FuelType | Unset | None = UNSET
    tank_capacity_l: TankLitres | Unset | None = UNSET
    gps_device_id: str | Unset | None = UNSET
    samsara_id: str | Unset | None = UNSET
    smartcar_id: str | Unset | None = UNSET
    odometer_km: NonNegFloat | Unset | None = UNSET
    engine_hours_h: NonNegFloat | Unset | None = UNSET
    status: Status | Unset = UNSET
    assigned_driver_id: UUID | Unset | None = UNSET


COLUMNS = ("id", "code", "vin", "make", "model", "year", "license_plate", "fuel_type",
           "tank_capacity_l", "gps_device_id", "samsara_id", "smartcar_id", "odometer_km",
           "engine_hours_h", "status", "assigned_driver_id", "created_at", "updated_at")
_SELECT = ", ".join(f"v.{c}" for c in COLUMNS)
CACHE = "vehicles"


def vehicle_json(row: asyncpg.Record) -> dict[str, Any]:
    """The API representation of one vehicle row."""
    return {c: row[c] for c in COLUMNS}


async def list_vehicles(request: web.Request) -> web.Response:
    """GET /api/vehicles: paginated, filterable; cached 5 minutes per tenant and query."""
    user = current_user(request)
    page, limit, offset = page_params(request)
    status = query_choice(request, "status", STATUSES)
    driver = query_uuid(request, "assigned_driver_id")
    make = query_text(request, "make")
    q = query_text(request, "q")
    scope = driver_scope(user)
    variant = f"{page}|{limit}|{status}|{driver}|{make}|{q}|{scope}"

    async def compute() -> dict[str, Any]:
        async with tenant_transaction(request) as conn:
            where = ("v.tenant_id = $1 AND ($2::uuid IS NULL OR v.assigned_driver_id = $2) "
                     "AND ($3::text IS NULL OR v.status = $3) "
                     "AND ($4::uuid IS NULL OR v.assigned_driver_id = $4) "
                     "AND ($5::text IS NULL OR v.make ILIKE $5) "
                     "AND ($6::text IS NULL OR v.code ILIKE $6 "
                     "     OR v.license_plate ILIKE $6 OR v.vin ILIKE $6)")
            # Literal text, not patterns: `%`, `_` and `\` match themselves.
            args = (user.tenant_id, scope, status, driver,
                    None if make is None else like_pattern(make),
                    None if q is None else f"%{like_pattern(q)}%")
            total = await conn.fetchval(f"SELECT count(*) FROM vehicles v WHERE {where}", *args)  # noqa: S608
            rows = await conn.fetch(
                f"SELECT {_SELECT} FROM vehicles v WHERE {where} "  # noqa: S608
                "ORDER BY v.code LIMIT $7 OFFSET $8", *args, limit, offset)
        return page_body([vehicle_json(r) for r in rows], page, limit, int(total))

    ttl_s = request.app[SECTION_KEY].vehicle_cache_ttl_s
    body = await cached(request, CACHE, user.tenant_id, variant=variant, ttl_s=ttl_s,
                        compute=compute)
    return web.Response(body=body, content_type="application/json")


async def get_vehicle(request: web.Request) -> web.Response:
    """GET /api/vehicles/{id}."""
    user = current_user(request)
    vid = path_uuid(request)
    async with tenant_transaction(request) as conn:
        row = await conn.fetchrow(
            f"SELECT {_SELECT} FROM vehicles v WHERE v.id = $1 AND v.tenant_id = $2 "  # noqa: S608
            "AND ($3::uuid IS NULL OR v.assigned_driver_id = $3)",
            vid, user.tenant_id, driver_scope(user))
    if row is None:
        raise NotFound("vehicle not found")
    return json_response(vehicle_json(row))


async def create_vehicle(request: web.Request) -> web.Response:
    """POST /api/vehicles."""
    user = current_user(request)
    body = await read_json(request, VehicleIn)
    values = msgspec.structs.asdict(body)
    async with tenant_transaction(request) as conn:
        await ensure_in_tenant(conn, "drivers", body.assigned_driver_id, user.tenant_id,
                               "assigned_driver_id")
        cols = ["tenant_id", *values]
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        try:
            row = await conn.fetchrow(
                f"INSERT INTO vehicles AS v ({', '.join(cols)}) VALUES ({placeholders}) "  # noqa: S608
                f"RETURNING {_SELECT}", user.tenant_id, *values.values())
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
    if row is None:
        raise ApiError("insert returned no row")
    await invalidate(request, CACHE, user.tenant_id)
    request[AUDIT_RESOURCE_ID] = str(row["id"])
    return json_response(vehicle_json(row), status=201)


async def update_vehicle(request: web.Request) -> web.Response:
    """PATCH /api/vehicles/{id}: change the fields present; invalidates the list cache."""
    user = current_user(request)
    vid = path_uuid(request)
    body = await read_json(request, VehiclePatch)
    values = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not UNSET}
    if not values:
        raise ValidationError("no field to update", field="body")
    async with tenant_transaction(request) as conn:
        if "assigned_driver_id" in values:
            await ensure_in_tenant(conn, "drivers", values["assigned_driver_id"],
                                   user.tenant_id, "assigned_driver_id")
        if "code" in values:
            await _refuse_recode(conn, user.tenant_id, vid, values["code"])
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(values, start=3))
        try:
            row = await conn.fetchrow(
                f"UPDATE vehicles AS v SET {sets} WHERE v.id = $1 AND v.tenant_id = $2 "  # noqa: S608
                f"RETURNING {_SELECT}", vid, user.tenant_id, *values.values())
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
    if row is None:
        raise NotFound("vehicle not found")
    await invalidate(request, CACHE, user.tenant_id)
    return json_response(vehicle_json(row))


async def _refuse_recode(conn: asyncpg.Connection, tenant_id: UUID, vid: UUID, code: str
                         ) -> None:
    """A vehicle's code is in its device's broker login and topics: while a device is not
    revoked, the code stays (a 409), so no login ever writes to a vehicle it was not
    provisioned for (docs/api.md, "Devices")."""
    current = await conn.fetchval(
        "SELECT code FROM vehicles WHERE id = $1 AND tenant_id = $2 FOR UPDATE", vid, tenant_id)
    if current is None or current == code:
        return
    login = await active_device(conn, tenant_id, vid)
    if login is not None:
        raise Conflict(f"the vehicle's device {login!r} publishes under its code; revoke the "
                       "device (DELETE /api/devices/{id}) before changing the code, then "
                       "provision a new one", field="code")


async def delete_vehicle(request: web.Request) -> web.Response:
    """DELETE /api/vehicles/{id}: its devices are revoked in the same transaction (their
    broker logins stop working and live sessions end)."""
    user = current_user(request)
    vid = path_uuid(request)
    async with tenant_transaction(request) as conn:
        # The row first: a provisioning still open for this vehicle (FOR SHARE) commits
        # before this goes on, so its device is among those revoked.
        if await conn.fetchval("SELECT id FROM vehicles WHERE id = $1 AND tenant_id = $2 "
                               "FOR UPDATE", vid, user.tenant_id) is None:
            raise NotFound("vehicle not found")
        await revoke_devices(request, conn, user.tenant_id, vehicle_id=vid)
        deleted = await conn.fetchval(
            "DELETE FROM vehicles WHERE id = $1 AND tenant_id = $2 RETURNING id",
            vid, user.tenant_id)
    if deleted is None:
        raise NotFound("vehicle not found")
    await invalidate(request, CACHE, user.tenant_id)
    return web.Response(status=204)


READ = ("admin", "fleet_manager", "driver", "technician", "viewer")
WRITE = ("admin", "fleet_manager")
ID = Param("id", "path", UUID_SCHEMA, required=True)
VEHICLE_SCHEMA = {"$ref": "#/components/schemas/Vehicle"}

ROUTES = [
    ApiRoute("GET", "/api/vehicles", list_vehicles, "List vehicles (drivers: the assigned one)",
             "vehicles", READ,
             params=(*PAGE_PARAMS, Param("status", schema={"enum": list(STATUSES)}),
                     Param("assigned_driver_id", schema=UUID_SCHEMA),
                     Param("make", description="exact make, case-insensitive"),
                     Param("q", description="search code, plate or VIN (substring, "
                           "case-insensitive)")),
             response={"$ref": "#/components/schemas/VehiclePage"}),
    ApiRoute("POST", "/api/vehicles", create_vehicle, "Create a vehicle", "vehicles", WRITE,
             body=VehicleIn, response=VEHICLE_SCHEMA, status=201, resource="vehicle"),
    ApiRoute("GET", "/api/vehicles/{id}", get_vehicle, "One vehicle", "vehicles", READ,
             params=(ID,), response=VEHICLE_SCHEMA),
    ApiRoute("PATCH", "/api/vehicles/{id}", update_vehicle, "Update a vehicle", "vehicles",
             WRITE, params=(ID,), body=VehiclePatch, response=VEHICLE_SCHEMA,
             resource="vehicle"),
    ApiRoute("DELETE", "/api/vehicles/{id}", delete_vehicle, "Delete a vehicle", "vehicles",
             WRITE, params=(ID,), status=204, resource="vehicle"),
]
