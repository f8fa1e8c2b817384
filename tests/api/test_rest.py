"""REST resources against the real database: vehicles, drivers, geofences, telemetry,
trips, events, dashboard, devices, errors and operations endpoints."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import asyncpg
import msgspec
import pytest

from api.broker_logins import mosquitto_hash
from core.mqtt_url import parse_mqtt_url
from edge_gateway.config import GatewayProcessSettings
from tests.api.conftest import World, login, seed_tenant

pytestmark = pytest.mark.asyncio(loop_scope="session")


def H(world: World, role: str = "admin") -> dict[str, str]:  # noqa: N802 - short helper
    """Tenant A headers for a role."""
    return world.auth(world.a.tokens[role])


async def test_vehicle_crud_pagination_and_validation(world: World) -> None:
    """Create, list with page/limit/filters, update, delete; errors name the field."""
    c = world.client
    prefix = f"crud{uuid.uuid4().hex[:4]}"
    ids = []
    for i in range(3):
        resp = await c.post("/api/vehicles", headers=H(world), json={
            "code": f"{prefix}-{i}", "make": "Iveco", "year": 2020 + i,
            "status": "maintenance" if i == 2 else "active"})
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    dup = await c.post("/api/vehicles", headers=H(world), json={"code": f"{prefix}-0"})
    assert dup.status == 409
    bad = await c.post("/api/vehicles", headers=H(world), json={"code": "x", "year": 1800})
    assert bad.status == 400
    assert (await bad.json())["error"]["field"] == "year"
    bad = await c.post("/api/vehicles", headers=H(world), json={"code": "bad code!"})
    assert (await bad.json())["error"]["field"] == "code"
    bad = await c.post("/api/vehicles", headers=H(world), json={"code": "ok", "wheels": 4})
    assert bad.status == 400
    too_many = await c.get("/api/vehicles?limit=101", headers=H(world))
    assert too_many.status == 400
    assert (await too_many.json())["error"]["field"] == "limit"
    page = await (await c.get(f"/api/vehicles?q={prefix}&limit=2&page=2",
                              headers=H(world))).json()
    assert page["total"] == 3
    assert [v["code"] for v in page["items"]] == [f"{prefix}-2"]
    maint = await (await c.get(f"/api/vehicles?q={prefix}&status=maintenance",
                               headers=H(world))).json()
    assert [v["code"] for v in maint["items"]] == [f"{prefix}-2"]
    # The list is cached (the second identical request is a hit); an update invalidates it.
    await c.get(f"/api/vehicles?q={prefix}", headers=H(world))
    await c.get(f"/api/vehicles?q={prefix}", headers=H(world))
    resp = await c.patch(f"/api/vehicles/{ids[0]}", headers=H(world),
                         json={"make": "Scania", "assigned_driver_id": str(world.a.driver_id)})
    assert resp.status == 200
    assert (await resp.json())["make"] == "Scania"
    listing = await (await c.get(f"/api/vehicles?q={prefix}", headers=H(world))).json()
    assert {v["make"] for v in listing["items"]} == {"Scania", "Iveco"}
    metrics = await (await c.get("/metrics")).text()
    assert 'fleet_api_cache_total{cache="vehicles",result="hit"}' in metrics
    assert (await c.delete(f"/api/vehicles/{ids[1]}", headers=H(world))).status == 204
    assert (await c.get(f"/api/vehicles/{ids[1]}", headers=H(world))).status == 404
    assert (await c.get("/api/vehicles/not-a-uuid", headers=H(world))).status == 404


async def test_drivers_and_users(world: World) -> None:
    """Driver records CRUD; a new user account can log in."""
    c = world.client
    resp = await c.post("/api/drivers", headers=H(world, "fleet_manager"), json={
        "first_name": "Ada", "last_name": "Lovelace", "license_expiry": "2030-01-31"})
    assert resp.status == 201
    did = (await resp.json())["id"]
    resp = await c.patch(f"/api/drivers/{did}", headers=H(world), json={"status": "suspended"})
    assert (await resp.json())["status"] == "suspended"
    bad = await c.patch(f"/api/drivers/{did}", headers=H(world), json={"status": "sleepy"})
    assert (await bad.json())["error"]["field"] == "status"
    email = f"new{uuid.uuid4().hex[:6]}@example.com"
    resp = await c.post("/api/users", headers=H(world), json={
        "email": email, "password": "Str0ng!Passw0rd", "role": "viewer"})
    assert resp.status == 201
    assert "password_hash" not in await resp.json()
    login = await c.post("/api/auth/login", json={"email": email, "password": "Str0ng!Passw0rd"})
    assert login.status == 200


BOWTIE = {"type": "Feature", "properties": {"name": "Bow tie"}, "geometry": {
    "type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.1], [13.1, 52.0], [13.0, 52.1],
                                        [13.0, 52.0]]]}}
SQUARE = {"type": "Feature", "properties": {"name": "Yard", "speed_limit_kph": 20},
          "geometry": {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.01, 52.0],
                                                           [13.01, 52.01], [13.0, 52.01],
                                                           [13.0, 52.0]]]}}


async def test_geofences_geojson(world: World) -> None:
    """Valid Features round-trip; invalid geometry is a 400 that says where."""
    c, h = world.client, H(world, "fleet_manager")
    resp = await c.post("/api/geofences", headers=h, json=SQUARE)
    assert resp.status == 201, await resp.text()
    square = await resp.json()
    assert square["type"] == "Feature"
    assert square["geometry"]["type"] == "Polygon"
    assert square["properties"]["kind"] == "polygon"
    assert square["properties"]["speed_limit_kph"] == 20
    # Left out, debounce_s is null: the fence follows the fleet's setting (docs/geofencing.md).
    assert square["properties"]["debounce_s"] is None
    resp = await c.post("/api/geofences", headers=h, json=BOWTIE)
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["field"] == "geometry"
    assert "Self-intersection" in err["message"]
    assert "13.05" in err["message"]  # the crossing point
    unclosed = {**SQUARE, "geometry": {"type": "Polygon", "coordinates": [
        [[13.0, 52.0], [13.01, 52.0], [13.01, 52.01], [13.0, 52.01]]]}}
    resp = await c.post("/api/geofences", headers=h, json=unclosed)
    assert (await resp.json())["error"]["field"] == "geometry.coordinates"
    swapped = {"type": "Feature", "properties": {"name": "x", "radius_m": 10},
               "geometry": {"type": "Point", "coordinates": [13.0, 152.0]}}
    resp = await c.post("/api/geofences", headers=h, json=swapped)
    assert "longitude/latitude" in (await resp.json())["error"]["message"]
    no_radius = {"type": "Feature", "properties": {"name": "c"},
                 "geometry": {"type": "Point", "coordinates": [13.0, 52.0]}}
    resp = await c.post("/api/geofences", headers=h, json=no_radius)
    assert (await resp.json())["error"]["field"] == "properties.radius_m"
    corridor = {"type": "Feature", "properties": {"name": "A100", "corridor_width_m": 50},
                "geometry": {"type": "LineString", "coordinates": [[13.0, 52.0], [13.2, 52.1]]}}
    resp = await c.post("/api/geofences", headers=h, json=corridor)
    assert resp.status == 201
    assert (await resp.json())["properties"]["kind"] == "corridor"
    wrong_kind = {**corridor, "properties": {"name": "x", "kind": "circle", "radius_m": 5}}
    resp = await c.post("/api/geofences", headers=h, json=wrong_kind)
    assert (await resp.json())["error"]["field"] == "geometry.type"
    fc = await (await c.get("/api/geofences?kind=polygon", headers=h)).json()
    assert fc["type"] == "FeatureCollection"
    assert square["id"] in {f["id"] for f in fc["features"]}
    moved = {**SQUARE, "properties": {"name": "Yard 2", "debounce_s": 5}}
    resp = await c.put(f"/api/geofences/{square['id']}", headers=h, json=moved)
    assert (await resp.json())["properties"]["name"] == "Yard 2"
    assert (await resp.json())["properties"]["debounce_s"] == 5
    back = {**SQUARE, "properties": {"name": "Yard 2", "debounce_s": None}}
    resp = await c.put(f"/api/geofences/{square['id']}", headers=h, json=back)
    assert (await resp.json())["properties"]["debounce_s"] is None
    assert (await c.delete(f"/api/geofences/{square['id']}", headers=h)).status == 204


DAY = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)


async def _insert_day(world: World, vehicle_id: uuid.UUID) -> None:
    """A trip of 120 s, a 300 s stop with the engine idling, a trip of 120 s, ignition off."""
    rows = []
    t = DAY
    seq = 0
    plan = [(120, 50.0, True), (300, 0.0, True), (120, 40.0, True), (60, 0.0, False)]
    lon = 13.0
    for duration, speed, ignition in plan:
        for _ in range(duration):
            seq += 1
            lon += speed / 3600 / 68  # roughly km per degree of longitude at 52N
            rows.append((t, world.a.id, vehicle_id, seq, round(lon * 1e7), 525_000_000, speed,
                         90.0, ignition, 1000 + seq * 0.01, "simulator"))
            t += timedelta(seconds=1)
    conn = await asyncpg.connect(world.db.ingest_url)
    try:
        await conn.executemany(
            "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lon_e7, lat_e7, speed_kph, "
            "heading_deg, ignition, odometer_km, source) VALUES ($1, $2, $3, $4, "
            "$5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING", rows)
    finally:
        await conn.close()


async def test_telemetry_history_track_and_trips(world: World) -> None:
    """Raw and bucketed history, a LineString track, and trips/stops of the day."""
    vid = world.a.vehicles["assigned"]
    await _insert_day(world, vid)
    c, h = world.client, H(world, "driver")
    start, end = DAY.isoformat(), (DAY + timedelta(minutes=10)).isoformat()
    q = f"from={start}&to={end}".replace("+", "%2B")
    raw = await (await c.get(f"/api/vehicles/{vid}/telemetry?{q}&resolution=raw&max_points="
                             "5000", headers=h)).json()
    assert raw["source"] == "telemetry"
    assert raw["bucket_s"] == 0
    assert len(raw["points"]) == 600
    coarse = await (await c.get(f"/api/vehicles/{vid}/telemetry?{q}&max_points=10",
                                headers=h)).json()
    assert coarse["bucket_s"] == 61
    assert 1 < len(coarse["points"]) <= 11
    assert sum(p["samples"] for p in coarse["points"]) == 600
    track = await (await c.get(f"/api/vehicles/{vid}/track?{q}&max_points=5000",
                               headers=h)).json()
    assert track["geometry"]["type"] == "LineString"
    assert len(track["geometry"]["coordinates"]) == 600
    assert track["geometry"]["coordinates"][0][1] == pytest.approx(52.5)
    trips = await (await c.get(f"/api/vehicles/{vid}/trips?date=2026-01-15",
                               headers=h)).json()
    assert len(trips["trips"]) == 2
    assert len(trips["stops"]) == 1
    assert trips["stops"][0]["duration_s"] >= 180
    assert trips["trips"][0]["max_speed_kph"] == 50
    bad = await c.get(f"/api/vehicles/{vid}/telemetry?from=yesterday", headers=h)
    assert (await bad.json())["error"]["field"] == "from"


async def test_positions_events_anomalies_dashboard(world: World) -> None:
    """Latest positions with bbox; events with filters and pagination; cached dashboard."""
    a = world.a
    vid = a.vehicles["other"]
    now = datetime.now(UTC)
    conn = await asyncpg.connect(world.db.ingest_url)
    try:
        await conn.execute(
            "INSERT INTO vehicle_state (vehicle_id, tenant_id, time, last_seq, location, "
            "speed_kph, moving) VALUES ($1, $2, $3, 1, ST_GeogFromText('POINT(13.4 52.5)'), 30,"
            " true) ON CONFLICT (vehicle_id) DO UPDATE SET time = EXCLUDED.time, "
            "location = EXCLUDED.location", vid, a.id, now)
        for i, et in enumerate(("enter", "exit", "enter")):
            await conn.execute(
                "INSERT INTO geofence_events (time, tenant_id, vehicle_id, geofence_id, "
                "event_type, location) VALUES ($1, $2, $3, $4, $5, "
                "ST_GeogFromText('POINT(13.4 52.5)'))",
                now - timedelta(minutes=10 - i), a.id, vid, a.geofence_id, et)
        await conn.execute(
            "INSERT INTO vehicle_events (time, tenant_id, vehicle_id, event_type, severity, "
            "value, threshold) VALUES ($1, $2, $3, 'overspeed', 'warning', 92, 80)",
            now - timedelta(minutes=5), a.id, vid)
        await conn.execute(
            "INSERT INTO anomalies (time, tenant_id, vehicle_id, signal, value, score, "
            "threshold, is_event) VALUES ($1, $2, $3, 'coolant_temp_c', 118, 7.5, 5, true)",
            now - timedelta(minutes=3), a.id, vid)
        # Tenant B's event must never show up for A.
        await conn.execute(
            "INSERT INTO vehicle_events (time, tenant_id, vehicle_id, event_type) "
            "VALUES ($1, $2, $3, 'overspeed')", now, world.b.id, world.b.vehicles["other"])
    finally:
        await conn.close()
    c, h = world.client, H(world, "viewer")
    pos = await (await c.get("/api/positions?bbox=13,52,14,53", headers=h)).json()
    assert [p["vehicle_id"] for p in pos["items"]] == [str(vid)]
    none = await (await c.get("/api/positions?bbox=0,0,1,1", headers=h)).json()
    assert none["items"] == []
    bad = await c.get("/api/positions?bbox=1,2,3", headers=h)
    assert (await bad.json())["error"]["field"] == "bbox"
    ge = await (await c.get("/api/geofence-events?event_type=enter&limit=1&page=2",
                            headers=h)).json()
    assert ge["total"] == 2
    assert len(ge["items"]) == 1
    assert ge["items"][0]["geofence_name"] == "Depot"
    ve = await (await c.get("/api/vehicle-events?severity=warning", headers=h)).json()
    assert [e["event_type"] for e in ve["items"]] == ["overspeed"]
    assert ve["items"][0]["vehicle_code"] == "other"
    an = await (await c.get("/api/anomalies?events_only=true", headers=h)).json()
    assert an["items"][0]["signal"] == "coolant_temp_c"
    dash1 = await (await c.get("/api/dashboard", headers=h)).json()
    assert dash1["vehicles_total"] >= 2
    assert dash1["vehicle_events_24h"] == {"overspeed": 1}
    assert dash1["online"] >= 1
    dash2 = await (await c.get("/api/dashboard", headers=H(world, "admin"))).json()
    assert dash2["computed_at"] == dash1["computed_at"]  # served from the 1 h cache


async def test_dashboard_distance_today(world: World) -> None:
    """Distance driven today (UTC) by the tenant's vehicles, from the 1-minute rollup."""
    conn = await asyncpg.connect(world.db.app_url)
    try:
        tenant = await seed_tenant(conn, "dist")  # a tenant of its own: no cached dashboard
    finally:
        await conn.close()
    owner = await asyncpg.connect(world.db.owner_url)
    try:
        # 100 samples 25 m apart at the start of today (UTC), and one yesterday that must not count.
        await owner.execute(
            "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source, received_at, "
            "distance_m) SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
            "+ s * interval '1 second', $1, $2, s, 'simulator', now(), 25 "
            "FROM generate_series(1, 100) AS s", tenant.id, tenant.vehicles["assigned"])
        await owner.execute(
            "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source, received_at, "
            "distance_m) VALUES (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
            "- interval '1 hour', $1, $2, 0, 'simulator', now(), 5000)",
            tenant.id, tenant.vehicles["assigned"])
    finally:
        await owner.close()
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world.db.refresh_rollups((day - timedelta(days=1)).isoformat(),
                             (day + timedelta(days=1)).isoformat())
    token = await login(world.client, tenant.users["fleet_manager"])
    dash = await (await world.client.get("/api/dashboard",
                                         headers=world.auth(token))).json()
    assert dash["distance_today_km"] == 2.5


