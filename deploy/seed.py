"""The one seeding module of the demo, the benchmarks and the tests.

Tenants, users, drivers, vehicles and geofences the API's way: each function takes an asyncpg
connection of the application role (or the owner) and runs in its own transaction bound to the
tenant, so row-level security applies as for API requests, passwords are hashed as at login
and fences get their zones as through the REST API. A tenant with many vehicles, as the schema
owner without the API's rules, comes from `seed_fleet` (storage.seed, also what
`fleet sim --seed-db` uses).
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from api.auth import hash_password
from api.routes.geofences import FenceFeature, insert_geofence
from storage.seed import SeededFleet, seed_fleet


async def _bind(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))


async def create_tenant(conn: asyncpg.Connection, slug: str, name: str | None = None) -> UUID:
    """Create a tenant (slug = its id in MQTT topics); returns its id."""
    tenant_id = uuid.uuid4()
    async with conn.transaction():
        await _bind(conn, tenant_id)
        await conn.execute("INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $3)",
                           tenant_id, slug, name or slug)
    return tenant_id


async def create_user(conn: asyncpg.Connection, tenant_id: UUID, email: str, password: str,
                      role: str, *, driver_id: UUID | None = None,
                      first_name: str | None = None, last_name: str | None = None) -> UUID:
    """Create a user; the password must meet the IA-5 rules (ValidationError otherwise)."""
    pw_hash = hash_password(password, email)
    async with conn.transaction():
        await _bind(conn, tenant_id)
        user_id: UUID = await conn.fetchval(
            "INSERT INTO users (tenant_id, email, role, password_hash, driver_id, first_name, "
            "last_name) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            tenant_id, email, role, pw_hash, driver_id, first_name, last_name)
    return user_id


async def create_driver(conn: asyncpg.Connection, tenant_id: UUID, first_name: str,
                        last_name: str, **fields: Any) -> UUID:
    """Create a driver record; extra keyword arguments are columns of `drivers`."""
    cols = ["tenant_id", "first_name", "last_name", *fields]
    ph = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    async with conn.transaction():
        await _bind(conn, tenant_id)
        driver_id: UUID = await conn.fetchval(
            f"INSERT INTO drivers ({', '.join(cols)}) VALUES ({ph}) RETURNING id",  # noqa: S608
            tenant_id, first_name, last_name, *fields.values())
    return driver_id


async def create_vehicle(conn: asyncpg.Connection, tenant_id: UUID, code: str,
                         **fields: Any) -> UUID:
    """Create a vehicle; extra keyword arguments are columns of `vehicles`."""
    cols = ["tenant_id", "code", *fields]
    ph = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    async with conn.transaction():
        await _bind(conn, tenant_id)
        vehicle_id: UUID = await conn.fetchval(
            f"INSERT INTO vehicles ({', '.join(cols)}) VALUES ({ph}) RETURNING id",  # noqa: S608
            tenant_id, code, *fields.values())
    return vehicle_id


async def create_geofence(conn: asyncpg.Connection, tenant_id: UUID,
                          feature: dict[str, Any]) -> UUID:
    """Create a geofence from a GeoJSON Feature (validated like POST /api/geofences)."""
    parsed = msgspec.convert(feature, FenceFeature)
    async with conn.transaction():
        await _bind(conn, tenant_id)
        row = await insert_geofence(conn, tenant_id, parsed)
    fence_id: UUID = row["id"]
    return fence_id


def circle(name: str, lon: float, lat: float, radius_m: float, **props: Any) -> dict[str, Any]:
    """A circle geofence Feature."""
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"name": name, "kind": "circle", "radius_m": radius_m, **props}}


def polygon(name: str, ring: list[tuple[float, float]], **props: Any) -> dict[str, Any]:
    """A polygon geofence Feature from (lon, lat) pairs (closed automatically)."""
    coords = [list(p) for p in ring]
    if coords[0] != coords[-1]:
        coords.append(coords[0])
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": {"name": name, "kind": "polygon", **props}}


__all__ = ["SeededFleet", "circle", "create_driver", "create_geofence", "create_tenant",
           "create_user", "create_vehicle", "polygon", "seed_fleet"]
