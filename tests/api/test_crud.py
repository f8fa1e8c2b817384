"""The tenant resources' declarations (api/routes/crud.py): the routes they generate carry the
declared roles and parameters, and a list's filters combine as their SQL says, for any
combination (generated), with the driver's scope on top."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.auth import ROLES
from api.routes.crud import TenantResource
from api.routes.devices import DEVICES
from api.routes.drivers import DRIVERS
from api.routes.geofences import GEOFENCES
from api.routes.vehicles import VEHICLES
from api.routing import ROUTES_KEY, ApiRoute
from tests.api.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="session")

RESOURCES = (DRIVERS, VEHICLES, DEVICES, GEOFENCES)


def _routes(world: World, res: TenantResource) -> dict[tuple[str, str], ApiRoute]:
    return {(r.method, r.path): r for r in world.client.app[ROUTES_KEY]
            if r.path in (res.path, res.item_path)}


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.noun)
async def test_each_declaration_generates_its_routes_with_its_roles(
        world: World, res: TenantResource) -> None:
    """Reads take the read roles, writes the write roles, both sets from the role table;
    every item route has the `{id}` parameter and every mutating one audits as the noun."""
    routes = _routes(world, res)
    assert ("GET", res.path) in routes
    assert ("GET", res.item_path) in routes
    assert ("DELETE", res.item_path) in routes
    for (method, path), route in routes.items():
        assert route.roles == (res.read_roles if method == "GET" else res.write_roles)
        assert set(route.roles or ()) <= set(ROLES)
        if path == res.item_path:
            assert [p.name for p in route.params if p.location == "path"] == ["id"]
        if method != "GET":
            assert route.resource == res.noun


async def test_the_vehicle_list_documents_each_declared_filter(world: World) -> None:
    """What the declaration filters on is what the document offers, and nothing else."""
    listing = _routes(world, VEHICLES)["GET", VEHICLES.path]
    assert [p.name for p in listing.params] == [
        "page", "limit", *(f.param.name for f in VEHICLES.filters)]


_MAKES = ("Iveco", "iveco", "Sca%nia", "MAN_1", None)
_STATUSES = ("active", "maintenance", "retired")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fleet(world: World) -> dict[str, Any]:
    """A dozen vehicles of one prefix with makes, statuses, plates and drivers to filter on."""
    prefix = f"flt{uuid.uuid4().hex[:5]}"
    headers = world.auth(world.a.tokens["admin"])
    made = []
    for i in range(12):
        body = {"code": f"{prefix}-{i:02d}", "make": _MAKES[i % len(_MAKES)],
                "status": _STATUSES[i % len(_STATUSES)],
                "license_plate": f"P{i % 4}-{prefix}",
                "assigned_driver_id": str(world.a.driver_id) if i % 3 == 0 else None}
        resp = await world.client.post("/api/vehicles", headers=headers, json=body)
        assert resp.status == 201, await resp.text()
        made.append(await resp.json())
    return {"prefix": prefix, "vehicles": made}


def _matches(v: dict[str, Any], query: dict[str, str]) -> bool:
    """The filters' documented meaning, in Python."""
    if "status" in query and v["status"] != query["status"]:
        return False
    if "assigned_driver_id" in query and v["assigned_driver_id"] != query["assigned_driver_id"]:
        return False
    if "make" in query and (v["make"] or "").lower() != query["make"].lower():
        return False
    text = query["q"].lower()
    return any(text in (v[c] or "").lower() for c in ("code", "license_plate", "vin"))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_combination_of_list_filters_returns_exactly_the_matching_rows(
        world: World, fleet: dict[str, Any], data: st.DataObject) -> None:
    """Every subset of the vehicle list's filters, any page size: the rows (over all pages)
    and the total are exactly those the filters' meaning selects, for a manager and for a
    driver (who sees only the assigned vehicles on top)."""
    prefix = fleet["prefix"]
    query: dict[str, str] = {"q": data.draw(st.sampled_from(
        [prefix, f"{prefix}-0", "P1-" + prefix, f"{prefix}-1"]))}
    if data.draw(st.booleans()):
        query["status"] = data.draw(st.sampled_from(_STATUSES))
    if data.draw(st.booleans()):
        query["make"] = data.draw(st.sampled_from([m for m in _MAKES if m] + ["sca%NIA"]))
    if data.draw(st.booleans()):
        query["assigned_driver_id"] = str(world.a.driver_id)
    role = data.draw(st.sampled_from(["fleet_manager", "driver"]))
    limit = data.draw(st.integers(1, 5))
    expected = sorted(v["code"] for v in fleet["vehicles"] if _matches(v, query)
                      and (role != "driver"
                           or v["assigned_driver_id"] == str(world.a.driver_id)))
    headers = world.auth(world.a.tokens[role])
    codes: list[str] = []
    page = 1
    while True:
        resp = await world.client.get("/api/vehicles", headers=headers,
                                      params={**query, "limit": str(limit), "page": str(page)})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["total"] == len(expected), (query, role)
        codes += [v["code"] for v in body["items"]]
        if page * limit >= body["total"]:
            break
        page += 1
    assert codes == expected, (query, role)