async def test_device_provisioning(world: World) -> None:
    """A device gets "{tenant}/{vehicle}" credentials, a Mosquitto hash and a gateway TOML."""
    c, h = world.client, H(world)
    resp = await c.post("/api/vehicles", headers=h, json={"code": f"gw{uuid.uuid4().hex[:5]}"})
    vehicle = await resp.json()
    resp = await c.post("/api/devices", headers=h, json={"vehicle_id": vehicle["id"],
                                                         "serial": "RPI-1"})
    assert resp.status == 201, await resp.text()
    device = await resp.json()
    assert device["mqtt_username"] == f"{world.a.slug}/{vehicle['code']}"
    config = tomllib.loads(device["gateway_config"])
    assert config["gateway"] == {"tenant": world.a.slug, "vehicle": vehicle["code"]}
    # The file is a valid configuration of `fleet gateway`.
    gateway = msgspec.convert(config, GatewayProcessSettings)
    assert gateway.gateway.vehicle == vehicle["code"]
    target = parse_mqtt_url(config["mqtt"]["url"])
    assert target.username == device["mqtt_username"]
    assert target.password == device["mqtt_password"]
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        stored = await conn.fetchval("SELECT mqtt_password_hash FROM devices WHERE id = $1",
                                     uuid.UUID(device["id"]))
    finally:
        await conn.close()
    _, seven, iterations, salt, digest = stored.split("$")
    assert seven == "7"
    assert mosquitto_hash(device["mqtt_password"], salt=base64.b64decode(salt),
                          iterations=int(iterations)) == stored
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac(
        "sha512", device["mqtt_password"].encode(), base64.b64decode(salt), int(iterations))
    again = await c.post("/api/devices", headers=h, json={"vehicle_id": vehicle["id"]})
    assert again.status == 409
    listing = await (await c.get("/api/devices", headers=H(world, "technician"))).json()
    assert "mqtt_password_hash" not in listing["items"][0]
    assert (await c.delete(f"/api/devices/{device['id']}", headers=h)).status == 204
    revoked = await (await c.get(f"/api/devices/{device['id']}", headers=h)).json()
    assert revoked["status"] == "revoked"
    # Revoked, the vehicle can be provisioned again.
    assert (await c.post("/api/devices", headers=h,
                         json={"vehicle_id": vehicle["id"]})).status == 201


