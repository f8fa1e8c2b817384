"""The cached request path's shortcuts change costs, never outcomes: verified tokens are
reused only until their own expiry, batched Redis commands keep their own replies, and a
process's copy of a cached body is served only while Redis holds that very entry."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import jwt
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from api.auth import TOKENS_KEY, AuthUser, TokenIssuer, VerifiedTokens
from api.cache import (
    BATCHER_KEY,
    COHERENCE_KEY,
    COPIES_KEY,
    LOOKUPS_KEY,
    PREFIX,
    Copy,
    RedisBatcher,
)
from api.config import ApiSection
from api.errors import Unauthorized
from deploy import seed
from tests.api.conftest import PASSWORD, World, login

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECTION = ApiSection(environment="test", jwt_secret="k" * 48)
USER = AuthUser(id=uuid.uuid4(), tenant_id=uuid.uuid4(), role="viewer", email="v@example.com")


class Clock:
    """A settable clock for the verified-token cache."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr("api.auth.jwt.decode", counted)
    return calls


# -- verified tokens -------------------------------------------------------------------------

async def test_a_token_is_verified_once_then_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second use of a token costs a digest and a dict lookup, not a JWT verification."""
    calls = _counting_decode(monkeypatch)
    issuer = TokenIssuer(SECTION)
    token = issuer.access_token(USER)
    assert issuer.user_from_access(token) == USER
    assert issuer.user_from_access(token) == USER
    assert len(calls) == 1
    assert len(issuer.verified) == 1


async def test_a_cached_token_stops_working_at_its_expiry() -> None:
    """PyJWT's rule, kept by the cache: a token is expired when exp <= now."""
    clock = Clock()
    issuer = TokenIssuer(SECTION, verified=VerifiedTokens(clock=clock))
    token = issuer.access_token(USER, now=clock.now)
    exp = int(clock.now) + SECTION.jwt_ttl_s
    assert issuer.user_from_access(token) == USER
    clock.now = exp - 0.001
    assert issuer.user_from_access(token) == USER
    clock.now = exp
    with pytest.raises(Unauthorized) as err:
        issuer.user_from_access(token)
    assert err.value.code == "token_expired"
    assert len(issuer.verified) == 0


async def test_refused_tokens_are_never_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad signatures, other keys, refresh tokens and expired tokens are checked every time."""
    calls = _counting_decode(monkeypatch)
    issuer = TokenIssuer(SECTION)
    other = TokenIssuer(ApiSection(environment="test", jwt_secret="o" * 48))
    good = issuer.access_token(USER)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    expired = issuer.access_token(USER, now=time.time() - SECTION.jwt_ttl_s - 5)
    refresh = issuer.refresh_token(USER, uuid.uuid4())
    for token, code in ((tampered, "invalid_token"), (other.access_token(USER), "invalid_token"),
                        (expired, "token_expired"), (refresh, "invalid_token")):
        for _ in range(2):
            with pytest.raises(Unauthorized) as err:
                issuer.user_from_access(token)
            assert err.value.code == code
    assert len(calls) == 8
    assert len(issuer.verified) == 0


async def test_verdicts_belong_to_their_issuer() -> None:
    """Another signing key (another app, a rotated secret) never sees a cached verdict."""
    issuer = TokenIssuer(SECTION)
    token = issuer.access_token(USER)
    assert issuer.user_from_access(token) == USER
    rotated = TokenIssuer(ApiSection(environment="test", jwt_secret="r" * 48))
    with pytest.raises(Unauthorized):
        rotated.user_from_access(token)


async def test_the_cache_is_bounded_and_keeps_no_tokens() -> None:
    """Least recently used entries go first; keys are digests, not the bearer tokens."""
    issuer = TokenIssuer(SECTION, verified=VerifiedTokens(max_entries=3))
    tokens = [issuer.access_token(USER) for _ in range(5)]
    for token in tokens:
        issuer.user_from_access(token)
    assert len(issuer.verified) == 3
    keys = list(issuer.verified._entries)
    assert keys == [VerifiedTokens.key(t) for t in tokens[2:]]
    assert all(t.encode() not in k for t in tokens for k in keys)


async def test_logout_keeps_its_documented_effect(world: World) -> None:
    """Logout revokes the refresh tokens at once; access tokens end at their expiry, cached
    or not (docs/api.md, Authentication)."""
    c = world.client
    resp = await c.post("/api/auth/login",
                        json={"email": world.a.users["viewer"], "password": PASSWORD})
    issued = await resp.json()
    headers = world.auth(issued["access_token"])
    assert (await c.get("/api/vehicles", headers=headers)).status == 200
    assert (await c.post("/api/auth/logout", headers=headers)).status == 204
    refused = await c.post("/api/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert refused.status == 401


async def test_an_expired_cached_token_is_refused_by_the_api(world: World) -> None:
    """A token used (and cached) while valid answers 401 token_expired once it expires."""
    tokens = world.client.app[TOKENS_KEY]
    user = AuthUser(id=world.a.user_ids["viewer"], tenant_id=world.a.id, role="viewer",
                    email=world.a.users["viewer"])
    token = tokens.access_token(user, now=time.time() - tokens.ttl_s + 2)
    assert (await world.client.get("/api/auth/me", headers=world.auth(token))).status == 200
    await asyncio.sleep(max(0.0, int(time.time()) + 2 - time.time()) + 0.1)
    resp = await world.client.get("/api/auth/me", headers=world.auth(token))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "token_expired"


# -- batched Redis commands ------------------------------------------------------------------

async def test_concurrent_commands_share_a_round_trip(redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands of one loop pass go as one pipeline; each caller gets its own reply or error."""
    redis = aioredis.Redis.from_url(redis_url)
    prefix = f"test:batch:{uuid.uuid4().hex}"
    try:
        await redis.set(f"{prefix}:text", "not a number")
        batcher = RedisBatcher(redis)
        sends = 0
        real_send = batcher._send

        async def counted(batch: Any) -> None:
            nonlocal sends
            sends += 1
            await real_send(batch)

        monkeypatch.setattr(batcher, "_send", counted)
        results = await asyncio.gather(
            *(batcher.execute("INCR", f"{prefix}:n{i % 3}") for i in range(9)),
            batcher.execute("INCR", f"{prefix}:text"), return_exceptions=True)
        assert sends == 1
        assert sorted(r for r in results[:9] if isinstance(r, int)) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
        assert isinstance(results[9], ResponseError)
        assert await batcher.execute("GET", f"{prefix}:n0") == b"3"
        assert sends == 2
    finally:
        await redis.delete(*[f"{prefix}:{k}" for k in ("text", "n0", "n1", "n2")])
        await redis.aclose()


