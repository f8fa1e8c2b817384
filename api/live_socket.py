"""Live WebSocket `/api/live`: Redis pub/sub fan-out with per-client coalescing.

Protocol (JSON text frames):

- client -> ``{"type": "subscribe", "token": "<access token>", "bbox": [w, s, e, n] | null,
  "vehicles": [id or code, ...] | null}`` (the token may instead come in an
  ``Authorization: Bearer`` header); sent again, it replaces the filters;
- server -> ``{"type": "subscribed", ...}``, then ``{"type": "snapshot", "positions": [...]}``
  from `vehicle_state`, then ``{"type": "batch", "positions": [...], "events": [...],
  "acks": [...]}`` at most every `live_flush_ms`, ``{"type": "heartbeat"}`` when idle, and
  ``{"type": "error", ...}`` before closing (4400 bad request, 4401 unauthenticated or token
  expired, 4403 forbidden). A `bbox` is RFC 7946's: west > east crosses the antimeridian,
  [-180, -90, 180, 90] is the whole world; one that is not a box on Earth is a 4400.

Every API process subscribes to the ``fleet:live:*`` pattern (`core.live`), so any number of
replicas serve clients of any tenant. Per tenant and per tick, changed positions are coalesced
(latest per vehicle) and encoded once; a client that is still busy sending keeps at most the
latest position per vehicle plus bounded deques of events and of acknowledgements, never an
unbounded buffer. Events and acknowledgements are never dropped silently: what a bound
drops is counted (`dropped_events`, `dropped_acks` in the next frame, and the
`fleet_api_ws_dropped_events_total` metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from api.auth import TOKENS_KEY, AuthUser, bearer_token
from api.config import ApiSection
from api.db import POOL_KEY, tenant_connection
from api.errors import ApiError, Unauthorized
from api.metrics import ApiMetrics
from api.params import BBox, check_tree, parse_bbox
from api.routes.common import driver_scope
from api.routes.history import POSITIONS_SQL
from api.tasks import bounded, cancel_and_wait
from core.live import LIVE_CHANNEL_PREFIX, LiveAck, LiveEvent, LivePosition, decode_live

log = logging.getLogger("api.live_socket")
T = TypeVar("T")

SEND_BUFFER_BYTES = 64 * 1024
"""Per-connection send buffering (aiohttp writer limit and kernel SO_SNDBUF), bytes."""
LIVE_ROLES = ("admin", "fleet_manager", "driver")
"""The seed's "Dispatch" column: admin, fleet_manager (read) and drivers (their vehicle)."""


class BatchFrame(msgspec.Struct, tag_field="type", tag="batch", kw_only=True):
    """Coalesced changes since the previous frame."""

    t_ms: int
    positions: list[LivePosition]
    events: list[LiveEvent]
    acks: list[LiveAck] = msgspec.field(default_factory=list)
    dropped_events: int = 0
    dropped_acks: int = 0


@dataclass(frozen=True, slots=True)
class Dropped:
    """Events and acknowledgements a tenant's tick could not hold (its bound is the same
    `live_event_buffer`). Every client of the tenant counts them, since each may have missed
    one of its own (a filtered client counts some that were not for it)."""

    events: int = 0
    acks: int = 0


NOTHING_DROPPED = Dropped()


class Snapshot(msgspec.Struct, tag_field="type", tag="snapshot", kw_only=True):
    """The latest known state of every vehicle the client watches."""

    t_ms: int
    positions: list[LivePosition]


class Subscribe(msgspec.Struct, tag_field="type", tag="subscribe", kw_only=True,
                forbid_unknown_fields=True):
    """A client's subscription request."""

    token: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    vehicles: list[str] | None = None
    tenant_id: str | None = None
    """Optional; must equal the token's tenant (a foreign tenant is refused)."""


_encoder = msgspec.json.Encoder()
_subscribe_decoder = msgspec.json.Decoder(Subscribe)


def now_ms() -> int:
    """Wall clock, ms since the epoch."""
    return int(time.time() * 1000)


