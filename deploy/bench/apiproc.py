"""Shared set-up of the API benchmarks: a throwaway database, a seeded tenant and the API
running as its own process (`fleet api`), so that its memory and CPU are measured alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from core.ports import free_port

BENCH_PASSWORD = "Bench!Pass2024"  # noqa: S105 - throwaway benchmark database


@dataclass
class BenchEnv:
    """A running API process over a seeded throwaway database."""

    base_url: str
    pid: int
    token: str
    tenant_id: UUID
    vehicles: list[tuple[UUID, str]] = field(default_factory=list)
    owner_url: str = ""
    """The throwaway database as its owner (for benchmarks that write history directly)."""


async def _seed(app_url: str, vehicles: int) -> tuple[UUID, str, list[tuple[UUID, str]]]:
    import asyncpg

    from deploy import seed

    conn = await asyncpg.connect(app_url)
    try:
        slug = f"bench{uuid.uuid4().hex[:6]}"
        tenant = await seed.create_tenant(conn, slug, "Benchmark")
        email = f"admin@{slug}.example.com"
        await seed.create_user(conn, tenant, email, BENCH_PASSWORD, "admin")
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
            rows = await conn.fetch(
                "INSERT INTO vehicles (tenant_id, code, make, model, year) "
                "SELECT $1, 'v' || lpad(g::text, 5, '0'), 'Make', 'Model', 2020 "
                "FROM generate_series(1, $2) g RETURNING id, code", tenant, vehicles)
        out = [(r["id"], r["code"]) for r in rows]
    finally:
        await conn.close()
    return tenant, email, out


async def _state(ingest_url: str, tenant: UUID, vehicles: list[tuple[UUID, str]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(ingest_url)
    try:
        await conn.executemany(
            "INSERT INTO vehicle_state (vehicle_id, tenant_id, time, last_seq, location, "
            "speed_kph, moving, ignition) VALUES ($1, $2, now(), 0, "
            "ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, 0, false, false)",
            [(vid, tenant, 13.0 + (i % 100) / 100, 52.0 + (i // 100) / 100)
             for i, (vid, _) in enumerate(vehicles)])
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def api_process(*, vehicles: int, with_state: bool, extra_env: dict[str, str] | None
                      = None, log: bool = False) -> AsyncIterator[BenchEnv]:
    """Create a database, seed it, run `fleet api` on a free port; clean everything up."""
    import aiohttp

    from deploy.bench import stop_process
    from deploy.bench.scratch import local_database, scratch_database
    from deploy.services import local_services

    services = local_services()
    proc: subprocess.Popen[bytes] | None = None
    with scratch_database(local_database(), "api") as scratch:
        try:
            app_url, owner_url, ingest_url = scratch.app_url, scratch.owner_url, scratch.ingest_url
            tenant, email, rows = await _seed(app_url, vehicles)
            if with_state:
                await _state(ingest_url, tenant, rows)
            port = free_port()
            env = {**os.environ, "FLEET_DATABASE_URL": app_url,
                   "FLEET_DATABASE_OWNER_URL": owner_url, "FLEET_REDIS_URL":
                   services.redis_url(), "FLEET_API_JWT_SECRET": secrets.token_urlsafe(48),
                   "FLEET_API_ENVIRONMENT": "test", "FLEET_API_TILES_URL": "",
                   "FLEET_API_RATE_LIMIT_PER_MIN": "0", "FLEET_API_JWT_TTL_S": "3600",
                   "FLEET_API_EXTENSIONS": "false", "FLEET_API_DB_POOL_MAX": "10",
                   **(extra_env or {})}
            proc = subprocess.Popen(  # noqa: ASYNC220 - start only
                [sys.executable, "-c", "import sys; from deploy.cli import main; sys.exit(main())",
                 "api", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=subprocess.DEVNULL,
                stderr=None if log else subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            async with aiohttp.ClientSession() as session:
                while True:
                    try:
                        async with session.get(f"{base}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the API process did not become ready")
                    await asyncio.sleep(0.2)
                async with session.post(f"{base}/api/auth/login",
                                        json={"email": email, "password": BENCH_PASSWORD}) as resp:
                    token = (await resp.json())["access_token"]
            yield BenchEnv(base_url=base, pid=proc.pid, token=token, tenant_id=tenant,
                           owner_url=owner_url,
                           vehicles=rows)
        finally:
            stop_process(proc)


async def publish_positions(redis_url: str, tenant_id: UUID, vehicles: Sequence[tuple[UUID, str]],
                            rate_hz: float, stop: asyncio.Event) -> None:
    """Every vehicle's position at `rate_hz`, published to Redis exactly as the stream does
    (`core.live`, `t_ms` = `sent_ms` = publish time), spread over each second in ten ticks;
    the vehicles drive slowly east. Until `stop` is set."""
    import redis.asyncio as aioredis

    from core.live import LivePosition, encode_live, live_channel

    channel = live_channel(tenant_id)
    ticks_per_s = 10
    per_tick = max(1, round(len(vehicles) * rate_hz / ticks_per_s))
    i = 0
    next_t = time.monotonic()
    redis = aioredis.Redis.from_url(redis_url)
    try:
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(per_tick):
                    vid, code = vehicles[i % len(vehicles)]
                    k = i // len(vehicles)
                    pipe.publish(channel, encode_live(LivePosition(
                        vehicle_id=str(vid), code=code, t_ms=now_ms, sent_ms=now_ms,
                        lat=52.0 + (i % 100) / 100 + k * 1e-5, lon=13.0 + k * 1e-5,
                        speed_kph=40.0, heading_deg=90.0, ignition=True, moving=True)))
                    i += 1
                await pipe.execute()
            next_t += 1 / ticks_per_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        await redis.aclose()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