async def test_a_redis_outage_fails_every_waiting_caller() -> None:
    """No caller waits forever: a connection failure reaches all commands of the batch."""
    redis = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        batcher = RedisBatcher(redis)
        results = await asyncio.wait_for(asyncio.gather(
            *(batcher.execute("GET", "x") for _ in range(4)), return_exceptions=True), 10)
        assert all(isinstance(r, RedisError) for r in results), results
    finally:
        await redis.aclose()


async def test_concurrent_requests_are_each_counted_by_the_rate_limit(
        make_client: Any, world: World) -> None:
    """The limiter's count is exact when its increments share batches."""
    client = make_client(rate_limit_per_min=5)
    await client.start_server()
    try:
        headers = world.auth(await login(world.client, world.a.users["technician"]))
        if 60 - time.time() % 60 < 3:  # one calendar minute for the whole burst
            await asyncio.sleep(3.5)
        responses = await asyncio.gather(*(client.get("/api/auth/me", headers=headers)
                                           for _ in range(8)))
        assert sorted(r.status for r in responses) == [200] * 5 + [429] * 3
    finally:
        await client.close()


# -- local copies of cached bodies -----------------------------------------------------------

async def _codes(client: Any, headers: dict[str, str]) -> list[str]:
    resp = await client.get("/api/vehicles?limit=100", headers=headers)
    assert resp.status == 200
    return [v["code"] for v in (await resp.json())["items"]]


async def test_a_write_on_another_replica_is_seen_at_once(make_client: Any,
                                                          world: World) -> None:
    """Two API processes share Redis: a write through one invalidates the other's copy."""
    replica = make_client()
    await replica.start_server()
    try:
        headers = world.auth(world.a.tokens["fleet_manager"])
        before = await _codes(world.client, headers)
        assert before == await _codes(world.client, headers)  # now held locally
        assert len(world.client.app[COPIES_KEY]) >= 1
        code = f"r{uuid.uuid4().hex[:8]}"
        created = await replica.post("/api/vehicles", json={"code": code}, headers=headers)
        assert created.status == 201, await created.text()
        assert code in await _codes(world.client, headers)
    finally:
        await replica.close()


async def test_a_held_copy_is_not_served_once_redis_lost_the_entry(world: World) -> None:
    """Entries that vanish from Redis (eviction, restart, flush) are recomputed, not served
    from this process's copy, even when the generation did not change."""
    headers = world.auth(world.a.tokens["admin"])
    before = await _codes(world.client, headers)
    assert before == await _codes(world.client, headers)
    # A change the API did not make (no invalidation), then the entries disappear.
    code = f"x{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(world.db.app_url)
    try:
        await seed.create_vehicle(conn, world.a.id, code)
    finally:
        await conn.close()
    assert code not in await _codes(world.client, headers)  # still the cached entry
    redis = world.client.app[BATCHER_KEY].redis
    keys = [k async for k in redis.scan_iter(f"{PREFIX}vehicles:{world.a.id}:*")]
    await redis.delete(*[k for k in keys if not k.endswith(b":gen")])
    # No write announced it: the copy confirmed a moment ago may still be served, but not
    # past the trust time, after which Redis is asked again.
    await asyncio.sleep(world.client.app[COHERENCE_KEY].trust_s)
    assert code in await _codes(world.client, headers)