@dataclass(eq=False)
class LiveClient:
    """One WebSocket subscriber and its bounded outbox."""

    ws: web.WebSocketResponse
    user: AuthUser
    expires_at: float
    event_buffer: int
    vehicles: frozenset[str] | None = None
    bbox: BBox | None = None
    pending: dict[str, LivePosition] = field(default_factory=dict)
    events: deque[LiveEvent] = field(init=False)
    acks: deque[LiveAck] = field(init=False)
    dropped_events: int = 0
    dropped_acks: int = 0
    ready: bytes | None = None
    snapshot: bytes | None = None
    sending: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_frame: float = 0.0

    def __post_init__(self) -> None:
        # Overflow policy: the oldest events are dropped (and counted in `dropped_events`);
        # acknowledgements likewise, in a deque of their own (`dropped_acks`), so that a
        # burst of events never pushes out the acknowledgement of one of them.
        self.events = deque(maxlen=self.event_buffer)
        self.acks = deque(maxlen=self.event_buffer)

    @property
    def filtered(self) -> bool:
        """True when the client sees only part of the tenant."""
        return self.vehicles is not None or self.bbox is not None

    @property
    def busy(self) -> bool:
        """Something is still waiting to be sent."""
        return self.sending or self.ready is not None or self.has_changes

    @property
    def has_changes(self) -> bool:
        """Coalesced positions, events or acknowledgements wait for the next frame."""
        return bool(self.pending) or bool(self.events) or bool(self.acks)

    def wants(self, vehicle_id: str, code: str, lat: float | None, lon: float | None) -> bool:
        """Whether a message about this vehicle (at this place) passes the filters."""
        if self.vehicles is not None and vehicle_id not in self.vehicles \
                and code not in self.vehicles:
            return False
        if self.bbox is not None:
            if lat is None or lon is None:
                return False
            return self.bbox.contains(lon, lat)
        return True

    def wants_event(self, vehicle_id: str, code: str, lat: float | None = None,
                    lon: float | None = None) -> bool:
        """Whether an event or acknowledgement about this vehicle passes the filters: the
        vehicles filter always, the bbox only when the event has a place (an
        acknowledgement has none: it reaches every client that watches the vehicle)."""
        if self.vehicles is not None and vehicle_id not in self.vehicles \
                and code not in self.vehicles:
            return False
        if lat is None or lon is None:
            return True
        return self.wants(vehicle_id, code, lat, lon)

    def offer(self, positions: list[LivePosition], events: list[LiveEvent],
              shared: Callable[[], bytes], metrics: ApiMetrics, *,
              acks: Sequence[LiveAck] = (), dropped: Dropped = NOTHING_DROPPED) -> None:
        """Take one tick's changes: share the encoded frame, or coalesce when busy/filtered.

        `dropped` is what the tick itself could not hold; the shared frame carries it, and a
        coalescing client adds it to its own counts.
        """
        if dropped.events or dropped.acks:
            metrics.ws_dropped_events.inc(dropped.events + dropped.acks)
        if not self.filtered and not self.busy:
            self.ready = shared()
            self.wake.set()
            return
        self.dropped_events += dropped.events
        self.dropped_acks += dropped.acks
        coalesced = 0
        for pos in positions:
            if self.wants(pos.vehicle_id, pos.code, pos.lat, pos.lon):
                if pos.vehicle_id in self.pending:
                    coalesced += 1
                self.pending[pos.vehicle_id] = pos
        if coalesced:
            metrics.ws_coalesced.inc(coalesced)
        lost_events = _keep(self.events, [e for e in events
                                          if self.wants_event(e.vehicle_id, e.code, e.lat, e.lon)])
        lost_acks = _keep(self.acks, [a for a in acks if self.wants_event(a.vehicle_id, a.code)])
        if lost_events or lost_acks:
            self.dropped_events += lost_events
            self.dropped_acks += lost_acks
            metrics.ws_dropped_events.inc(lost_events + lost_acks)
        if self.has_changes or self.dropped_events or self.dropped_acks:
            self.wake.set()

    def take_frame(self) -> bytes | None:
        """The next frame to send: snapshot, then the shared frame, then own coalesced state."""
        if self.snapshot is not None:
            frame, self.snapshot = self.snapshot, None
            return frame
        if self.ready is not None:
            frame, self.ready = self.ready, None
            return frame
        if self.has_changes or self.dropped_events or self.dropped_acks:
            batch = BatchFrame(t_ms=now_ms(), positions=list(self.pending.values()),
                               events=list(self.events), acks=list(self.acks),
                               dropped_events=self.dropped_events,
                               dropped_acks=self.dropped_acks)
            self.pending = {}
            self.events.clear()
            self.acks.clear()
            self.dropped_events = 0
            self.dropped_acks = 0
            return _encoder.encode(batch)
        return None


def _keep(outbox: deque[T], items: list[T]) -> int:
    """Append to a bounded deque (the oldest go when it is full); returns how many went."""
    room = len(items) if outbox.maxlen is None else outbox.maxlen - len(outbox)
    outbox.extend(items)
    return max(0, len(items) - room)


