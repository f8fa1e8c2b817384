"""Redis-backed response caches (the seed's: vehicle list 5 min, dashboard 1 h).

Invalidation without key scans: each cache name has a per-tenant generation counter that is
part of every key; a write bumps the counter, so older entries are never read again and
expire on their own TTL.
"""

from __future__ import annotations

import hashlib
import logging
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


def _gen_key(name: str, tenant_id: UUID) -> str:
    return f"{PREFIX}{name}:{tenant_id}:gen"


# One round trip instead of two: read the generation, then the entry of that generation.
# Returns {generation, entry or false}. (Single-instance Redis: the entry key is built here.)
_LOOKUP = """
local gen = redis.call('GET', KEYS[1]) or '0'
return {gen, redis.call('GET', ARGV[1] .. gen .. ARGV[2])}
"""


async def cached(request: web.Request, name: str, tenant_id: UUID, *, variant: str,
                 ttl_s: int, compute: Callable[[], Awaitable[Any]]) -> bytes:
    """Return the cached JSON document (bytes, served as is) or compute, store and return it.

    Redis trouble degrades to computing every time (logged), never to an error answer.
    A TTL of 0 disables the cache.
    """
    if ttl_s <= 0:
        return msgspec.json.encode(await compute())
    redis = request.app[REDIS_KEY]
    metrics = request.app[METRICS_KEY]
    digest = hashlib.sha256(variant.encode()).hexdigest()[:24]
    prefix = f"{PREFIX}{name}:{tenant_id}:"
    try:
        gen, hit = await redis.eval(_LOOKUP, 1, _gen_key(name, tenant_id), prefix,
                                    f":{digest}")
        gen_s = gen.decode() if isinstance(gen, bytes) else str(gen)
        key = f"{prefix}{gen_s}:{digest}"
    except RedisError as exc:
        log.warning("cache %s unavailable: %s", name, exc)
        return msgspec.json.encode(await compute())
    if isinstance(hit, bytes):
        metrics.cache.labels(name, "hit").inc()
        return hit
    metrics.cache.labels(name, "miss").inc()
    value = msgspec.json.encode(await compute())
    try:
        await redis.set(key, value, ex=ttl_s)
    except RedisError as exc:
        log.warning("cache %s store failed: %s", name, exc)
    return value


async def invalidate(request: web.Request, name: str, tenant_id: UUID) -> None:
    """Make every cached entry of `name` for the tenant stale (after a write)."""
    try:
        await request.app[REDIS_KEY].incr(_gen_key(name, tenant_id))
    except RedisError as exc:
        log.warning("cache %s invalidation failed: %s", name, exc)
