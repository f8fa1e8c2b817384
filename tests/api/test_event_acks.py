"""Acknowledging alerts: one per event, who and when, audited, shown in the event lists and
sent live to every dispatcher of the tenant who watches the vehicle (and to nobody else)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientWebSocketResponse

from api.live_socket import Dropped, LiveClient, TenantFeed
from api.metrics import ApiMetrics
from api.params import parse_time
from api.routes.acks import COMMENT_MAX_CHARS, epoch_ms
from core.live import LiveAck, LiveEvent, LivePosition, decode_live, encode_live, live_channel
from tests.api.conftest import Tenant, World
from tests.api.test_live_socket import subscribe, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass(frozen=True)
class Events:
    """One event of each kind about one vehicle, as the lists show them."""

    vehicle: dict[str, Any]
    geofence: dict[str, Any]
    anomaly: dict[str, Any]


def _when(minutes_ago: float) -> datetime:
    """A time as the stream stores one: whole milliseconds."""
    t = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


async def insert_events(world: World, tenant: Tenant, code: str, minutes_ago: float) -> datetime:
    """A vehicle event, a geofence event, a fired and an unfired anomaly at one time."""
    vid, t = tenant.vehicles[code], _when(minutes_ago)
    async with await psycopg.AsyncConnection.connect(world.db.owner_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO vehicle_events (time, tenant_id, vehicle_id, event_type, severity, "
            "value, threshold) VALUES (%s, %s, %s, 'overspeed', 'warning', 97, 80)",
            (t, tenant.id, vid))
        await conn.execute(
            "INSERT INTO geofence_events (time, tenant_id, vehicle_id, geofence_id, event_type,"
            " location) VALUES (%s, %s, %s, %s, 'enter', ST_GeogFromText('POINT(13.4 52.52)'))",
            (t, tenant.id, vid, tenant.geofence_id))
        await conn.execute(
            "INSERT INTO anomalies (time, tenant_id, vehicle_id, signal, value, score, threshold,"
            " is_event) VALUES (%s, %s, %s, 'coolant_temp_c', 121, 8.1, 5, true),"
            " (%s, %s, %s, 'rpm', 5200, 2.0, 5, false)",
            (t, tenant.id, vid, t, tenant.id, vid))
    return t


async def listed(world: World, tenant: Tenant, path: str, t: datetime,
                 role: str = "admin", **filters: str) -> list[dict[str, Any]]:
    """The rows of one event list at exactly time `t`."""
    query = {"from": (t - timedelta(seconds=1)).isoformat(),
             "to": (t + timedelta(seconds=1)).isoformat(), **filters}
    resp = await world.client.get(path, params=query, headers=world.auth(tenant.tokens[role]))
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return [i for i in items if parse_time(i["time"], "time") == t]


async def events_at(world: World, tenant: Tenant, code: str, minutes_ago: float) -> Events:
    """Insert one event of each kind and read them back from the lists."""
    t = await insert_events(world, tenant, code, minutes_ago)
    vid = str(tenant.vehicles[code])
    vehicle = await listed(world, tenant, "/api/vehicle-events", t, vehicle_id=vid)
    geofence = await listed(world, tenant, "/api/geofence-events", t, vehicle_id=vid)
    anomaly = await listed(world, tenant, "/api/anomalies", t, vehicle_id=vid,
                           events_only="true")
    assert len(vehicle) == len(geofence) == len(anomaly) == 1
    return Events(vehicle[0], geofence[0], anomaly[0])


def ack_body(kind: str, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The acknowledgement of a listed event row."""
    body = {"kind": kind, "vehicle_id": row["vehicle_id"], "time": row["time"],
            "event_type": row["signal"] if kind == "anomaly" else row["event_type"]}
    if kind == "geofence":
        body["geofence_id"] = row["geofence_id"]
    return {**body, **extra}