@dataclass(eq=False)
class TenantFeed:
    """Per-tenant state of one process: its clients and the changes of the current tick."""

    event_buffer: int
    clients: set[LiveClient] = field(default_factory=set)
    changed: dict[str, LivePosition] = field(default_factory=dict)
    events: deque[LiveEvent] = field(init=False)
    acks: deque[LiveAck] = field(init=False)
    dropped_events: int = 0
    dropped_acks: int = 0

    def __post_init__(self) -> None:
        # A tick never holds more events (or acknowledgements) than a client keeps; beyond
        # that the oldest go, counted, and every client of the tenant is told.
        self.events = deque(maxlen=self.event_buffer)
        self.acks = deque(maxlen=self.event_buffer)

    def add_event(self, event: LiveEvent) -> None:
        """Keep one event of this tick (the oldest dropped and counted when full)."""
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1
        self.events.append(event)

    def add_ack(self, ack: LiveAck) -> None:
        """Keep one acknowledgement of this tick (the oldest dropped and counted when full)."""
        if len(self.acks) == self.acks.maxlen:
            self.dropped_acks += 1
        self.acks.append(ack)

    def take(self) -> tuple[list[LivePosition], list[LiveEvent], list[LiveAck], Dropped]:
        """This tick's changes, leaving the feed empty for the next."""
        taken = (list(self.changed.values()), list(self.events), list(self.acks),
                 Dropped(self.dropped_events, self.dropped_acks))
        self.changed = {}
        self.events.clear()
        self.acks.clear()
        self.dropped_events = self.dropped_acks = 0
        return taken

    @property
    def idle(self) -> bool:
        """Nothing happened in this tick."""
        return not (self.changed or self.events or self.acks or self.dropped_events
                    or self.dropped_acks)


