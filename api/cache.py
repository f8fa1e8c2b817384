"""Redis-backed response caches (the seed's: vehicle list 5 min, dashboard 1 h).

Invalidation without key scans: each cache name has a per-tenant generation counter that is
part of every key; a write bumps the counter, so older entries are never read again and
expire on their own TTL. Every lookup asks Redis (one round trip, batched with the other
requests' commands of the same event-loop pass); a process that already holds the current
entry's body gets a one-byte "yours is current" instead of the body (`LocalCopies`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from api.metrics import METRICS_KEY

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


class LocalCopies:
    """Bounded LRU of (cache, tenant, query digest) -> (stamp, body) that this process holds.

    A copy is only ever served when Redis confirms, in the same round trip that reads the
    generation, that the current entry carries the copy's stamp: what is served is exactly
    what Redis holds (same invalidation, TTL and tenant keys), minus the transfer.
    """

    def __init__(self, max_entries: int = LOCAL_COPIES_MAX) -> None:
        self.max_entries = max_entries
        self._copies: OrderedDict[tuple[str, UUID, str], tuple[bytes, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, ident: tuple[str, UUID, str]) -> tuple[bytes, bytes] | None:
        """(stamp, body) of a held copy."""
        copy = self._copies.get(ident)
        if copy is not None:
            self._copies.move_to_end(ident)
        return copy

    def put(self, ident: tuple[str, UUID, str], stamp: bytes, body: bytes) -> None:
        """Hold a copy; the least recently used goes when full."""
        self._copies[ident] = (stamp, body)
        self._copies.move_to_end(ident)
        while len(self._copies) > self.max_entries:
            self._copies.popitem(last=False)


COPIES_KEY: web.AppKey[LocalCopies] = web.AppKey("cache_copies", LocalCopies)
LOOKUPS_KEY: web.AppKey[LookupBatcher] = web.AppKey("cache_lookups", LookupBatcher)


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
    digest = hashlib.sha256(variant.encode()).hexdigest()[:24]
    ident = (name, tenant_id, digest)
    prefix = f"{PREFIX}{name}:{tenant_id}:"
    suffix = f":{ENTRY_FORMAT}:{digest}"
    held = copies.get(ident)
    try:
        gen, hit = await app[LOOKUPS_KEY].execute(
            _gen_key(name, tenant_id), prefix, suffix, held[0] if held is not None else b"")
        gen_s = gen.decode() if isinstance(gen, bytes) else str(gen)
        key = f"{prefix}{gen_s}{suffix}"
    except RedisError as exc:
        log.warning("cache %s unavailable: %s", name, exc)
        return msgspec.json.encode(await compute())
    if hit == 1 and held is not None:
        metrics.cache.labels(name, "hit").inc()
        return held[1]
    if isinstance(hit, bytes) and len(hit) > STAMP_LEN:
        metrics.cache.labels(name, "hit").inc()
        body = hit[STAMP_LEN:]
        copies.put(ident, hit[:STAMP_LEN], body)
        return body
    metrics.cache.labels(name, "miss").inc()
    value = msgspec.json.encode(await compute())
    stamp = secrets.token_hex(STAMP_LEN // 2).encode()
    try:
        await app[REDIS_KEY].set(key, stamp + value, ex=ttl_s)
    except RedisError as exc:
        log.warning("cache %s store failed: %s", name, exc)
    else:
        copies.put(ident, stamp, value)
    return value


async def invalidate(request: web.Request, name: str, tenant_id: UUID) -> None:
    """Make every cached entry of `name` for the tenant stale (after a write)."""
    try:
        await request.app[REDIS_KEY].incr(_gen_key(name, tenant_id))
    except RedisError as exc:
        log.warning("cache %s invalidation failed: %s", name, exc)