async def _vehicle_with_device(client: Any, h: dict[str, str], code: str
                               ) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """A new vehicle, its provisioned device, and the device's MQTT target (with login)."""
    vehicle = await (await client.post("/api/vehicles", headers=h, json={"code": code})).json()
    resp = await client.post("/api/devices", headers=h, json={"vehicle_id": vehicle["id"]})
    assert resp.status == 201, await resp.text()
    device = await resp.json()
    return vehicle, device, parse_mqtt_url(
        tomllib.loads(device["gateway_config"])["mqtt"]["url"])


async def test_device_login_works_on_the_local_broker(world: World, make_client: Any) -> None:
    """In "dynsec" mode the returned credentials log in to the project's Mosquitto, with the
    login as client id."""
    client = make_client(mqtt_credentials="dynsec")
    await client.start_server()
    try:
        h = H(world)
        code = f"mq{uuid.uuid4().hex[:6]}"
        _, device, target = await _vehicle_with_device(client, h, code)
        async with aiomqtt.Client(target.host, target.port, username=target.username,
                                  password=target.password, identifier=target.username,
                                  timeout=10) as mqtt:
            await mqtt.publish(f"fleet/v1/{world.a.slug}/{code}/status", b"{}", qos=1)
        assert (await client.delete(f"/api/devices/{device['id']}", headers=h)).status == 204
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(target.host, target.port, username=target.username,
                                      password=target.password, identifier=target.username,
                                  timeout=10):
                pass
    finally:
        await client.close()


