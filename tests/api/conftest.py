"""Fixtures of the API tests: a seeded two-tenant world and a running app per module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.config import ApiSection, ApiSettings
from core.settings import DatabaseSettings, MqttSettings, RedisSettings
from deploy import seed
from deploy.services import MQTT_ADMIN_USER
from tests.conftest import TestDatabase

PASSWORD = "Fleet!Test2024"
ROLES = ("admin", "fleet_manager", "driver", "technician", "viewer")


def api_settings(db: TestDatabase, redis_url: str, mqtt_url: str | None = None,
                 **api: Any) -> ApiSettings:
    """Settings for a test app: the test database, shared Redis, no tiles, no broker writes."""
    section: dict[str, Any] = {"environment": "test", "jwt_secret": "t" * 40, "tiles_url": "",
                               "mqtt_credentials": "database", "rate_limit_per_min": 100_000,
                               "db_pool_min": 1, "db_pool_max": 5, "log_json": False,
                               "extensions": False}
    section.update(api)
    return ApiSettings(
        database=DatabaseSettings(url=db.app_url, owner_url=db.owner_url,
                                  ingest_url=db.ingest_url, admin_url=db.admin_url),
        redis=RedisSettings(url=redis_url), api=ApiSection(**section),
        mqtt=MqttSettings(url=mqtt_url) if mqtt_url else MqttSettings())


@dataclass
class Tenant:
    """One seeded tenant."""

    id: uuid.UUID
    slug: str
    users: dict[str, str] = field(default_factory=dict)
    """role -> e-mail"""
    user_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    driver_id: uuid.UUID | None = None
    vehicles: dict[str, uuid.UUID] = field(default_factory=dict)
    """code -> id; "assigned" is the driver's vehicle"""
    geofence_id: uuid.UUID | None = None
    tokens: dict[str, str] = field(default_factory=dict)


async def seed_tenant(conn: asyncpg.Connection, label: str) -> Tenant:
    """A tenant with a user per role, a driver with an assigned vehicle, and a geofence."""
    slug = f"{label}{uuid.uuid4().hex[:8]}"
    tenant = Tenant(id=await seed.create_tenant(conn, slug, f"Tenant {label}"), slug=slug)
    tenant.driver_id = await seed.create_driver(conn, tenant.id, "Dana", "Driver")
    tenant.vehicles["assigned"] = await seed.create_vehicle(
        conn, tenant.id, "assigned", make="Ford", assigned_driver_id=tenant.driver_id)
    tenant.vehicles["other"] = await seed.create_vehicle(conn, tenant.id, "other", make="Volvo")
    for role in ROLES:
        email = f"{role}.{slug}@example.com"
        tenant.users[role] = email
        tenant.user_ids[role] = await seed.create_user(
            conn, tenant.id, email, PASSWORD, role,
            driver_id=tenant.driver_id if role == "driver" else None)
    tenant.geofence_id = await seed.create_geofence(
        conn, tenant.id, seed.circle("Depot", 13.40, 52.52, 300.0, category="depot"))
    return tenant


@dataclass
class World:
    """Two tenants, a running app and helpers."""

    db: TestDatabase
    client: TestClient[Any, Any]
    a: Tenant
    b: Tenant
    redis_url: str

    def auth(self, token: str) -> dict[str, str]:
        """Authorization header."""
        return {"Authorization": f"Bearer {token}"}


async def login(client: TestClient[Any, Any], email: str, password: str = PASSWORD) -> str:
    """Log in and return the access token."""
    resp = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["access_token"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(module_database: TestDatabase, services: Any) -> AsyncIterator[World]:
    """A seeded database and a running app, shared by one test module."""
    redis_url = services.redis_url()
    conn = await asyncpg.connect(module_database.app_url)
    try:
        a = await seed_tenant(conn, "a")
        b = await seed_tenant(conn, "b")
    finally:
        await conn.close()
    app = create_app(api_settings(module_database, redis_url))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        for tenant in (a, b):
            for role, email in tenant.users.items():
                tenant.tokens[role] = await login(client, email)
        yield World(db=module_database, client=client, a=a, b=b, redis_url=redis_url)
    finally:
        await client.close()


@pytest.fixture
def make_client(module_database: TestDatabase, services: Any
                ) -> Callable[..., TestClient[Any, Any]]:
    """Build an extra client for an app with other settings (caller starts and closes it)."""
    def build(**api: Any) -> TestClient[Any, Any]:
        if api.get("mqtt_credentials") == "dynsec":
            api.setdefault("mqtt_admin_url", services.mqtt_url(MQTT_ADMIN_USER))
        settings = api_settings(module_database, services.redis_url(), services.mqtt_url(),
                                **api)
        return TestClient(TestServer(create_app(settings)))
    return build