async def ack(world: World, tenant: Tenant, body: dict[str, Any], role: str = "fleet_manager"
              ) -> tuple[int, dict[str, Any]]:
    """POST one acknowledgement; (status, JSON answer)."""
    resp = await world.client.post("/api/event-acks", json=body,
                                   headers=world.auth(tenant.tokens[role]))
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def test_each_kind_is_acknowledged_once_and_shown_in_its_list(world: World) -> None:
    """A vehicle event, a geofence event and a fired anomaly: 201 with who and when, the
    list shows it, a second acknowledgement is a 409 carrying the first."""
    a = world.a
    events = await events_at(world, a, "other", 30)
    for kind, row, path, only in (
            ("vehicle", events.vehicle, "/api/vehicle-events", {}),
            ("geofence", events.geofence, "/api/geofence-events", {}),
            ("anomaly", events.anomaly, "/api/anomalies", {"events_only": "true"})):
        assert (row["acked_at"], row["acked_by_email"], row["ack_comment"]) == (None, None, None)
        status, made = await ack(world, a, ack_body(kind, row, comment=f"seen {kind}"))
        assert status == 201, made
        assert made["kind"] == kind
        assert made["vehicle_id"] == row["vehicle_id"]
        assert made["vehicle_code"] == "other"
        assert parse_time(made["time"], "time") == parse_time(row["time"], "time")
        assert made["geofence_id"] == (row["geofence_id"] if kind == "geofence" else None)
        assert made["acked_by"] == str(a.user_ids["fleet_manager"])
        assert made["acked_by_email"] == a.users["fleet_manager"]
        assert made["comment"] == f"seen {kind}"
        acked_at = parse_time(made["acked_at"], "acked_at")
        assert abs(acked_at - datetime.now(UTC)) < timedelta(minutes=1)

        t = parse_time(row["time"], "time")
        shown = await listed(world, a, path, t, role="viewer", vehicle_id=row["vehicle_id"],
                             **only)
        assert len(shown) == 1
        assert parse_time(shown[0]["acked_at"], "acked_at") == acked_at
        assert shown[0]["acked_by_email"] == a.users["fleet_manager"]
        assert shown[0]["ack_comment"] == f"seen {kind}"

        status, again = await ack(world, a, ack_body(kind, row), role="admin")
        assert status == 409, again
        assert again["error"]["code"] == "conflict"
        assert again["error"]["details"]["ack"]["id"] == made["id"]
        assert again["error"]["details"]["ack"]["acked_by_email"] == a.users["fleet_manager"]

    # The unfired anomaly at the same time is not an event, and stays unacknowledged.
    t = parse_time(events.anomaly["time"], "time")
    scores = await listed(world, a, "/api/anomalies", t, vehicle_id=events.anomaly["vehicle_id"])
    by_signal = {r["signal"]: r for r in scores}
    assert by_signal["rpm"]["acked_at"] is None
    assert by_signal["coolant_temp_c"]["acked_at"] is not None
    status, _ = await ack(world, a, {**ack_body("anomaly", events.anomaly), "event_type": "rpm"})
    assert status == 404