async def test_a_trusted_copy_is_served_without_asking_redis(make_client: Any,
                                                             world: World) -> None:
    """Within the trust time a confirmed copy costs no Redis command; with a trust of 0
    every request asks Redis."""
    headers = world.auth(world.a.tokens["viewer"])
    await _codes(world.client, headers)
    await _codes(world.client, headers)
    assert world.client.app[COHERENCE_KEY].live
    sent = 0
    lookups = world.client.app[LOOKUPS_KEY]
    real = lookups.execute

    async def counting(*args: Any) -> Any:
        nonlocal sent
        sent += 1
        return await real(*args)

    lookups.execute = counting  # type: ignore[method-assign]
    try:
        for _ in range(5):
            await _codes(world.client, headers)
        assert sent == 0
        # The subscription proves it is alive by PONGs (a half-open connection never errors);
        # without a recent one, nothing is trusted.
        coherence = world.client.app[COHERENCE_KEY]
        await asyncio.sleep(coherence.trust_s * 1.5)
        assert time.monotonic() - coherence.last_pong < coherence.trust_s
        await _codes(world.client, headers)  # confirmed again: the copy is older than trust
        assert sent == 1
        key = ("vehicles", str(world.a.id))
        late = coherence.last_pong + coherence.trust_s  # no PONG for the whole trust time
        young = Copy(b"s" * 16, b"{}", coherence.known[key], coherence.epoch, late - 0.01)
        assert coherence.current(*key, young, late - 0.02)
        assert not coherence.current(*key, young, late)
        strict = make_client(cache_local_trust_s=0)
        await strict.start_server()
        try:
            strict_lookups = strict.app[LOOKUPS_KEY]
            strict_real = strict_lookups.execute
            asked = 0

            async def counting_strict(*args: Any) -> Any:
                nonlocal asked
                asked += 1
                return await strict_real(*args)

            strict_lookups.execute = counting_strict  # type: ignore[method-assign]
            for _ in range(3):
                await _codes(strict, headers)
            assert asked == 3
            assert not strict.app[COHERENCE_KEY].live
        finally:
            await strict.close()
    finally:
        del lookups.execute


async def test_a_lost_subscription_stops_trust_until_it_is_back(make_client: Any,
                                                                world: World) -> None:
    """Redis drops the process's subscription (a restart, `CLIENT KILL`): a write through
    another replica meanwhile is missed by the push, yet never served stale; trust comes
    back with the new subscription."""
    replica = make_client()
    await replica.start_server()
    coherence = world.client.app[COHERENCE_KEY]
    try:
        headers = world.auth(world.a.tokens["fleet_manager"])
        await _codes(world.client, headers)
        await _codes(world.client, headers)
        epoch = coherence.epoch
        redis = world.client.app[BATCHER_KEY].redis
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        code = f"k{uuid.uuid4().hex[:8]}"
        created = await replica.post("/api/vehicles", json={"code": code}, headers=headers)
        assert created.status == 201, await created.text()
        assert code in await _codes(world.client, headers)
        await asyncio.wait_for(coherence.subscribed.wait(), 15)
        assert coherence.epoch > epoch
        assert code in await _codes(world.client, headers)
    finally:
        await replica.close()


async def test_copies_are_per_tenant(world: World) -> None:
    """The same query by two tenants never shares a body."""
    a = await _codes(world.client, world.auth(world.a.tokens["viewer"]))
    b = await _codes(world.client, world.auth(world.b.tokens["viewer"]))
    a_again = await _codes(world.client, world.auth(world.a.tokens["viewer"]))
    assert a == a_again
    ids_a = set(world.a.vehicles.values())
    ids_b = set(world.b.vehicles.values())
    resp = await world.client.get("/api/vehicles?limit=100",
                                  headers=world.auth(world.b.tokens["viewer"]))
    seen = {uuid.UUID(v["id"]) for v in (await resp.json())["items"]}
    assert ids_b <= seen
    assert not seen & ids_a
    assert b


async def test_lookups_batched_together_keep_their_tenant(world: World) -> None:
    """Concurrent lookups of two tenants share one script call and still get their own body."""
    tenants = [world.a, world.b] * 6
    responses = await asyncio.gather(*(
        world.client.get("/api/vehicles?limit=100", headers=world.auth(t.tokens["viewer"]))
        for t in tenants))
    for tenant, other, resp in zip(tenants, tenants[1:] + tenants[:1], responses, strict=True):
        assert resp.status == 200
        seen = {uuid.UUID(v["id"]) for v in (await resp.json())["items"]}
        assert set(tenant.vehicles.values()) <= seen
        assert not seen & set(other.vehicles.values())
