"""Hostile input reaches no 500: NUL and lone surrogates in every parameter of every route,
empty values, whole-world and antimeridian bounding boxes (REST and WebSocket).

Parameters come from the route table itself (the same declarations as the OpenAPI document),
so a route added later is covered without editing this file.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp import WSMsgType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from api.routing import ROUTES_KEY, ApiRoute
from tests.api.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Text as an attacker sends it: NUL and lone surrogates are drawn often, not by luck.
HOSTILE = st.text(alphabet=st.one_of(
    st.sampled_from(["\x00", "\ud800", "\udfff", "%", "_", "\\", "'", ",", " "]),
    st.characters()), max_size=12)


def _wire(text: str) -> str:
    """Percent-encode as a client would put it on the wire (surrogates as their bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _query_routes(world: World) -> list[tuple[ApiRoute, str]]:
    routes: list[ApiRoute] = world.client.app[ROUTES_KEY]
    return [(r, p.name) for r in routes for p in r.params
            if p.location == "query" and r.path != "/api/live"]


def _path(world: World, route: ApiRoute) -> str:
    vid = world.a.vehicles["assigned"]
    return re.sub(r"\{[^}]+\}", str(vid), route.path)


async def _send(world: World, route: ApiRoute, query: str) -> tuple[int, dict[str, Any]]:
    url = URL(str(world.client.make_url(_path(world, route))) + "?" + query, encoded=True)
    headers = world.auth(world.a.tokens["admin"])
    async with world.client.session.request(route.method, url, headers=headers,
                                            json={} if route.method != "GET" else None
                                            ) as resp:
        text = await resp.text()
        body = json.loads(text) if resp.content_type == "application/json" and text else {}
        return resp.status, body


async def test_nul_in_each_parameter_is_a_400_naming_it(world: World) -> None:
    """The issue's examples, and then every query parameter of every route."""
    c, h = world.client, world.auth(world.a.tokens["admin"])
    for url, field in [("/api/vehicles?make=%00", "make"), ("/api/vehicles?q=%00", "q"),
                       ("/api/geofences?category=%00", "category"),
                       ("/api/vehicle-events?event_type=%00", "event_type"),
                       ("/api/anomalies?signal=%00", "signal")]:
        resp = await c.get(url, headers=h)
        assert resp.status == 400, (url, await resp.text())
        assert (await resp.json())["error"]["field"] == field
    for route, name in _query_routes(world):
        status, body = await _send(world, route, f"{name}=a%00b")
        assert status == 400, (route.method, route.path, name, body)
        assert body["error"]["field"] == name


async def test_nul_in_login_and_bodies_is_a_400_naming_the_field(world: World) -> None:
    """Unauthenticated login with a NUL e-mail; a nested body field; a path value."""
    c, h = world.client, world.auth(world.a.tokens["admin"])
    resp = await c.post("/api/auth/login", json={"email": "a\x00@example.com", "password": "x"})
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "email"
    fence = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
             "properties": {"name": "n", "radius_m": 10, "alert_recipients": ["ok", "b\x00"]}}
    resp = await c.post("/api/geofences", json=fence, headers=h)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "properties.alert_recipients[1]"
    # A path value: refused before any handler (and the audit row of the DELETE is kept).
    resp = await c.delete("/api/vehicles/%00", headers=h)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "id"


async def test_hostile_user_agent_still_writes_the_audit_row(world: World) -> None:
    """aiohttp decodes header bytes with surrogateescape: the audit row stores U+FFFD."""
    reader, writer = await asyncio.open_connection(world.client.host, world.client.port)
    body = b'{"email": "nobody@example.com", "password": "x"}'
    writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nUser-Agent: evil\xff\xfeagent\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        agent = await conn.fetchval(
            "SELECT user_agent FROM audit_logs WHERE action = 'auth.login' "
            "AND user_agent LIKE 'evil%' ORDER BY id DESC LIMIT 1")
    finally:
        await conn.close()
    assert agent == "evil\ufffd\ufffdagent"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_generated_text_in_every_parameter_is_never_a_5xx(world: World,
                                                                data: st.DataObject) -> None:
    """Any text in any query parameter of any route: a 2xx or 4xx, never a 5xx."""
    route, name = data.draw(st.sampled_from(_query_routes(world)))
    text = data.draw(HOSTILE)
    status, body = await _send(world, route, f"{name}={_wire(text)}")
    assert status < 500, (route.method, route.path, name, text, body)
    if "\x00" in text:
        assert status == 400
        assert body["error"]["field"] == name


