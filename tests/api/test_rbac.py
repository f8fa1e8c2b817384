"""The seed's role matrix on every route, OpenAPI coverage, and cross-tenant denial
(REST, SQL as the application role)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg
import pytest

from api.app import create_app
from api.openapi import build_openapi, openapi_path
from api.routing import ROUTES_KEY
from tests.api.conftest import World, api_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALL = {"admin", "fleet_manager", "driver", "technician", "viewer"}
AM = {"admin", "fleet_manager"}
# Written from the seed's "Role-Based Access Control Matrix" (docs/api.md maps each route to
# a column): Vehicles / Drivers CRUD for admin and fleet_manager, read for everyone (drivers:
# assigned vehicle / themselves); geofences follow "Routes" (technician: none); devices are
# vehicle equipment (no driver access); user accounts are "Settings" (admin writes);
# acknowledging an event is "Dispatch" (admin, fleet_manager), reading acknowledgements is
# reading events.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/vehicles"): ALL,
    ("POST", "/api/vehicles"): AM,
    ("GET", "/api/vehicles/{id}"): ALL,
    ("PATCH", "/api/vehicles/{id}"): AM,
    ("DELETE", "/api/vehicles/{id}"): AM,
    ("GET", "/api/drivers"): ALL,
    ("POST", "/api/drivers"): AM,
    ("GET", "/api/drivers/{id}"): ALL,
    ("PATCH", "/api/drivers/{id}"): AM,
    ("DELETE", "/api/drivers/{id}"): AM,
    ("GET", "/api/users"): AM,
    ("POST", "/api/users"): {"admin"},
    ("GET", "/api/devices"): {"admin", "fleet_manager", "technician", "viewer"},
    ("POST", "/api/devices"): AM,
    ("GET", "/api/devices/{id}"): {"admin", "fleet_manager", "technician", "viewer"},
    ("DELETE", "/api/devices/{id}"): AM,
    ("GET", "/api/geofences"): {"admin", "fleet_manager", "driver", "viewer"},
    ("POST", "/api/geofences"): AM,
    ("GET", "/api/geofences/{id}"): {"admin", "fleet_manager", "driver", "viewer"},
    ("PUT", "/api/geofences/{id}"): AM,
    ("DELETE", "/api/geofences/{id}"): AM,
    ("GET", "/api/vehicles/{id}/telemetry"): ALL,
    ("GET", "/api/vehicles/{id}/track"): ALL,
    ("GET", "/api/vehicles/{id}/trips"): ALL,
    ("GET", "/api/positions"): ALL,
    ("GET", "/api/geofence-events"): ALL,
    ("GET", "/api/vehicle-events"): ALL,
    ("GET", "/api/anomalies"): ALL,
    ("POST", "/api/event-acks"): AM,
    ("GET", "/api/event-acks"): ALL,
    ("GET", "/api/dashboard"): {"admin", "fleet_manager", "technician", "viewer"},
    ("GET", "/api/auth/me"): ALL,
    ("POST", "/api/auth/logout"): ALL,
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
          ("GET", "/api/openapi.json"), ("GET", "/api/map-config"), ("GET", "/api/live"),
          ("POST", "/api/auth/login"), ("POST", "/api/auth/refresh")}

NOT_OPERATIONS = ("/", "/favicon.svg", "/favicon.ico")
"""The console's page and its icon: served by the API, not API operations."""


def concrete(world: World, path: str) -> str:
    """Fill path ids with rows of tenant A that every allowed role may see."""
    a = world.a
    if path.startswith("/api/vehicles/"):
        return path.replace("{id}", str(a.vehicles["assigned"]))
    if path.startswith("/api/drivers/"):
        return path.replace("{id}", str(a.driver_id))
    if path.startswith("/api/geofences/"):
        return path.replace("{id}", str(a.geofence_id))
    return path.replace("{id}", str(uuid.uuid4()))


async def test_every_protected_route_is_in_the_matrix(world: World) -> None:
    """A new route must be added to EXPECTED (so the matrix test covers it)."""
    routes = world.client.app[ROUTES_KEY]
    declared = {(r.method, r.path) for r in routes if r.roles is not None}
    public = {(r.method, r.path) for r in routes if r.roles is None}
    assert declared == set(EXPECTED)
    assert public == PUBLIC


@pytest.mark.parametrize("route", sorted(EXPECTED), ids=lambda r: f"{r[0]} {r[1]}")
async def test_role_matrix(world: World, route: tuple[str, str]) -> None:
    """Each role gets 403 exactly where the matrix says no; no token gets 401."""
    method, path = route
    url = concrete(world, path)
    # Mutations send an empty body: allowed roles then fail validation (400) or find nothing
    # (404) - either proves the role check let them through, without changing data.
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    if method == "DELETE":
        url = url.rsplit("/", 1)[0] + f"/{uuid.uuid4()}"
    for role in sorted(ALL):
        resp = await world.client.request(method, url, json=body,
                                          headers=world.auth(world.a.tokens[role]))
        text = await resp.text()
        if role in EXPECTED[route]:
            assert resp.status not in (401, 403), f"{role} {method} {url}: {resp.status} {text}"
        else:
            assert resp.status == 403, f"{role} {method} {url}: {resp.status} {text}"
            assert (await resp.json())["error"]["code"] == "forbidden"
    anonymous = await world.client.request(method, url, json=body)
    assert anonymous.status == 401