class LiveHub:
    """Reads the tenants' live channels from Redis and fans out to local WebSocket clients."""

    def __init__(self, redis_url: str, section: ApiSection, metrics: ApiMetrics) -> None:
        self.redis_url = redis_url
        self.section = section
        self.metrics = metrics
        self.flush_s = section.live_flush_ms / 1000
        self.tenants: dict[str, TenantFeed] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: aioredis.Redis | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start the Redis reader and the tick loop."""
        self._redis = aioredis.Redis.from_url(self.redis_url)
        self._tasks = [asyncio.create_task(self._read_loop(), name="live-redis"),
                       asyncio.create_task(self._tick_loop(), name="live-tick")]

    async def stop(self) -> None:
        """Stop the loops and close the Redis connection."""
        for task in self._tasks:
            await cancel_and_wait(task)
        if self._redis is not None:
            await bounded(self._redis.aclose())

    def add(self, client: LiveClient) -> None:
        """Register a client (before its snapshot is read, so nothing falls in between)."""
        feed = self.tenants.get(str(client.user.tenant_id))
        if feed is None:
            feed = self.tenants[str(client.user.tenant_id)] = TenantFeed(
                self.section.live_event_buffer)
        feed.clients.add(client)
        self.metrics.ws_clients.inc()

    def remove(self, client: LiveClient) -> None:
        """Unregister a client; the tenant's state goes when its last client leaves."""
        key = str(client.user.tenant_id)
        feed = self.tenants.get(key)
        if feed is not None and client in feed.clients:
            feed.clients.discard(client)
            self.metrics.ws_clients.dec()
            if not feed.clients:
                del self.tenants[key]

    def dispatch(self, channel: bytes, data: bytes) -> None:
        """Route one pub/sub message to its tenant's tick state (skipped without clients)."""
        feed = self.tenants.get(channel[len(LIVE_CHANNEL_PREFIX):].decode())
        if feed is None:
            return
        try:
            msg = decode_live(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.metrics.live_messages.labels("invalid").inc()
            return
        if isinstance(msg, LivePosition):
            self.metrics.live_messages.labels("position").inc()
            if msg.vehicle_id in feed.changed:
                self.metrics.ws_coalesced.inc()
            feed.changed[msg.vehicle_id] = msg
        elif isinstance(msg, LiveEvent):
            self.metrics.live_messages.labels("event").inc()
            feed.add_event(msg)
        else:
            self.metrics.live_messages.labels("ack").inc()
            feed.add_ack(msg)

    async def _read_loop(self) -> None:
        if self._redis is None:
            raise RuntimeError("LiveHub.start() was not called")
        backoff_s = 0.5
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(f"{LIVE_CHANNEL_PREFIX}*")
                self.connected.set()
                backoff_s = 0.5
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg["type"] == "pmessage":
                        self.dispatch(msg["channel"], msg["data"])
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("live: Redis pub/sub lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
            finally:
                await bounded(pubsub.aclose())

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self.tick()

    def tick(self) -> None:
        """Hand each tenant's changes of this tick to its clients."""
        for feed in list(self.tenants.values()):
            if feed.idle:
                continue
            positions, events, acks, dropped = feed.take()
            encoded: list[bytes] = []

            def shared(p: list[LivePosition] = positions, e: list[LiveEvent] = events,
                       a: list[LiveAck] = acks, d: Dropped = dropped,
                       cache: list[bytes] = encoded) -> bytes:
                # Encoded once per tenant and tick, only if some client takes it as is.
                if not cache:
                    cache.append(_encoder.encode(BatchFrame(
                        t_ms=now_ms(), positions=p, events=e, acks=a,
                        dropped_events=d.events, dropped_acks=d.acks)))
                return cache[0]

            for client in feed.clients:
                client.offer(positions, events, shared, self.metrics, acks=acks, dropped=dropped)


HUB_KEY: web.AppKey[LiveHub] = web.AppKey("live_hub", LiveHub)


def _error(code: str, message: str) -> bytes:
    return _encoder.encode({"type": "error", "code": code, "message": message})


async def _snapshot(pool: asyncpg.Pool, client: LiveClient) -> bytes:
    user = client.user
    bbox: list[float] | list[None] = client.bbox.as_list() if client.bbox else [None] * 4
    async with tenant_connection(pool, user.tenant_id) as conn:
        rows = await conn.fetch(POSITIONS_SQL, user.tenant_id, driver_scope(user), None, *bbox)
    positions = [
        LivePosition(vehicle_id=str(r["vehicle_id"]), code=r["code"],
                     t_ms=int(r["time"].timestamp() * 1000), lat=r["lat"], lon=r["lon"],
                     speed_kph=r["speed_kph"], heading_deg=r["heading_deg"],
                     ignition=r["ignition"], moving=r["moving"], fuel_pct=r["fuel_level_pct"],
                     coolant_c=r["coolant_temp_c"], battery_v=r["battery_voltage_v"])
        for r in rows if client.wants(str(r["vehicle_id"]), r["code"], r["lat"], r["lon"])]
    return _encoder.encode(Snapshot(t_ms=now_ms(), positions=positions))


async def _allowed_vehicles(pool: asyncpg.Pool, user: AuthUser) -> frozenset[str] | None:
    """Drivers: their assigned vehicles (ids and codes); everyone else: no restriction."""
    if not user.is_driver:
        return None
    async with tenant_connection(pool, user.tenant_id) as conn:
        rows = await conn.fetch("SELECT id, code FROM vehicles WHERE tenant_id = $1 AND "
                                "assigned_driver_id = $2", user.tenant_id, driver_scope(user))
    return frozenset([str(r["id"]) for r in rows] + [r["code"] for r in rows])


async def _writer(client: LiveClient, hub: LiveHub) -> None:
    """Send frames no more often than every flush interval; JSON heartbeats when idle."""
    heartbeat_s = hub.section.live_heartbeat_s
    while not client.ws.closed:
        try:
            await asyncio.wait_for(client.wake.wait(), timeout=heartbeat_s)
            woke = True
        except TimeoutError:
            woke = False
        # Checked on every wake-up, busy or idle: an expired token ends the stream.
        if time.time() >= client.expires_at:
            await client.ws.send_frame(_error("token_expired", "token expired"), WSMsgType.TEXT)
            await client.ws.close(code=4401, message=b"token expired")
            return
        if not woke:
            await client.ws.send_frame(_encoder.encode({"type": "heartbeat", "t_ms": now_ms()}),
                                       WSMsgType.TEXT)
            continue
        client.wake.clear()
        wait_s = client.last_frame + hub.flush_s - time.monotonic()
        if wait_s > 0 and client.snapshot is None:
            await asyncio.sleep(wait_s)
        while (frame := client.take_frame()) is not None:
            client.sending = True
            client.last_frame = time.monotonic()
            try:
                # Awaits the socket's drain: a slow reader keeps `sending` True, so the next
                # ticks coalesce into `pending` instead of queueing frames.
                await client.ws.send_frame(frame, WSMsgType.TEXT)
            finally:
                client.sending = False
            hub.metrics.ws_frames.inc()
            if client.ready is None and not client.has_changes:
                break
            wait_s = client.last_frame + hub.flush_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)


def _authenticate(request: web.Request, sub: Subscribe) -> tuple[AuthUser, float]:
    token = sub.token or bearer_token(request)
    if not token:
        raise Unauthorized("a token is required")
    tokens = request.app[TOKENS_KEY]
    claims = tokens.decode(token, typ="access")
    return tokens.user_from_access(token), float(claims["exp"])


async def live_handler(request: web.Request) -> web.StreamResponse:  # noqa: PLR0912, PLR0915
    """GET /api/live: the WebSocket (authenticated by the first `subscribe` message)."""
    hub = request.app[HUB_KEY]
    section = hub.section
    # A small write limit makes a slow reader's sends wait early, so that its updates
    # coalesce here (latest per vehicle) instead of queueing in socket buffers.
    ws = web.WebSocketResponse(heartbeat=section.live_ping_s, compress=False,
                               max_msg_size=64 * 1024, writer_limit=SEND_BUFFER_BYTES)
    if not ws.can_prepare(request).ok:
        # A plain HTTP request to the socket's URL: say what it needs (RFC 9110 15.5.22).
        raise ApiError("this is a WebSocket: send an upgrade request", status=426,
                       code="upgrade_required", headers={"Upgrade": "websocket"})
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    await ws.prepare(request)
    client: LiveClient | None = None
    writer: asyncio.Task[None] | None = None
    closed_by_writer = False
    try:
        # A deadline, not receive(timeout=): pongs to our pings would restart that timeout.
        async with asyncio.timeout(section.live_auth_timeout_s):
            first = await ws.receive()
        while first.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            try:
                sub = _subscribe_decoder.decode(first.data)
                # The same rules as REST parameters: text PostgreSQL cannot store, a bbox
                # that is not a box on Earth.
                check_tree(msgspec.to_builtins(sub))
                bbox = parse_bbox(sub.bbox) if sub.bbox is not None else None
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await ws.send_frame(_error("bad_request", str(exc)), WSMsgType.TEXT)
                await ws.close(code=4400, message=b"bad subscribe message")
                return ws
            except ApiError as err:
                await ws.send_frame(_encoder.encode({"type": "error", "code": err.code,
                                                     "message": err.message,
                                                     "field": err.field}), WSMsgType.TEXT)
                await ws.close(code=4400, message=b"bad subscribe message")
                return ws
            try:
                if client is None or sub.token is not None:
                    user, expires_at = _authenticate(request, sub)
                else:
                    user, expires_at = client.user, client.expires_at
            except Unauthorized as err:
                await ws.send_frame(_error(err.code, err.message), WSMsgType.TEXT)
                await ws.close(code=4401, message=b"unauthenticated")
                return ws
            if user.role not in LIVE_ROLES or \
                    (sub.tenant_id is not None and sub.tenant_id != str(user.tenant_id)) or \
                    (client is not None and user.id != client.user.id):
                # A connection belongs to one user (and so one tenant) for its lifetime;
                # a new token on re-subscribe only extends it.
                await ws.send_frame(_error("forbidden", "not allowed to watch this tenant"),
                                    WSMsgType.TEXT)
                await ws.close(code=4403, message=b"forbidden")
                return ws
            allowed = await _allowed_vehicles(request.app[POOL_KEY], user)
            wanted = frozenset(sub.vehicles) if sub.vehicles is not None else None
            vehicles = (allowed & wanted if allowed is not None and wanted is not None
                        else allowed if allowed is not None else wanted)
            if client is None:
                client = LiveClient(ws=ws, user=user, expires_at=expires_at,
                                    event_buffer=section.live_event_buffer,
                                    vehicles=vehicles, bbox=bbox)
                hub.add(client)
            else:
                client.vehicles, client.bbox, client.expires_at = vehicles, bbox, expires_at
                client.pending.clear()
            await ws.send_frame(_encoder.encode({
                "type": "subscribed", "tenant_id": str(user.tenant_id), "role": user.role,
                "bbox": sub.bbox, "vehicles": sorted(vehicles) if vehicles is not None else None,
                "flush_ms": section.live_flush_ms}), WSMsgType.TEXT)
            client.snapshot = await _snapshot(request.app[POOL_KEY], client)
            client.wake.set()
            if writer is None:
                writer = asyncio.create_task(_writer(client, hub), name="live-writer")
            first = await ws.receive()
        # CLOSING: our writer is closing the socket (expired token) and woke this reader.
        closed_by_writer = first.type == WSMsgType.CLOSING
    except TimeoutError:
        await ws.send_frame(_error("timeout", "no subscribe message"), WSMsgType.TEXT)
        await ws.close(code=4401, message=b"no subscribe message")
    finally:
        if writer is not None:
            # A writer that is closing the socket itself (token expired) is let finish, so
            # the client gets a clean close with our code rather than an aborted connection.
            if not closed_by_writer:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                await asyncio.wait_for(writer, 5.0)
        if client is not None:
            hub.remove(client)
        if not ws.closed:
            await ws.close()
    return ws