def _uuid_spellings() -> st.SearchStrategy[str]:
    """UUIDs as Python's `UUID()` would read them, and text that is nearly one."""
    return st.one_of(
        st.uuids().flatmap(lambda u: st.sampled_from([
            str(u), str(u).upper(), u.hex, "{" + str(u) + "}", "urn:uuid:" + str(u),
            str(u)[:-1], str(u) + "0", " " + str(u), str(u).replace("-", "", 1)])),
        HOSTILE)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_a_uuid_parameter_reads_what_its_pattern_says(world: World,
                                                            data: st.DataObject) -> None:
    """Every UUID parameter (query or path) accepts exactly the values its documented
    pattern matches: a query value that does not match is a 400 naming it, a path value a
    404 (nothing can have that id); one that matches is never refused for its form.

    The class behind a fuzzer's find: a non-UUID `geofence_id` that only `format: uuid`
    (which JSON Schema validators do not check) called valid."""
    routes: list[ApiRoute] = world.client.app[ROUTES_KEY]
    params = [(r, p) for r in routes for p in r.params
              if p.schema.get("format") == "uuid" and r.path != "/api/live"]
    assert len(params) >= 10
    route, param = data.draw(st.sampled_from(params))
    pattern = param.schema["pattern"]
    text = data.draw(_uuid_spellings())
    matches = re.fullmatch(pattern, text) is not None
    h = world.auth(world.a.tokens["admin"])
    if param.location == "query":
        status, body = await _send(world, route, f"{param.name}={_wire(text)}")
        refused = status == 400 and body["error"].get("field") == param.name
        assert refused != matches, (route.method, route.path, text, status, body)
    else:
        url = URL(str(world.client.make_url(route.path.replace(
            "{" + param.name + "}", _wire(text)))), encoded=True)
        async with world.client.session.request(
                route.method, url, headers=h,
                json={} if route.method != "GET" else None) as resp:
            status = resp.status
        assert status < 500, (route.method, route.path, text)
        if not matches:
            assert status in (400, 404), (route.method, route.path, text, status)


async def test_empty_values_are_refused_not_ignored(world: World) -> None:
    """`?vehicle_id=` is a malformed value, not an absent parameter (docs/api.md); so is a
    parameter given twice."""
    h = world.auth(world.a.tokens["admin"])
    vid = world.a.vehicles["assigned"]
    for url, field in [("/api/positions?vehicle_id=", "vehicle_id"),
                       ("/api/vehicle-events?vehicle_id=", "vehicle_id"),
                       ("/api/vehicles?assigned_driver_id=", "assigned_driver_id"),
                       ("/api/geofences?kind=", "kind"),
                       (f"/api/vehicles/{vid}/trips?date=", "date"),
                       ("/api/vehicles?make=", "make"), ("/api/vehicles?page=", "page"),
                       ("/api/geofences?kind=circle&kind=x", "kind")]:
        resp = await world.client.get(url, headers=h)
        assert resp.status == 400, (url, await resp.text())
        assert (await resp.json())["error"]["field"] == field


async def test_undeclared_method_answers_405_with_allow(world: World) -> None:
    """RFC 9110: a 405 lists the methods the resource has."""
    resp = await world.client.request("TRACE", "/api/vehicles",
                                      headers=world.auth(world.a.tokens["admin"]))
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
    # The WebSocket's URL asked over plain HTTP says what it needs.
    resp = await world.client.get("/api/live")
    assert resp.status == 426
    assert resp.headers["Upgrade"] == "websocket"


