"""Vehicles: CRUD from their declaration, with filters and the seed's 5-minute list cache."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import MANAGERS, ROLES, SECTION_KEY, current_user
from api.cache import cached
from api.errors import Conflict, NotFound
from api.params import (
    UUID_SCHEMA,
    like_pattern,
    page_params,
    query_choice,
    query_text,
    query_uuid,
)
from api.routes.common import (
    driver_scope,
)
from api.routes.crud import Filter, TenantResource, crud_routes, list_page, list_query
from api.routes.devices import active_device, revoke_devices
from api.routing import Param
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


CACHE = "vehicles"


def _make(request: web.Request, name: str) -> str | None:
    make = query_text(request, name)
    # Literal text, not patterns: `%`, `_` and `\` match themselves.
    return None if make is None else like_pattern(make)


def _search(request: web.Request, name: str) -> str | None:
    q = query_text(request, name)
    return None if q is None else f"%{like_pattern(q)}%"


async def _before_update(conn: asyncpg.Connection, tenant_id: UUID, vid: UUID,
                         values: dict[str, Any]) -> None:
    if "code" in values:
        await _refuse_recode(conn, tenant_id, vid, values["code"])


async def _before_delete(request: web.Request, conn: asyncpg.Connection, tenant_id: UUID,
                         vid: UUID) -> None:
    """Its devices are revoked in the same transaction (their broker logins stop working and
    live sessions end)."""
    # The row first: a provisioning still open for this vehicle (FOR SHARE) commits before
    # this goes on, so its device is among those revoked.
    if await conn.fetchval("SELECT id FROM vehicles WHERE id = $1 AND tenant_id = $2 "
                           "FOR UPDATE", vid, tenant_id) is None:
        raise NotFound("vehicle not found")
    await revoke_devices(request, conn, tenant_id, vehicle_id=vid)


VEHICLES = TenantResource(
    noun="vehicle", path="/api/vehicles", table="vehicles", tag="vehicles", schema="Vehicle",
    page_schema="VehiclePage",
    columns=("id", "code", "vin", "make", "model", "year", "license_plate", "fuel_type",
             "tank_capacity_l", "gps_device_id", "samsara_id", "smartcar_id", "odometer_km",
             "engine_hours_h", "status", "assigned_driver_id", "created_at", "updated_at"),
    alias="v", order_by="v.code", read_roles=ROLES, write_roles=MANAGERS,
    create_body=VehicleIn, patch_body=VehiclePatch, driver_column="assigned_driver_id",
    filters=(
        Filter(Param("status", schema={"enum": list(STATUSES)}), "v.status = {}",
               lambda request, name: query_choice(request, name, STATUSES)),
        Filter(Param("assigned_driver_id", schema=UUID_SCHEMA), "v.assigned_driver_id = {}",
               query_uuid),
        Filter(Param("make", description="exact make, case-insensitive"), "v.make ILIKE {}",
               _make),
        Filter(Param("q", description="search code, plate or VIN (substring, "
                     "case-insensitive)"),
               "(v.code ILIKE {0} OR v.license_plate ILIKE {0} OR v.vin ILIKE {0})", _search),
    ),
    references={"assigned_driver_id": "drivers"}, invalidates=(CACHE,),
    before_update=_before_update, before_delete=_before_delete)


async def list_vehicles(request: web.Request) -> web.Response:
    """GET /api/vehicles: the declared list, cached 5 minutes per tenant and query."""
    user = current_user(request)
    page, limit, _ = page_params(request)
    where, args, values = list_query(VEHICLES, request)
    # Every input of the page: filters (as read), page, and the driver's scope.
    variant = msgspec.json.encode([page, limit, *values.values(), driver_scope(user)]).decode()

    async def compute() -> dict[str, Any]:
        return await list_page(VEHICLES, request, where, args, page=page, limit=limit)

    ttl_s = request.app[SECTION_KEY].vehicle_cache_ttl_s
    body = await cached(request, CACHE, user.tenant_id, variant=variant, ttl_s=ttl_s,
                        compute=compute)
    return web.Response(body=body, content_type="application/json")


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


ROUTES = crud_routes(
    VEHICLES, handlers={"list": list_vehicles},
    overrides={"list": {"summary": "List vehicles (drivers: the assigned one)"}})