async def test_openapi_documents_every_route(world: World) -> None:
    """Every route of the router is in /api/openapi.json and vice versa."""
    resp = await world.client.get("/api/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = set()
    for resource in world.client.app.router.resources():
        info = resource.get_info()
        if "directory" in info or resource.canonical in NOT_OPERATIONS:
            continue  # static files, the console's page and its icon are not API operations
        for route in resource:
            if route.method != "HEAD":
                served.add((route.method, openapi_path(resource.canonical)))
    assert served == documented
    for (method, path), roles in EXPECTED.items():
        op = doc["paths"][path][method.lower()]
        assert set(op["x-roles"]) == roles
    # Request bodies reference schemas that exist.
    for item in doc["paths"].values():
        for op in item.values():
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}) \
                .get("schema", {}).get("$ref")
            if ref:
                assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


async def test_openapi_with_extensions_mounted(world: World) -> None:
    """With the integrations/jobs packages mounted, the document still covers the router."""
    app = create_app(api_settings(world.db, world.redis_url, extensions=True))
    doc = build_openapi(app[ROUTES_KEY])
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for resource in app.router.resources():
        if "directory" in resource.get_info() or resource.canonical in NOT_OPERATIONS:
            continue
        for route in resource:
            if route.method != "HEAD":
                assert (route.method, openapi_path(resource.canonical)) in documented, \
                    f"{route.method} {resource.canonical} is not registered through api.routing"


async def test_driver_sees_only_the_assigned_vehicle(world: World) -> None:
    """Driver: list has one vehicle, the other is 404 everywhere."""
    a = world.a
    headers = world.auth(a.tokens["driver"])
    listing = await (await world.client.get("/api/vehicles", headers=headers)).json()
    assert [v["id"] for v in listing["items"]] == [str(a.vehicles["assigned"])]
    other = a.vehicles["other"]
    for path in (f"/api/vehicles/{other}", f"/api/vehicles/{other}/telemetry",
                 f"/api/vehicles/{other}/track", f"/api/vehicles/{other}/trips"):
        resp = await world.client.get(path, headers=headers)
        assert resp.status == 404, path
    drivers = await (await world.client.get("/api/drivers", headers=headers)).json()
    assert [d["id"] for d in drivers["items"]] == [str(a.driver_id)]


async def test_cross_tenant_rest_denied(world: World) -> None:
    """Tenant B's admin cannot read, change or reference tenant A's rows."""
    a, headers = world.a, world.auth(world.b.tokens["admin"])
    vid = a.vehicles["assigned"]
    c = world.client
    assert (await c.get(f"/api/vehicles/{vid}", headers=headers)).status == 404
    assert (await c.patch(f"/api/vehicles/{vid}", json={"make": "X"},
                          headers=headers)).status == 404
    assert (await c.delete(f"/api/vehicles/{vid}", headers=headers)).status == 404
    assert (await c.get(f"/api/geofences/{a.geofence_id}", headers=headers)).status == 404
    assert (await c.get(f"/api/vehicles/{vid}/telemetry", headers=headers)).status == 404
    assert (await c.get(f"/api/drivers/{a.driver_id}", headers=headers)).status == 404
    listing = await (await c.get("/api/vehicles", headers=headers)).json()
    assert str(vid) not in {v["id"] for v in listing["items"]}
    # Foreign keys ignore RLS: references into another tenant are refused explicitly.
    resp = await c.post("/api/vehicles", json={"code": "sneaky", "assigned_driver_id":
                                               str(a.driver_id)}, headers=headers)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "assigned_driver_id"
    resp = await c.post("/api/devices", json={"vehicle_id": str(vid)}, headers=headers)
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "vehicle_id"
    # A token whose tenant claim was swapped is not a valid token.
    token = world.b.tokens["admin"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant_id"] = str(a.id)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    resp = await c.get("/api/vehicles", headers=world.auth(f"{head}.{forged}.{sig}"))
    assert resp.status == 401


async def test_cross_tenant_sql_as_application_role(world: World) -> None:
    """Row-level security: fleet_app bound to tenant B sees and changes nothing of tenant A."""
    a = world.a
    conn = await asyncpg.connect(world.db.app_url)
    try:
        # No tenant bound: nothing visible at all.
        assert await conn.fetchval("SELECT count(*) FROM vehicles") == 0
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.b.id))
            assert await conn.fetchval("SELECT count(*) FROM vehicles WHERE id = $1",
                                       a.vehicles["assigned"]) == 0
            assert await conn.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1",
                                       a.id) == 0
            status = await conn.execute("UPDATE vehicles SET make = 'x' WHERE id = $1",
                                        a.vehicles["assigned"])
            assert status == "UPDATE 0"
            status = await conn.execute("DELETE FROM geofences WHERE id = $1", a.geofence_id)
            assert status == "DELETE 0"
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.b.id))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("INSERT INTO vehicles (tenant_id, code) VALUES ($1, 'x')",
                                   a.id)
        # The application role may never change or remove audit rows.
        for sql in ("UPDATE audit_logs SET outcome = 'success'", "DELETE FROM audit_logs"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()
