"""`storage.seed.seed_fleet`: one tenant and its vehicles, idempotently, whatever mix of
per-vehicle columns (grouped into one statement per column set)."""

from __future__ import annotations

import psycopg
import pytest

from storage.errors import StorageError
from storage.seed import seed_fleet
from tests.conftest import TestDatabase


def test_vehicles_with_different_columns_are_all_stored_once(database: TestDatabase) -> None:
    """Codes with their own columns, the defaults under them, and a second run that finds
    every row instead of adding one."""
    specs = {"v-a": {"make": "Iveco"}, "v-b": {}, "v-c": {"make": "MAN", "year": 2021},
             "v-d": {"year": 2019}, "v-e": {"make": "Scania"}}
    first = seed_fleet(database.owner_url, "seedtest", specs, defaults={"status": "active"})
    assert list(first.vehicles) == list(specs)
    again = seed_fleet(database.owner_url, "seedtest", {**specs, "v-f": {}},
                       defaults={"status": "maintenance"})
    assert again.tenant_id == first.tenant_id
    assert {k: again.vehicles[k] for k in specs} == first.vehicles
    with psycopg.connect(database.owner_url) as conn:
        rows = conn.execute("SELECT code, make, year, status FROM vehicles "
                            "WHERE tenant_id = %s ORDER BY code", (first.tenant_id,)).fetchall()
    assert rows == [("v-a", "Iveco", None, "active"), ("v-b", None, None, "active"),
                    ("v-c", "MAN", 2021, "active"), ("v-d", None, 2019, "active"),
                    ("v-e", "Scania", None, "active"), ("v-f", None, None, "maintenance")]


def test_a_refused_row_is_a_storage_error_and_nothing_is_kept(database: TestDatabase) -> None:
    """The database's refusal names the tenant; the transaction leaves no partial fleet."""
    with pytest.raises(StorageError, match="seedbad"):
        seed_fleet(database.owner_url, "seedbad", {"ok": {}, "bad": {"year": "not a year"}})
    with psycopg.connect(database.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenants WHERE slug = 'seedbad'"
                            ).fetchone() == (0,)
