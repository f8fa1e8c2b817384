"""Redis-backed response caches (the seed's: vehicle list 5 min, dashboard 1 h).

Invalidation without key scans: each cache name has a per-tenant generation counter that is
part of every key; a write bumps the counter, so older entries are never read again and
expire on their own TTL. A lookup asks Redis (one round trip, batched with the other
requests' commands of the same event-loop pass); a process that already holds the current
entry's body gets a one-byte "yours is current" instead of the body (`LocalCopies`).

A copy that Redis confirmed current less than `api.cache_local_trust_s` ago is served
without asking again, as long as nothing says it changed: every write publishes the new
generation on `INVALIDATIONS` in the same script that bumps it, each process keeps a
subscription (`Coherence`), and a copy whose generation is no longer the one last pushed is
not served. So a write through any replica is seen by every replica as soon as Redis's push
reaches it; what no push announces (an entry evicted or flushed, the subscription lost
without a sign) is noticed at the next confirmation, within the trust time.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from api.metrics import METRICS_KEY
from api.tasks import bounded, cancel_and_wait

log = logging.getLogger("api.cache")
REDIS_KEY: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
PREFIX = "fleet:cache:"


class RedisBatcher:
    """Sends the Redis commands that requests issue in one event-loop pass as one pipeline.

    Under concurrency most of a Redis call's cost is the client library's per-call work
    (take a pooled connection, check it, write, wait), not Redis. Commands queued while the
    loop runs the ready requests are flushed on the next pass, in one non-transactional
    pipeline on one connection; every caller gets its own reply or exception (a command's
    error stays its own; a connection failure fails the whole batch). Each command is one
    atomic call (a script where several steps belong together), so nothing depends on
    which commands share a batch. The queue is unbounded by design: it only holds the
    commands of requests already being served, whose number the server's connections bound.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """Run one command (``execute_command`` arguments) in the next batch; its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One reply (or exception) per command, in order."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._round_trip([args for args, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets it and decides
            _fail(batch, exc)
            return
        except BaseException:  # cancelled (shutdown): nobody may wait forever
            _fail(batch, RedisError("Redis batch cancelled"))
            raise
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


BATCHER_KEY: web.AppKey[RedisBatcher] = web.AppKey("redis_batcher", RedisBatcher)


def _gen_key(name: str, tenant_id: UUID) -> str:
    return f"{PREFIX}{name}:{tenant_id}:gen"


# Read the generation, then the entry of that generation, for each lookup of a batch (one
# key and three arguments each). An entry is a 16-character stamp followed by the JSON body.
# A caller that holds a copy of the body names its stamp (third argument); when the current
# entry carries that very stamp, only `1` comes back instead of the body. Returns
# {generation, 1 | entry | false} per lookup, flattened. Read-only, so an error fails the
# batch's lookups without any effect. (Single-instance Redis: entry keys are built here.)
_LOOKUPS = """
local out = {}
for i = 1, #KEYS do
  local gen = redis.call('GET', KEYS[i]) or '0'
  local key = ARGV[3 * i - 2] .. gen .. ARGV[3 * i - 1]
  local stamp = ARGV[3 * i]
  out[2 * i - 1] = gen
  if stamp ~= '' and redis.call('GETRANGE', key, 0, 15) == stamp then
    out[2 * i] = 1
  else
    out[2 * i] = redis.call('GET', key)
  end
end
return out
"""


class LookupBatcher(RedisBatcher):
    """The cache lookups of one event-loop pass as one script call: one command and one
    reply for the batch (redis-py's per-command work was most of a lookup's cost).

    `execute(gen_key, prefix, suffix, stamp)` returns ``[generation, 1 | entry | None]``.
    """

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        argv = [arg for command in commands for arg in command[1:]]
        flat: list[Any] = await self.redis.eval(
            _LOOKUPS, len(commands), *(command[0] for command in commands), *argv)
        return [flat[i:i + 2] for i in range(0, len(flat), 2)]


STAMP_LEN = 16
ENTRY_FORMAT = "s1"
"""Part of every entry key: entries of another layout are never read as this one."""
LOCAL_COPIES_MAX = 1024
"""Cached bodies one process keeps a copy of (the vehicle page is about 20 KB)."""


KNOWN_MAX = 100_000
"""(cache, tenant) generations one process remembers from the pushes."""
INVALIDATIONS = f"{PREFIX}invalidations"
"""Pub/sub channel of new generations: ``{name} {tenant_id} {generation}``."""


@dataclass(slots=True)
class Copy:
    """A cached body this process holds, and when Redis last said it is current."""

    stamp: bytes
    body: bytes
    generation: int
    epoch: int
    """`Coherence.epoch` when the lookup that confirmed it was sent."""
    confirmed_at: float
    """`time.monotonic()` when that lookup was sent."""