async def test_provisioning_without_a_broker_admin_says_what_to_set(world: World,
                                                                   make_client: Any) -> None:
    """With "dynsec" but no admin login the API still serves; provisioning is a 503 naming
    the setting, and leaves no device behind."""
    client = make_client(mqtt_credentials="dynsec", mqtt_admin_url="")
    await client.start_server()
    try:
        h = H(world)
        vehicle = await (await client.post("/api/vehicles", headers=h, json={
            "code": f"na{uuid.uuid4().hex[:6]}"})).json()
        resp = await client.post("/api/devices", headers=h, json={"vehicle_id": vehicle["id"]})
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "broker_not_configured"
        assert "api.mqtt_admin_url" in error["message"]
        conn = await asyncpg.connect(world.db.owner_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM devices WHERE vehicle_id = $1",
                                       uuid.UUID(vehicle["id"])) == 0
        finally:
            await conn.close()
    finally:
        await client.close()


async def _session_ends(mqtt: Any, topic: str, *, within_s: float) -> bool:
    """Whether the broker ends `mqtt`'s session within `within_s` (a QoS 1 publish fails)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            await mqtt.publish(topic, b"{}", qos=1, timeout=2)
        except aiomqtt.MqttError:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_device_lives_and_dies_with_its_vehicle(world: World,
                                                      make_client: Any) -> None:
    """Issue #23, finding 3: a vehicle's code cannot change under its device, deleting the
    vehicle revokes the device (its live session ends, its login no longer works), and a new
    vehicle with the same code gets a device of its own that the old login cannot use."""
    client = make_client(mqtt_credentials="dynsec")
    await client.start_server()
    try:
        h = H(world)
        code = f"lv{uuid.uuid4().hex[:6]}"
        vehicle, device, old = await _vehicle_with_device(client, h, code)
        renamed = await client.patch(f"/api/vehicles/{vehicle['id']}", headers=h,
                                     json={"code": f"{code}x"})
        assert renamed.status == 409, await renamed.text()
        assert (await renamed.json())["error"]["field"] == "code"
        # The same code, or another field, is not a rename.
        assert (await client.patch(f"/api/vehicles/{vehicle['id']}", headers=h,
                                   json={"code": code, "make": "Iveco"})).status == 200
        topic = f"fleet/v1/{world.a.slug}/{code}/status"
        live = aiomqtt.Client(old.host, old.port, username=old.username,
                              password=old.password, identifier=old.username,
                                  timeout=10)
        await live.__aenter__()
        try:
            await live.publish(topic, b"{}", qos=1)
            assert (await client.delete(f"/api/vehicles/{vehicle['id']}",
                                        headers=h)).status == 204
            # The broker ends the session of a login that no longer holds.
            assert await _session_ends(live, topic, within_s=10)
        finally:
            with contextlib.suppress(aiomqtt.MqttError):
                await live.__aexit__(None, None, None)
        again = await (await client.get(f"/api/devices/{device['id']}", headers=h)).json()
        assert again["status"] == "revoked"
        assert again["vehicle_id"] is None
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(old.host, old.port, username=old.username,
                                      password=old.password, identifier=old.username,
                                  timeout=10):
                pass
        # A new vehicle with the same code: provisioned afresh, the old login still refused.
        second = await (await client.post("/api/vehicles", headers=h,
                                          json={"code": code})).json()
        resp = await client.post("/api/devices", headers=h, json={"vehicle_id": second["id"]})
        assert resp.status == 201, await resp.text()
        new = parse_mqtt_url(tomllib.loads((await resp.json())["gateway_config"])["mqtt"]["url"])
        assert new.username == old.username
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(old.host, old.port, username=old.username,
                                      password=old.password, identifier=old.username,
                                  timeout=10):
                pass
        async with aiomqtt.Client(new.host, new.port, username=new.username,
                                  password=new.password, identifier=new.username,
                                  timeout=10) as mqtt:
            await mqtt.publish(f"fleet/v1/{world.a.slug}/{code}/status", b"{}", qos=1)
    finally:
        await client.close()


async def test_errors_and_operations(world: World) -> None:
    """Stable error shape for unknown routes and bad JSON; health, readiness, metrics."""
    c = world.client
    resp = await c.get("/api/nothing-here", headers=H(world))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await c.post("/api/vehicles", headers={**H(world), "Content-Type":
                                                  "application/json"}, data=b"{not json")
    assert (await resp.json())["error"]["field"] == "body"
    assert (await c.get("/healthz")).status == 200
    ready = await (await c.get("/readyz")).json()
    assert ready["status"] == "ready"
    metrics = await (await c.get("/metrics")).text()
    assert "fleet_api_requests_total" in metrics
    assert (await (await c.get("/api/map-config")).json())["tiles_url"] == ""
    page = await c.get("/")
    assert "/static/app/console.js" in await page.text()
    assert (await c.get("/static/app/console.js")).status == 200


async def test_metrics_show_how_each_job_last_ended(world: World, make_client: Any) -> None:
    """Issue #24, finding 2: a partial run (and its dead letters) shows where an operator's
    alerting looks, not only in job_runs."""
    partial, fine = f"archive-{uuid.uuid4().hex[:6]}", f"rollups-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        await conn.execute(
            "INSERT INTO job_state (job, last_success_at) VALUES ($1, '2026-12-01T00:00:00Z'),"
            " ($2, '2026-12-07T10:00:00Z')", partial, fine)
        await conn.execute(
            "INSERT INTO job_runs (job, runner, started_at, finished_at, status, error, details)"
            " VALUES ($1, 'r', '2026-12-06T00:00:00Z', '2026-12-06T00:01:00Z', 'succeeded',"
            " NULL, '{}'), ($1, 'r', '2026-12-07T00:00:00Z', '2026-12-07T00:02:00Z', 'partial',"
            " '25 failed: ...', $3::jsonb), ($1, 'r', now(), NULL, 'running', NULL, '{}'),"
            " ($2, 'r', '2026-12-07T10:00:00Z', '2026-12-07T10:00:05Z', 'succeeded', NULL, '{}')",
            partial, fine, '{"failures": ["a", "b"], "failure_count": 25,'
            ' "rows_dead_lettered": 3}')
    finally:
        await conn.close()
    client = make_client()
    await client.start_server()
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    for line in (f'fleet_job_last_run_status{{job="{partial}",status="partial"}} 1.0',
                 f'fleet_job_last_run_status{{job="{partial}",status="succeeded"}} 0.0',
                 f'fleet_job_last_run_failures{{job="{partial}"}} 25.0',
                 f'fleet_job_last_run_dead_letter_rows{{job="{partial}"}} 3.0',
                 f'fleet_job_last_success_timestamp_seconds{{job="{partial}"}} 1.7960832e+09',
                 f'fleet_job_last_run_status{{job="{fine}",status="succeeded"}} 1.0',
                 f'fleet_job_last_run_failures{{job="{fine}"}} 0.0'):
        assert line in text, line