async def test_acknowledgements_are_listed_newest_event_first(world: World) -> None:
    """GET /api/event-acks: by event time, with the e-mail; drivers see their vehicle's."""
    a = world.a
    older = await events_at(world, a, "assigned", 50)
    newer = await events_at(world, a, "other", 49)
    assert (await ack(world, a, ack_body("vehicle", older.vehicle)))[0] == 201
    assert (await ack(world, a, ack_body("geofence", newer.geofence), role="admin"))[0] == 201
    params = {"from": (_when(51)).isoformat(), "to": (_when(48)).isoformat()}
    resp = await world.client.get("/api/event-acks", params=params,
                                  headers=world.auth(a.tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    assert page["total"] == 2
    assert [(i["kind"], i["vehicle_code"], i["acked_by_email"]) for i in page["items"]] == [
        ("geofence", "other", a.users["admin"]), ("vehicle", "assigned", a.users["fleet_manager"])]
    assert "tenant_id" not in page["items"][0]
    one = await world.client.get("/api/event-acks", params={
        **params, "vehicle_id": str(a.vehicles["other"])}, headers=world.auth(a.tokens["admin"]))
    assert [i["vehicle_code"] for i in (await one.json())["items"]] == ["other"]
    driver = await world.client.get("/api/event-acks", params=params,
                                    headers=world.auth(a.tokens["driver"]))
    assert [i["vehicle_code"] for i in (await driver.json())["items"]] == ["assigned"]
    # Another tenant's list holds none of them.
    other = await world.client.get("/api/event-acks", params=params,
                                   headers=world.auth(world.b.tokens["admin"]))
    assert (await other.json())["total"] == 0


async def test_no_such_event_is_404_also_for_another_tenant(world: World) -> None:
    """The event must exist in the caller's tenant, exactly (time, type, fence)."""
    a, b = world.a, world.b
    events = await events_at(world, a, "other", 40)
    t = parse_time(events.vehicle["time"], "time")
    misses = [
        ack_body("vehicle", events.vehicle, time=(t + timedelta(milliseconds=1)).isoformat()),
        ack_body("vehicle", events.vehicle, event_type="harsh_braking"),
        ack_body("vehicle", events.vehicle, vehicle_id=str(a.vehicles["assigned"])),
        ack_body("geofence", events.geofence, geofence_id=str(uuid.uuid4())),
        ack_body("anomaly", events.anomaly, event_type="fuel_level_pct"),
    ]
    for body in misses:
        status, answer = await ack(world, a, body)
        assert status == 404, (body, answer)
        assert answer["error"] == {"code": "not_found", "message": "no such event"}
    for kind, row in (("vehicle", events.vehicle), ("geofence", events.geofence),
                      ("anomaly", events.anomaly)):
        status, answer = await ack(world, b, ack_body(kind, row), role="admin")
        assert status == 404, answer
    # Tenant B's attempts left tenant A's events unacknowledged.
    shown = await listed(world, a, "/api/vehicle-events", t,
                         vehicle_id=events.vehicle["vehicle_id"])
    assert shown[0]["acked_at"] is None


@pytest.mark.parametrize("role", ["driver", "technician", "viewer"])
async def test_only_dispatchers_acknowledge(world: World, role: str) -> None:
    """The matrix's Dispatch rights: admin and fleet_manager; the others get 403."""
    a = world.a
    events = await events_at(world, a, "assigned", 20 + ["driver", "technician",
                                                         "viewer"].index(role))
    status, answer = await ack(world, a, ack_body("vehicle", events.vehicle), role=role)
    assert status == 403, answer
    assert answer["error"]["code"] == "forbidden"
    t = parse_time(events.vehicle["time"], "time")
    shown = await listed(world, a, "/api/vehicle-events", t, role=role,
                         vehicle_id=events.vehicle["vehicle_id"])
    assert shown[0]["acked_at"] is None


async def test_malformed_acknowledgements_are_refused(world: World) -> None:
    """Everything here breaks what the document states (the kinds, the comment's length, a
    geofence event named with its fence and no other): a 400 naming the field."""
    a = world.a
    events = await events_at(world, a, "other", 35)
    body = ack_body("vehicle", events.vehicle)
    cases = [
        ({**body, "comment": "x" * (COMMENT_MAX_CHARS + 1)}, 400, "comment"),
        ({**body, "kind": "fuel"}, 400, "kind"),
        ({**body, "time": "yesterday"}, 400, "time"),
        ({**body, "event_type": ""}, 400, "event_type"),
        ({**body, "comment": "a\x00b"}, 400, "comment"),
        ({**body, "extra": 1}, 400, None),
        ({k: v for k, v in body.items() if k != "vehicle_id"}, 400, "vehicle_id"),
        ({k: v for k, v in ack_body("geofence", events.geofence).items()
          if k != "geofence_id"}, 400, "geofence_id"),
        (ack_body("geofence", events.geofence, geofence_id=None), 400, "geofence_id"),
        ({**body, "geofence_id": str(a.geofence_id)}, 400, "geofence_id"),
    ]
    for sent, status, field in cases:
        got, answer = await ack(world, a, sent)
        assert got == status, (sent, answer)
        if field is not None:
            assert answer["error"]["field"] == field, answer
    # A comment of exactly the limit is fine.
    status, made = await ack(world, a, {**body, "comment": "y" * COMMENT_MAX_CHARS})
    assert status == 201, made
    assert len(made["comment"]) == COMMENT_MAX_CHARS


async def test_acknowledgements_are_audited(world: World) -> None:
    """event.ack rows: the success with the acknowledgement's id, refusals with the reason."""
    a = world.a
    events = await events_at(world, a, "other", 25)
    body = ack_body("geofence", events.geofence)
    status, made = await ack(world, a, body)
    assert status == 201
    assert (await ack(world, a, body))[0] == 409
    assert (await ack(world, a, {**body, "event_type": "exit"}))[0] == 404
    async with await psycopg.AsyncConnection.connect(world.db.owner_url) as conn:
        cur = await conn.execute(
            "SELECT outcome, resource_type, resource_id, user_id, details, error_message "
            "FROM audit_logs WHERE tenant_id = %s AND action = 'event.ack' "
            "AND details->>'time' = %s ORDER BY id", (a.id, body["time"]))
        rows = await cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [("success", "event_ack"), ("failure", "event_ack"),
                                            ("failure", "event_ack")]
    success, conflict, missing = rows
    assert success[2] == made["id"]
    assert success[3] == a.user_ids["fleet_manager"]
    assert success[4]["kind"] == "geofence"
    assert success[4]["geofence_id"] == body["geofence_id"]
    assert success[4]["status"] == 201
    assert conflict[4]["status"] == 409
    assert conflict[5] == "this event is acknowledged already"
    assert missing[4]["status"] == 404
    assert missing[5] == "no such event"


def acks_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every acknowledgement in the batch frames seen."""
    return [k for f in frames if f["type"] == "batch" for k in f.get("acks", [])]


async def until_marker(ws: ClientWebSocketResponse, vid: uuid.UUID) -> list[dict[str, Any]]:
    """Frames up to the one with a position of `vid` (published after what is tested)."""
    return await wait_for(ws, lambda f: any(p["vehicle_id"] == str(vid)
                                            for p in f.get("positions", [])))


async def test_dispatchers_of_the_tenant_see_the_acknowledgement_live(world: World) -> None:
    """Tenant A's unfiltered, bbox-filtered and driver clients get an acknowledgement of a
    vehicle they watch in a batch frame's `acks`; tenant B's client and a driver of another
    vehicle never do."""
    a, b = world.a, world.b
    other, assigned = await events_at(world, a, "other", 15), await events_at(world, a,
                                                                              "assigned", 15)
    admin_ws, _ = await subscribe(world.client, a.tokens["admin"])
    # Acknowledgements have no place: a bbox far from the vehicle does not hold them back.
    bbox_ws, _ = await subscribe(world.client, a.tokens["fleet_manager"], bbox=[0, 0, 1, 1])
    driver_ws, _ = await subscribe(world.client, a.tokens["driver"])
    b_ws, _ = await subscribe(world.client, b.tokens["admin"])
    try:
        status, made = await ack(world, a, ack_body("vehicle", other.vehicle, comment="on it"))
        assert status == 201, made
        expected = {"type": "ack", "vehicle_id": other.vehicle["vehicle_id"], "code": "other",
                    "t_ms": epoch_ms(parse_time(other.vehicle["time"], "time")),
                    "kind": "vehicle", "event_type": "overspeed",
                    "acked_by_email": a.users["fleet_manager"],
                    "acked_at_ms": epoch_ms(parse_time(made["acked_at"], "acked_at")),
                    "comment": "on it"}
        for ws in (admin_ws, bbox_ws):
            frames = await wait_for(ws, lambda f: bool(acks_of([f])))
            assert acks_of(frames) == [expected]
        status, made = await ack(world, a, ack_body("geofence", assigned.geofence), role="admin")
        assert status == 201, made
        # The driver watches only the assigned vehicle: its acknowledgement arrives, the
        # other one (published first) never did.
        frames = await wait_for(driver_ws, lambda f: bool(acks_of([f])))
        assert [(k["code"], k["kind"], k["geofence_id"]) for k in acks_of(frames)] == [
            ("assigned", "geofence", str(a.geofence_id))]
        # Tenant B: a position published on B's channel after both acknowledgements comes
        # through; no acknowledgement came before it.
        marker = LivePosition(vehicle_id=str(b.vehicles["other"]), code="other", t_ms=1,
                              lat=52.5, lon=13.4)
        publisher = aioredis.Redis.from_url(world.redis_url)
        try:
            await publisher.publish(live_channel(b.id), encode_live(marker))
        finally:
            await publisher.aclose()
        frames = await until_marker(b_ws, b.vehicles["other"])
        assert acks_of(frames) == []
    finally:
        for ws in (admin_ws, bbox_ws, driver_ws, b_ws):
            await ws.close()


async def test_a_busy_client_keeps_acknowledgements_apart_from_events() -> None:
    """A burst of events does not push acknowledgements out; beyond their own bound the
    oldest go and the frame counts them, as for events."""
    metrics = ApiMetrics()
    client = LiveClient(ws=None, user=None, expires_at=0, event_buffer=3)  # type: ignore[arg-type]
    client.sending = True
    events = [LiveEvent(vehicle_id="v1", code="c1", t_ms=i, kind="vehicle",
                        event_type="overspeed") for i in range(10)]
    acks = [LiveAck(vehicle_id="v1", code="c1", t_ms=i, kind="vehicle", event_type="overspeed",
                    acked_by_email="d@example.com", acked_at_ms=i) for i in range(5)]
    client.offer([], events, lambda: b"", metrics, acks=acks)
    assert [k.t_ms for k in client.acks] == [2, 3, 4]
    assert (client.dropped_events, client.dropped_acks) == (7, 2)
    client.sending = False
    frame = json.loads(client.take_frame() or b"{}")
    assert [k["t_ms"] for k in frame["acks"]] == [2, 3, 4]
    assert (frame["dropped_events"], frame["dropped_acks"]) == (7, 2)
    assert client.take_frame() is None
    assert metrics.registry.get_sample_value("fleet_api_ws_dropped_events_total") == 9


async def test_a_tick_that_overflows_counts_what_it_dropped() -> None:
    """The per-tenant tick is bounded too; what it drops reaches every client's next frame."""
    feed = TenantFeed(event_buffer=2)
    for i in range(5):
        feed.add_ack(LiveAck(vehicle_id="v1", code="c1", t_ms=i, kind="anomaly",
                             event_type="rpm", acked_by_email="d@example.com", acked_at_ms=i))
    positions, events, acks, dropped = feed.take()
    assert (positions, events, [k.t_ms for k in acks]) == ([], [], [3, 4])
    assert dropped == Dropped(events=0, acks=3)
    assert feed.idle
    metrics = ApiMetrics()
    idle = LiveClient(ws=None, user=None, expires_at=0, event_buffer=10)  # type: ignore[arg-type]
    busy = LiveClient(ws=None, user=None, expires_at=0, event_buffer=10)  # type: ignore[arg-type]
    busy.sending = True
    for client in (idle, busy):
        client.offer(positions, events, lambda: b"shared", metrics, acks=acks, dropped=dropped)
    assert idle.take_frame() == b"shared"
    busy.sending = False
    frame = json.loads(busy.take_frame() or b"{}")
    assert (len(frame["acks"]), frame["dropped_acks"]) == (2, 3)


async def test_live_ack_round_trips_through_the_contract() -> None:
    """The API publishes what the hub decodes (core.live's union)."""
    msg = LiveAck(vehicle_id=str(uuid.uuid4()), code="v", t_ms=1, kind="geofence",
                  event_type="enter", geofence_id=str(uuid.uuid4()), acked_by_email="x@y.z",
                  acked_at_ms=2, comment=None)
    assert decode_live(encode_live(msg)) == msg
    assert "comment" not in json.loads(encode_live(msg))

