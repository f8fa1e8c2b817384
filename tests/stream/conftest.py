"""Fixtures of the stream tests: a tenant with vehicles in the test database."""

from __future__ import annotations

import pytest

from deploy.seed import SeededFleet, seed_fleet
from tests.conftest import TestDatabase

Fleet = SeededFleet
"""A tenant and its vehicles, as rows in the test database."""


def make_fleet(db: TestDatabase, slug: str, codes: list[str],
               retired: tuple[str, ...] = ()) -> Fleet:
    """Insert a tenant and vehicles (Ford Transits; `retired` ones retired) as the owner."""
    return seed_fleet(db.owner_url, slug,
                      {code: {"status": "retired" if code in retired else "active"}
                       for code in codes}, defaults={"make": "Ford", "model": "Transit"})


@pytest.fixture
def fleet(database: TestDatabase, tenant_slug: str) -> Fleet:
    """A tenant with three active vehicles and one retired."""
    return make_fleet(database, tenant_slug, ["v1", "v2", "v3", "old"], retired=("old",))