class LocalCopies:
    """Bounded LRU of (cache, tenant, query variant) -> `Copy` that this process holds.

    A copy is served when Redis confirms, in the same round trip that reads the generation,
    that the current entry carries the copy's stamp, or when that confirmation is recent and
    no push since says otherwise (`Coherence.current`): what is served is what Redis holds
    (same invalidation, TTL and tenant keys), minus the transfer.
    """

    def __init__(self, max_entries: int = LOCAL_COPIES_MAX) -> None:
        self.max_entries = max_entries
        self._copies: OrderedDict[tuple[str, UUID, str], Copy] = OrderedDict()

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, ident: tuple[str, UUID, str]) -> Copy | None:
        """A held copy."""
        copy = self._copies.get(ident)
        if copy is not None:
            self._copies.move_to_end(ident)
        return copy

    def put(self, ident: tuple[str, UUID, str], copy: Copy) -> None:
        """Hold a copy; the least recently used goes when full."""
        self._copies[ident] = copy
        self._copies.move_to_end(ident)
        while len(self._copies) > self.max_entries:
            self._copies.popitem(last=False)


class Coherence:
    """The generations Redis pushes on `INVALIDATIONS`, as this process last heard them.

    A copy may be served without asking Redis only while the subscription that would have
    told of a change has been up since the copy was confirmed (`epoch`: a new one on every
    subscription, and everything heard before is forgotten), has answered a PING within the
    trust time (a half-open connection never errors), and the generation last heard for the
    copy's cache and tenant is the copy's. Writes of this process note their generation
    before they answer, so it reads its own writes at once.
    """

    def __init__(self, redis_url: str, trust_s: float) -> None:
        self.redis_url = redis_url
        self.trust_s = trust_s
        self.live = False
        self.epoch = 0
        self.last_pong = 0.0
        """`time.monotonic()` of the subscription's last sign of life (PONG or confirmation)."""
        self.known: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None

    async def start(self) -> None:
        """Subscribe in the background (copies are confirmed with Redis until it is up)."""
        if self.trust_s <= 0:
            return
        # No retry of any error: redis-py's failure handler would otherwise reconnect and
        # subscribe again before the error reaches the loop below (pushes published in
        # between would be missed while copies stayed trusted). The loop reconnects itself,
        # under a new epoch.
        self._redis = aioredis.Redis.from_url(
            self.redis_url, retry=Retry(NoBackoff(), 0, supported_errors=()))
        self._task = asyncio.create_task(self._read_loop(), name="cache-coherence")

    async def stop(self) -> None:
        """Stop listening."""
        self.live = False
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._redis is not None:
            await bounded(self._redis.aclose())

    def note(self, name: str, tenant: str, generation: int, *, pushed: bool = False) -> None:
        """Remember a generation. A lookup's reply never moves it back (a push may have
        overtaken it); a push is taken as it is, since pushes arrive in order on one
        connection (so a counter reset in Redis, a FLUSHDB, is followed too)."""
        key = (name, tenant)
        if pushed or generation > self.known.get(key, -1):
            self.known[key] = generation
        self.known.move_to_end(key)
        while len(self.known) > KNOWN_MAX:
            self.known.popitem(last=False)

    def distrust(self) -> None:
        """Every copy held now must be confirmed with Redis before it is served again."""
        self.epoch += 1

    def current(self, name: str, tenant: str, copy: Copy, now: float) -> bool:
        """Whether `copy` may be served without asking Redis."""
        return (self.live and copy.epoch == self.epoch
                and now - copy.confirmed_at < self.trust_s
                and now - self.last_pong < self.trust_s
                and self.known.get((name, tenant)) == copy.generation)

    def _lost(self) -> None:
        self.live = False
        self.epoch += 1
        self.subscribed.clear()

    def _confirmed(self) -> None:
        self.known.clear()
        self.epoch += 1
        self.last_pong = time.monotonic()
        self.live = True
        self.subscribed.set()

    def _apply(self, data: bytes) -> None:
        try:
            name, tenant, generation = data.decode().split(" ")
            self.note(name, tenant, int(generation), pushed=True)
        except ValueError:
            # Unreadable: the generation it announced is unknown, so trust nothing held.
            log.warning("cache: unreadable invalidation %r", data[:100])
            self.distrust()

    async def _read_loop(self) -> None:
        assert self._redis is not None  # noqa: S101 - set by start()
        backoff_s = 0.5
        ping_every_s = max(0.05, self.trust_s / 2)
        while True:
            pubsub = self._redis.pubsub()
            try:
                await _subscribed(pubsub)
                self._confirmed()
                backoff_s = 0.5
                next_ping = time.monotonic() + ping_every_s
                while True:
                    msg = await pubsub.get_message(timeout=ping_every_s)
                    if msg is not None:
                        if msg["type"] == "message":
                            self._apply(msg["data"])
                        elif msg["type"] == "pong":
                            self.last_pong = time.monotonic()
                        elif msg["type"] == "subscribe":  # subscribed again: start afresh
                            self._confirmed()
                    if time.monotonic() >= next_ping:
                        await pubsub.ping()
                        next_ping = time.monotonic() + ping_every_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: stop trusting, reconnect
                self._lost()  # first: no copy is trusted from this moment
                log.warning("cache: invalidation subscription lost (%s); copies are confirmed "
                            "with Redis until it is back", exc)
            finally:
                self.live = False
                await bounded(pubsub.aclose())
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 10.0)