# -- bounding boxes ------------------------------------------------------------------------

PLACES = {"berlin": (13.4, 52.5), "fiji": (179.5, -17.0), "samoa": (-179.5, -14.0)}


async def _place_vehicles(world: World) -> dict[str, uuid.UUID]:
    """One vehicle of tenant A at each place (vehicle_state, as the stream writes it)."""
    conn = await asyncpg.connect(world.db.app_url)
    ingest = await asyncpg.connect(world.db.ingest_url)
    ids: dict[str, uuid.UUID] = {}
    try:
        for name, (lon, lat) in PLACES.items():
            code = f"bb-{name}-{uuid.uuid4().hex[:6]}"
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                   str(world.a.id))
                ids[name] = await conn.fetchval(
                    "INSERT INTO vehicles (tenant_id, code) VALUES ($1, $2) RETURNING id",
                    world.a.id, code)
            await ingest.execute(
                "INSERT INTO vehicle_state (vehicle_id, tenant_id, time, last_seq, location) "
                "VALUES ($1, $2, $3, 1, ST_SetSRID(ST_MakePoint($4, $5), 4326)::geography)",
                ids[name], world.a.id, datetime.now(UTC), lon, lat)
    finally:
        await conn.close()
        await ingest.close()
    return ids


BOXES = [("-180,-90,180,90", {"berlin", "fiji", "samoa"}),  # the whole world
         ("170,-20,-170,-10", {"fiji", "samoa"}),           # across the antimeridian
         ("179,-20,180,-10", {"fiji"}), ("-180,-20,-179,-10", {"samoa"}),
         ("0,0,20,60", {"berlin"})]


async def test_bbox_whole_world_and_antimeridian_rest_and_live(world: World) -> None:
    """The same boxes over REST and in a WebSocket subscribe; both answer the same places."""
    ids = await _place_vehicles(world)
    names = {str(v): k for k, v in ids.items()}
    h = world.auth(world.a.tokens["admin"])
    for box, expected in BOXES:
        resp = await world.client.get(f"/api/positions?bbox={box}", headers=h)
        assert resp.status == 200, (box, await resp.text())
        found = {names[p["vehicle_id"]] for p in (await resp.json())["items"]
                 if p["vehicle_id"] in names}
        assert found == expected, box
        ws = await world.client.ws_connect("/api/live")
        try:
            await ws.send_json({"type": "subscribe", "token": world.a.tokens["admin"],
                                "bbox": [float(x) for x in box.split(",")]})
            subscribed = await asyncio.wait_for(ws.receive_json(), 10)
            assert subscribed["type"] == "subscribed", subscribed
            snapshot = await asyncio.wait_for(ws.receive_json(), 10)
            assert snapshot["type"] == "snapshot", snapshot
            live = {names[p["vehicle_id"]] for p in snapshot["positions"]
                    if p["vehicle_id"] in names}
            assert live == expected, box
        finally:
            await ws.close()


@pytest.mark.parametrize(("box", "status"), [
    ("0,10,20,5", 422), ("10,0,10,5", 422), ("-181,0,10,5", 422), ("0,-91,10,5", 422),
    ("1,2,3", 400), ("nan,0,1,1", 400), ("1_0,0,20,5", 400), ("", 400)])
async def test_bbox_that_is_not_a_box_is_refused(world: World, box: str, status: int) -> None:
    """REST answers 400/422 naming bbox; the WebSocket sends an error frame and 4400."""
    h = world.auth(world.a.tokens["admin"])
    resp = await world.client.get(f"/api/positions?bbox={box}", headers=h)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"]["field"] == "bbox"
    if status == 422:
        ws = await world.client.ws_connect("/api/live")
        await ws.send_json({"type": "subscribe", "token": world.a.tokens["admin"],
                            "bbox": [float(x) for x in box.split(",")]})
        frame = await asyncio.wait_for(ws.receive_json(), 10)
        assert frame["type"] == "error"
        assert frame["field"] == "bbox"
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type == WSMsgType.CLOSE
        assert ws.close_code == 4400


