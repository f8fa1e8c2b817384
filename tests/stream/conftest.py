"""Fixtures of the stream tests: a tenant with vehicles in the test database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest

from tests.conftest import TestDatabase


@dataclass(frozen=True)
class Fleet:
    """A tenant and its vehicles, as rows in the test database."""

    slug: str
    tenant_id: uuid.UUID
    vehicles: dict[str, uuid.UUID]


def make_fleet(db: TestDatabase, slug: str, codes: list[str],
               retired: tuple[str, ...] = ()) -> Fleet:
    """Insert a tenant and vehicles with the owner role."""
    with psycopg.connect(db.owner_url) as conn:
        row = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
                           (slug, slug)).fetchone()
        assert row is not None
        tenant_id = row[0]
        vehicles = {}
        for code in codes:
            status = "retired" if code in retired else "active"
            r = conn.execute(
                "INSERT INTO vehicles (tenant_id, code, make, model, status) "
                "VALUES (%s, %s, 'Ford', 'Transit', %s) RETURNING id",
                (tenant_id, code, status)).fetchone()
            assert r is not None
            vehicles[code] = r[0]
    return Fleet(slug, tenant_id, vehicles)


@pytest.fixture
def fleet(database: TestDatabase, tenant_slug: str) -> Fleet:
    """A tenant with three active vehicles and one retired."""
    return make_fleet(database, tenant_slug, ["v1", "v2", "v3", "old"], retired=("old",))