async def _subscribed(pubsub: PubSub) -> None:
    """Subscribe to `INVALIDATIONS` and wait for Redis's confirmation: from then on every
    push reaches this process."""
    await pubsub.subscribe(INVALIDATIONS)
    while True:
        msg = await pubsub.get_message(timeout=5.0)
        if msg is None:
            raise RedisError("no subscription confirmation within 5 s")
        if msg["type"] == "subscribe":
            return


COPIES_KEY: web.AppKey[LocalCopies] = web.AppKey("cache_copies", LocalCopies)
COHERENCE_KEY: web.AppKey[Coherence] = web.AppKey("cache_coherence", Coherence)
LOOKUPS_KEY: web.AppKey[LookupBatcher] = web.AppKey("cache_lookups", LookupBatcher)


# A tenant's id as text, for the keys of every cached request: str(UUID) is Python code.
_tenant_text = functools.lru_cache(maxsize=4096)(str)


async def cached(request: web.Request, name: str, tenant_id: UUID, *, variant: str,
                 ttl_s: int, compute: Callable[[], Awaitable[Any]]) -> bytes:
    """Return the cached JSON document (bytes, served as is) or compute, store and return it.

    Redis trouble degrades to computing every time (logged), never to an error answer.
    A TTL of 0 disables the cache.
    """
    if ttl_s <= 0:
        return msgspec.json.encode(await compute())
    app = request.app
    metrics = app[METRICS_KEY]
    copies = app[COPIES_KEY]
    coherence = app[COHERENCE_KEY]
    tenant = _tenant_text(tenant_id)
    ident = (name, tenant_id, variant)
    held = copies.get(ident)
    if held is not None and coherence.live:
        # A push that arrived with this request is applied by the subscription's task once
        # the loop runs the callbacks already scheduled: let it, then decide.
        await asyncio.sleep(0)
        if coherence.current(name, tenant, held, time.monotonic()):
            metrics.cache_result(name, "hit")
            return held.body
    digest = hashlib.sha256(variant.encode()).hexdigest()[:24]
    prefix = f"{PREFIX}{name}:{tenant}:"
    suffix = f":{ENTRY_FORMAT}:{digest}"
    epoch = coherence.epoch if coherence.live else -1
    # Confirmed as of when the lookup is sent, not when its reply is read.
    asked_at = time.monotonic()
    try:
        gen, hit = await app[LOOKUPS_KEY].execute(
            _gen_key(name, tenant_id), prefix, suffix, held.stamp if held is not None else b"")
        gen_s = gen.decode() if isinstance(gen, bytes) else str(gen)
        generation = int(gen_s)
        key = f"{prefix}{gen_s}{suffix}"
    except (RedisError, ValueError) as exc:
        log.warning("cache %s unavailable: %s", name, exc)
        return msgspec.json.encode(await compute())
    coherence.note(name, tenant, generation)
    if epoch != coherence.epoch:
        epoch = -1  # the subscription changed meanwhile: a push may have been missed
    if hit == 1 and held is not None:
        metrics.cache_result(name, "hit")
        held.generation, held.epoch, held.confirmed_at = generation, epoch, asked_at
        return held.body
    if isinstance(hit, bytes) and len(hit) > STAMP_LEN:
        metrics.cache_result(name, "hit")
        body = hit[STAMP_LEN:]
        copies.put(ident, Copy(hit[:STAMP_LEN], body, generation, epoch, asked_at))
        return body
    metrics.cache_result(name, "miss")
    value = msgspec.json.encode(await compute())
    stamp = secrets.token_hex(STAMP_LEN // 2).encode()
    try:
        await app[REDIS_KEY].set(key, stamp + value, ex=ttl_s)
    except RedisError as exc:
        log.warning("cache %s store failed: %s", name, exc)
    else:
        # Confirmed as of the lookup: a write since then has bumped the generation and is
        # heard (pushed) or found at the next confirmation.
        copies.put(ident, Copy(stamp, value, generation, epoch, asked_at))
    return value


# Bump the generation and tell every process, in one atomic step: no process can read the
# new generation's absence of a push.
_INVALIDATE = """
local gen = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. gen)
return gen
"""


async def invalidate(request: web.Request, name: str, tenant_id: UUID) -> None:
    """Make every cached entry of `name` for the tenant stale (after a write), here at once
    and in every other process as soon as the push reaches it."""
    try:
        gen = await request.app[REDIS_KEY].eval(
            _INVALIDATE, 1, _gen_key(name, tenant_id), INVALIDATIONS, f"{name} {tenant_id}")
    except RedisError as exc:
        log.warning("cache %s invalidation failed: %s", name, exc)
        # Nobody heard of this write: no copy of this process may be served unconfirmed.
        request.app[COHERENCE_KEY].distrust()
        return
    request.app[COHERENCE_KEY].note(name, str(tenant_id), int(gen))
