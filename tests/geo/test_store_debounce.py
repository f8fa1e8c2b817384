"""geofences.debounce_s after migration 0011: NULL means the setting; existing rows keep theirs."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from deploy.services import ADMIN_ROLE, LocalServices, drop_database
from geo.store import load_fences
from storage.migrate import discover, migrate
from tests.conftest import make_database

pytestmark = pytest.mark.services

MIGRATIONS = Path(__file__).resolve().parents[2] / "storage" / "migrations"
_INSERT = ("INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m) "
           "VALUES (%s, %s, 'circle', 'SRID=4326;POINT(13.4 52.52)'::geography, 50) RETURNING id")
_INSERT_WITH_DEBOUNCE = (
    "INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m, debounce_s) "
    "VALUES (%s, %s, 'circle', 'SRID=4326;POINT(13.4 52.52)'::geography, 50, %s) RETURNING id")


def _debounce(conn: psycopg.Connection[tuple[object, ...]], fid: object) -> object:
    row = conn.execute("SELECT debounce_s FROM geofences WHERE id = %s", (fid,)).fetchone()
    assert row is not None
    return row[0]


def test_existing_rows_keep_their_debounce_and_new_rows_default_to_null(
        services: LocalServices, tmp_path: Path) -> None:
    assert any(m.version == 11 and m.name == "geofence_debounce" for m in discover())
    before = tmp_path / "before"
    before.mkdir()
    for f in MIGRATIONS.glob("*.sql"):
        if int(f.name[:4]) < 11:
            shutil.copy(f, before / f.name)
    db = make_database(services, migrated=False)
    try:
        migrate(db.owner_url, log=lambda _m: None, directory=before)
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            tenant = uuid.uuid4()
            conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'd', 'D')", (tenant,))
            old_default = conn.execute(_INSERT, (tenant, "old default")).fetchone()
            old_set = conn.execute(_INSERT_WITH_DEBOUNCE, (tenant, "old 20", 20)).fetchone()
            assert old_default is not None
            assert old_set is not None
            assert _debounce(conn, old_default[0]) == 0
        report = migrate(db.owner_url, log=lambda _m: None)
        assert [m.version for m in report.applied if m.version == 11] == [11]
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            # Exactly as before the migration: an existing fence does not start following the
            # setting behind its owner's back.
            assert _debounce(conn, old_default[0]) == 0
            assert _debounce(conn, old_set[0]) == 20
            new = conn.execute(_INSERT, (tenant, "new")).fetchone()
            assert new is not None
            assert _debounce(conn, new[0]) is None
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("UPDATE geofences SET debounce_s = -1 WHERE id = %s", (new[0],))
        by_name = {f.name: f.debounce_s for f in load_fences(db.ingest_url).fences}
        assert by_name == {"old default": 0.0, "old 20": 20.0, "new": None}
    finally:
        drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)
