"""Live WebSocket: snapshot, coalesced updates from Redis, filters, roles, tenancy, several
API processes, heartbeats and the bounded outbox of slow clients."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from api.live_socket import LiveClient
from api.metrics import ApiMetrics
from core.live import LiveEvent, LivePosition, encode_live, live_channel
from tests.api.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="session")
TIMEOUT_S = 10.0


async def next_json(ws: ClientWebSocketResponse, wait_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The next JSON frame (fails on close or timeout)."""
    # wait_for, not receive(timeout=): the server's pings would restart that timeout.
    msg = await asyncio.wait_for(ws.receive(), wait_s)
    assert msg.type == WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def wait_for(ws: ClientWebSocketResponse, pred: Callable[[dict[str, Any]], bool],
                   wait_s: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """Collect frames until one satisfies `pred`; returns all frames seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; saw {seen[-3:]}"
        frame = await next_json(ws, left)
        seen.append(frame)
        if pred(frame):
            return seen


async def subscribe(client: TestClient[Any, Any], token: str, **extra: Any
                    ) -> tuple[ClientWebSocketResponse, dict[str, Any]]:
    """Connect, subscribe, read `subscribed` and return the snapshot."""
    ws = await client.ws_connect("/api/live")
    await ws.send_json({"type": "subscribe", "token": token, **extra})
    subscribed = await next_json(ws)
    assert subscribed["type"] == "subscribed", subscribed
    snapshot = await next_json(ws)
    assert snapshot["type"] == "snapshot"
    return ws, snapshot


def position(vid: uuid.UUID, code: str, lat: float, lon: float, **kw: Any) -> LivePosition:
    """A LivePosition as the stream publishes it."""
    now = int(time.time() * 1000)
    return LivePosition(vehicle_id=str(vid), code=code, t_ms=now, lat=lat, lon=lon,
                        sent_ms=now, **kw)


@pytest.fixture
async def redis(world: World) -> Any:
    """A Redis client for publishing."""
    client = aioredis.Redis.from_url(world.redis_url)
    yield client
    await client.aclose()


def positions_of(frames: list[dict[str, Any]], vid: uuid.UUID) -> list[dict[str, Any]]:
    """Every position about one vehicle in batches/snapshots."""
    return [p for f in frames for p in f.get("positions", []) if p["vehicle_id"] == str(vid)]


async def test_snapshot_then_updates(world: World, redis: Any) -> None:
    """The snapshot comes from vehicle_state; then published positions and events arrive."""
    a = world.a
    vid = a.vehicles["other"]
    conn = await asyncpg.connect(world.db.ingest_url)
    try:
        await conn.execute(
            "INSERT INTO vehicle_state (vehicle_id, tenant_id, time, last_seq, location, "
            "speed_kph, heading_deg, ignition, moving) VALUES ($1, $2, now(), 1, "
            "ST_SetSRID(ST_MakePoint(13.41, 52.51), 4326)::geography, 42, 90, true, true) "
            "ON CONFLICT (vehicle_id) DO UPDATE SET time = now()", vid, a.id)
    finally:
        await conn.close()
    ws, snapshot = await subscribe(world.client, a.tokens["admin"])
    try:
        snap = positions_of([snapshot], vid)
        assert len(snap) == 1
        assert snap[0]["lat"] == pytest.approx(52.51)
        assert snap[0]["speed_kph"] == pytest.approx(42)
        await redis.publish(live_channel(a.id), encode_live(position(vid, "other", 52.6, 13.5)))
        frames = await wait_for(ws, lambda f: bool(positions_of([f], vid)))
        assert positions_of(frames, vid)[-1]["lat"] == pytest.approx(52.6)
        event = LiveEvent(vehicle_id=str(vid), code="other", t_ms=int(time.time() * 1000),
                          kind="geofence", event_type="enter", geofence_name="Depot",
                          lat=52.6, lon=13.5)
        await redis.publish(live_channel(a.id), encode_live(event))
        frames = await wait_for(ws, lambda f: bool(f.get("events")))
        assert frames[-1]["events"][0]["geofence_name"] == "Depot"
    finally:
        await ws.close()


async def test_coalescing_keeps_latest_per_vehicle(world: World, redis: Any) -> None:
    """A burst of positions for one vehicle arrives as fewer updates ending with the latest."""
    a = world.a
    vid = a.vehicles["other"]
    ws, _ = await subscribe(world.client, a.tokens["fleet_manager"])
    try:
        for i in range(50):
            await redis.publish(live_channel(a.id),
                                encode_live(position(vid, "other", 50.0 + i / 100, 13.0)))
        frames = await wait_for(
            ws, lambda f: any(p["lat"] == pytest.approx(50.49) for p in positions_of([f], vid)))
        seen = positions_of(frames, vid)
        assert len(seen) < 50
        assert seen[-1]["lat"] == pytest.approx(50.49)
    finally:
        await ws.close()


async def test_filters_by_vehicle_and_bbox(world: World, redis: Any) -> None:
    """Only the requested vehicles, only inside the requested bbox."""
    a = world.a
    v1, v2 = a.vehicles["assigned"], a.vehicles["other"]
    ws, _ = await subscribe(world.client, a.tokens["admin"], vehicles=["assigned"],
                            bbox=[13.0, 52.0, 14.0, 53.0])
    try:
        channel = live_channel(a.id)
        await redis.publish(channel, encode_live(position(v2, "other", 52.5, 13.5)))
        await redis.publish(channel, encode_live(position(v1, "assigned", 40.0, 13.5)))  # out
        await redis.publish(channel, encode_live(position(v1, "assigned", 52.5, 13.6)))
        frames = await wait_for(ws, lambda f: bool(positions_of([f], v1)))
        assert positions_of(frames, v2) == []
        assert [p["lat"] for p in positions_of(frames, v1)] == [pytest.approx(52.5)]
    finally:
        await ws.close()


async def test_driver_gets_only_the_assigned_vehicle(world: World, redis: Any) -> None:
    """Drivers watch their vehicle, whatever filter they ask for."""
    a = world.a
    ws, _ = await subscribe(world.client, a.tokens["driver"], vehicles=["other", "assigned"])
    try:
        await redis.publish(live_channel(a.id),
                            encode_live(position(a.vehicles["other"], "other", 52.5, 13.5)))
        await redis.publish(live_channel(a.id), encode_live(
            position(a.vehicles["assigned"], "assigned", 52.5, 13.5)))
        frames = await wait_for(ws, lambda f: bool(positions_of([f], a.vehicles["assigned"])))
        assert positions_of(frames, a.vehicles["other"]) == []
    finally:
        await ws.close()


async def test_no_cross_tenant_delivery(world: World, redis: Any) -> None:
    """Tenant B's messages never reach tenant A's client; asking for B is refused."""
    a, b = world.a, world.b
    ws, _ = await subscribe(world.client, a.tokens["admin"])
    try:
        await redis.publish(live_channel(b.id), encode_live(
            position(b.vehicles["other"], "other", 52.5, 13.5)))
        await redis.publish(live_channel(a.id), encode_live(
            position(a.vehicles["other"], "other", 52.5, 13.5)))
        frames = await wait_for(ws, lambda f: bool(positions_of([f], a.vehicles["other"])))
        assert positions_of(frames, b.vehicles["other"]) == []
    finally:
        await ws.close()
    ws = await world.client.ws_connect("/api/live")
    await ws.send_json({"type": "subscribe", "token": a.tokens["admin"],
                        "tenant_id": str(b.id)})
    error = await next_json(ws)
    assert error["type"] == "error"
    assert error["code"] == "forbidden"
    closing = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert ws.close_code == 4403


@pytest.mark.parametrize(("token_of", "code"), [
    (lambda w: w.a.tokens["viewer"], 4403), (lambda w: w.a.tokens["technician"], 4403),
    (lambda w: "not-a-token", 4401), (lambda w: None, 4401)])
async def test_refused_subscriptions(world: World, token_of: Callable[[World], str | None],
                                     code: int) -> None:
    """Roles without "Dispatch" and bad or missing tokens are closed with a reason."""
    ws = await world.client.ws_connect("/api/live")
    await ws.send_json({"type": "subscribe", "token": token_of(world)})
    error = await next_json(ws)
    assert error["type"] == "error"
    await asyncio.wait_for(ws.receive(), TIMEOUT_S)
    assert ws.close_code == code


async def test_two_api_processes_share_the_feed(world: World, redis: Any,
                                                make_client: Any) -> None:
    """Clients of two separate apps (replicas) both get a message published once."""
    second = make_client()
    await second.start_server()
    try:
        a = world.a
        vid = a.vehicles["assigned"]
        ws1, _ = await subscribe(world.client, a.tokens["admin"])
        ws2, _ = await subscribe(second, a.tokens["admin"])
        await redis.publish(live_channel(a.id), encode_live(position(vid, "assigned", 52.1, 13.1)))
        for ws in (ws1, ws2):
            frames = await wait_for(ws, lambda f: bool(positions_of([f], vid)))
            assert positions_of(frames, vid)[-1]["lat"] == pytest.approx(52.1)
            await ws.close()
    finally:
        await second.close()


async def test_heartbeat_and_subscribe_timeout(world: World, make_client: Any) -> None:
    """Idle clients get JSON heartbeats; a silent client is closed."""
    client = make_client(live_heartbeat_s=0.3, live_auth_timeout_s=0.5)
    await client.start_server()
    try:
        ws, _ = await subscribe(client, world.a.tokens["admin"])
        frames = await wait_for(ws, lambda f: f["type"] == "heartbeat")
        assert frames[-1]["type"] == "heartbeat"
        await ws.close()
        silent = await client.ws_connect("/api/live")
        error = await next_json(silent)
        assert error["code"] == "timeout"
        await asyncio.wait_for(silent.receive(), TIMEOUT_S)
        assert silent.close_code == 4401
    finally:
        await client.close()


async def test_slow_client_outbox_is_bounded() -> None:
    """While a client is busy, it holds one position per vehicle and a bounded event deque."""
    metrics = ApiMetrics()
    client = LiveClient(ws=None, user=None, expires_at=0, event_buffer=10)  # type: ignore[arg-type]
    client.sending = True  # the socket is not draining
    for tick in range(100):
        positions = [LivePosition(vehicle_id=f"v{i}", code=f"c{i}", t_ms=tick, lat=1.0, lon=1.0)
                     for i in range(20)]
        events = [LiveEvent(vehicle_id="v1", code="c1", t_ms=tick, kind="vehicle",
                            event_type="overspeed")]
        client.offer(positions, events, lambda: b"", metrics)
    assert len(client.pending) == 20
    assert all(p.t_ms == 99 for p in client.pending.values())
    assert len(client.events) == 10
    assert client.dropped_events == 90
    client.sending = False
    frame = json.loads(client.take_frame() or b"{}")
    assert frame["type"] == "batch"
    assert len(frame["positions"]) == 20
    assert frame["dropped_events"] == 90
    assert client.take_frame() is None


async def test_expired_token_closes_a_busy_stream(world: World, redis: Any) -> None:
    """A token that expires while updates keep flowing ends the stream with 4401."""
    a = world.a
    now = int(time.time())
    token = jwt.encode({"sub": str(a.user_ids["admin"]), "tenant_id": str(a.id),
                        "role": "admin", "email": a.users["admin"], "typ": "access",
                        "iat": now, "exp": now + 2}, "t" * 40, algorithm="HS256")
    ws, _ = await subscribe(world.client, token)
    vid = a.vehicles["other"]

    async def keep_publishing() -> None:
        while True:
            await redis.publish(live_channel(a.id), encode_live(position(vid, "other", 52, 13)))
            await asyncio.sleep(0.1)

    # Receives are never cancelled (aiohttp marks a cancelled receive as an abnormal close).
    publisher = asyncio.create_task(keep_publishing())
    try:
        frames = await wait_for(ws, lambda f: f["type"] == "error")
        assert frames[-1]["code"] == "token_expired"
        closing = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        # aiohttp closes from the writer task while the handler waits in receive(), which
        # the client may see as 1006; the error frame before it carries the reason.
        assert ws.close_code in (4401, 1006)
    finally:
        publisher.cancel()
        await ws.close()


async def test_resubscribe_with_another_users_token_is_refused(world: World) -> None:
    """A connection stays with its user and tenant."""
    ws, _ = await subscribe(world.client, world.a.tokens["admin"])
    await ws.send_json({"type": "subscribe", "token": world.b.tokens["admin"]})
    error = await next_json(ws)
    assert error["code"] == "forbidden"
    await asyncio.wait_for(ws.receive(), TIMEOUT_S)
    assert ws.close_code == 4403


async def test_resubscribe_with_a_fresh_token_extends_the_connection(world: World,
                                                                      redis: Any) -> None:
    """The same user's refreshed token keeps the stream open past the first token's expiry."""
    a = world.a
    now = int(time.time())
    short = jwt.encode({"sub": str(a.user_ids["admin"]), "tenant_id": str(a.id),
                        "role": "admin", "email": a.users["admin"], "typ": "access",
                        "iat": now, "exp": now + 2}, "t" * 40, algorithm="HS256")
    ws, _ = await subscribe(world.client, short)
    try:
        await ws.send_json({"type": "subscribe", "token": a.tokens["admin"]})
        assert (await next_json(ws))["type"] == "subscribed"
        await asyncio.sleep(2.5)  # past the first token's expiry
        vid = a.vehicles["other"]
        await redis.publish(live_channel(a.id), encode_live(position(vid, "other", 51.0, 13.0)))
        frames = await wait_for(ws, lambda f: f["type"] == "error" or any(
            p["lat"] == pytest.approx(51.0) for p in positions_of([f], vid)))
        assert frames[-1]["type"] != "error"
    finally:
        await ws.close()