# Mostly valid WGS84 numbers, so that the draws reach GEOS rather than the range check.
_COORD = st.floats(-80, 80, allow_nan=False) | st.sampled_from([0, 0.0, 200.0])
_POSITIONS = st.lists(st.lists(_COORD, min_size=1, max_size=3).filter(lambda p: len(p) != 1)
                      | st.just([0.0, 0.0]), max_size=5)
GEOMETRIES = st.one_of(
    st.builds(lambda c: {"type": "Point", "coordinates": c}, st.lists(_COORD, max_size=3)),
    st.builds(lambda c: {"type": "LineString", "coordinates": c}, _POSITIONS),
    st.builds(lambda c: {"type": "Polygon", "coordinates": c}, st.lists(_POSITIONS, max_size=2)),
    st.builds(lambda c: {"type": "MultiPolygon", "coordinates": c},
              st.lists(st.lists(_POSITIONS, max_size=2), max_size=2)),
)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=GEOMETRIES)
@example(geometry={"type": "LineString", "coordinates": [[0.0, 0.0]]})
@example(geometry={"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]})
async def test_generated_geometry_is_never_a_5xx(world: World, geometry: dict[str, object]
                                                 ) -> None:
    """Any geometry shape GEOS may refuse to build (a one-point line, a two-point ring, empty
    arrays): a 4xx naming the geometry, never a 5xx (schemathesis found the one-point line)."""
    h = world.auth(world.a.tokens["admin"])
    resp = await world.client.post("/api/geofences", headers=h, json={
        "type": "Feature", "geometry": geometry,
        "properties": {"name": "g", "radius_m": 10, "corridor_width_m": 10}})
    assert resp.status < 500, (geometry, await resp.text())
    if resp.status == 201:
        fid = (await resp.json())["id"]
        assert (await world.client.delete(f"/api/geofences/{fid}", headers=h)).status == 204


async def test_a_taken_email_is_a_409_conflict(world: World) -> None:
    """Schema-valid but taken (schemathesis sent the same address twice): 409, not 400."""
    h = world.auth(world.a.tokens["admin"])
    body = {"email": f"dup-{uuid.uuid4().hex[:8]}@example.com", "role": "fleet_manager",
            "password": "Str0ng!Passw0rd#2026"}
    assert (await world.client.post("/api/users", headers=h, json=body)).status == 201
    again = await world.client.post("/api/users", headers=h, json=body)
    assert again.status == 409
    assert (await again.json())["error"]["field"] == "email"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lon=st.floats(-180, 180), lat=st.floats(-90, 90),
       radius=st.floats(0.01, 20_000_000))
@example(lon=2.3369725133650688e-221, lat=-13.030439504364395, radius=19819698.67116016)
async def test_a_circle_of_any_documented_size_anywhere_is_never_a_5xx(
        world: World, lon: float, lat: float, radius: float) -> None:
    """The fuzzer's find: a circle of 19,820 km at 13 degrees south made PostGIS fail while
    computing the zone ("Point outside of projection domain"), a 500. Any centre and any
    radius the document allows is stored or refused with a 422 naming the geometry."""
    fence = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
             "properties": {"name": "c", "kind": "circle", "radius_m": radius}}
    resp = await world.client.post("/api/geofences", json=fence,
                                    headers=world.auth(world.a.tokens["admin"]))
    assert resp.status in (201, 422), (resp.status, await resp.text())
    if resp.status == 422:
        assert (await resp.json())["error"]["field"] == "geometry"
    else:
        fid = (await resp.json())["id"]
        await world.client.delete(f"/api/geofences/{fid}",
                                  headers=world.auth(world.a.tokens["admin"]))
