"""Shared fixtures: the project's real local services, started once per test session.

Every test that needs the database gets its own throwaway database (created from the
migrations), and every MQTT test its own tenant id, so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from deploy.services import (
    ADMIN_ROLE,
    APP_ROLE,
    INGEST_ROLE,
    OWNER_ROLE,
    LocalServices,
    drop_database,
    local_services,
    provision_database,
)
from storage.migrate import migrate


@pytest.fixture(scope="session")
def services() -> LocalServices:
    """The project's PostgreSQL, Mosquitto and Redis, up and healthy (idempotent)."""
    # The same settings as `fleet services`, so FLEET_SERVICES_* variables move the test stack too.
    local = local_services()
    local.up()
    return local


@dataclass(frozen=True)
class TestDatabase:
    """A migrated throwaway database and the URL of each role in it."""

    __test__ = False
    name: str
    admin_url: str
    owner_url: str
    app_url: str
    ingest_url: str
    edition: str = "apache"
    """TimescaleDB licence of the cluster: 'timescale' or 'apache' (the tests run on both)."""

    def refresh_rollups(self, start: str, end: str) -> None:
        """Bring telemetry_1m/1h up to date for [start, end) as the running system would:
        on the Apache edition the stream's call (as the ingest role), on the Timescale edition
        the owner's refresh of the continuous aggregates (what their policies do)."""
        url = self.owner_url if self.edition == "timescale" else self.ingest_url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CALL fleet_refresh_rollups(%s, %s)", (start, end))


def cluster_edition(services: LocalServices) -> str:
    """The licence the project's PostgreSQL runs with (FLEET_SERVICES_TIMESCALEDB_LICENSE)."""
    return services.settings.timescaledb_license


def make_database(services: LocalServices, *, migrated: bool = True) -> TestDatabase:
    """Create a fresh database (extensions in place) and optionally migrate it."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    provision_database(services.pg_url(ADMIN_ROLE, "postgres"), name)
    db = TestDatabase(
        name=name,
        admin_url=services.pg_url(ADMIN_ROLE, name),
        owner_url=services.pg_url(OWNER_ROLE, name),
        app_url=services.pg_url(APP_ROLE, name),
        ingest_url=services.pg_url(INGEST_ROLE, name),
        edition=cluster_edition(services),
    )
    if migrated:
        try:
            migrate(db.owner_url, log=lambda _m: None)
        except BaseException:
            # The fixture never yields it, so nothing else would drop it.
            drop_database(services.pg_url(ADMIN_ROLE, "postgres"), name)
            raise
    return db


@pytest.fixture
def database(services: LocalServices) -> Iterator[TestDatabase]:
    """A migrated database for one test, dropped afterwards."""
    db = make_database(services)
    yield db
    drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)


@pytest.fixture(scope="module")
def module_database(services: LocalServices) -> Iterator[TestDatabase]:
    """A migrated database shared by the tests of one module."""
    db = make_database(services)
    yield db
    drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)


@pytest.fixture(scope="session")
def edition(services: LocalServices) -> str:
    """The TimescaleDB edition under test."""
    return cluster_edition(services)


@pytest.fixture
def mqtt_url(services: LocalServices) -> str:
    """The broker's service account (may read and write every fleet/ topic)."""
    return services.mqtt_url()


@pytest.fixture
def redis_url(services: LocalServices) -> str:
    """Redis; tests use their own key prefix or channel names."""
    return services.redis_url()


@pytest.fixture
def tenant_slug() -> str:
    """A tenant id no other test uses, so topics and channels never collide."""
    return f"t{uuid.uuid4().hex[:10]}"
