"""Fixtures of the integration tests: a tenant with vehicles, vendor mocks on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.mqtt_url import parse_mqtt_url
from core.protocol import Channel, Telemetry, decode, subscription
from deploy.seed import SeededFleet
from deploy.seed import seed_fleet as seed_tenant_fleet

TOKEN_KEY = "test-token-key-0123456789abcdef"


Fleet = SeededFleet
"""A tenant and its vehicles in a test database."""


def seed_fleet(owner_url: str, slug: str, vehicles: dict[str, dict[str, str | None]]) -> Fleet:
    """Insert a tenant and vehicles (code -> extra columns such as samsara_id)."""
    return seed_tenant_fleet(owner_url, slug, vehicles, tenant_name=f"Tenant {slug}")


@pytest.fixture
def fleet(database, tenant_slug) -> Fleet:
    """Tenant with three vehicles linked to the Samsara mock's first three trucks."""
    return seed_fleet(database.owner_url, tenant_slug, {
        f"truck-{i}": {"samsara_id": str(281474976710000 + i), "smartcar_id": None}
        for i in range(3)})


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp app on a free local port; yields its base URL."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def pool(url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small asyncpg pool."""
    p = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@contextlib.asynccontextmanager
async def telemetry_listener(mqtt_url: str,
                             tenant: str) -> AsyncIterator[list[tuple[str, Telemetry]]]:
    """Subscribe to a tenant's telemetry; yields a list filled with (vehicle, message)."""
    target = parse_mqtt_url(mqtt_url)
    got: list[tuple[str, Telemetry]] = []
    async with aiomqtt.Client(target.host, target.port, username=target.username,
                              password=target.password,
                              identifier=f"test-{uuid.uuid4().hex[:8]}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(subscription(Channel.TELEMETRY, tenant=tenant), qos=1)

        async def reader() -> None:
            async for msg in client.messages:
                decoded = decode(bytes(msg.payload), Telemetry)  # type: ignore[arg-type]
                assert isinstance(decoded, Telemetry), decoded
                got.append((str(msg.topic).split("/")[3], decoded))

        task = asyncio.create_task(reader())
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail after the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
