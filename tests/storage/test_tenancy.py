"""Tenancy on every relation, as each reader role would attack it (issue #21).

Two tenants get rows in every time-series table, rollups are refreshed and, on the Timescale
edition, chunks and the minute rollup are compressed, so chunks, compressed chunks and
materialisations all exist. Then, for the API role bound to tenant A and for an analyst of
tenant A, every relation of every schema that the role may select is read whole, and no row
may carry anything of tenant B's. The list comes from the catalog, so relations added later
(a new hypertable, a new chunk kind, a new schema) are covered without editing this file.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors, sql

from deploy.cli import main
from storage.admin import AdminError, create_analyst, drop_analyst, list_analysts
from tests.conftest import TestDatabase

pytestmark = pytest.mark.editions

TIME_SERIES = ("telemetry", "geofence_events", "vehicle_events", "anomalies", "video_events",
               "fuel_transactions", "ingest_rejects", "telemetry_1m", "telemetry_1h")


@dataclass(frozen=True)
class Tenant:
    slug: str
    id: uuid.UUID
    vehicle: uuid.UUID
    fence: uuid.UUID

    @property
    def markers(self) -> tuple[str, ...]:
        """What of this tenant's may show in a row's text (ids, slug)."""
        return (str(self.id), str(self.vehicle), str(self.fence), self.slug)


@dataclass(frozen=True)
class World:
    db: TestDatabase
    a: Tenant
    b: Tenant
    analyst_url: str


def _seed(conn: psycopg.Connection[tuple[object, ...]], t: Tenant) -> None:
    conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, %s, %s)", (t.id, t.slug, t.slug))
    conn.execute("INSERT INTO vehicles (id, tenant_id, code) VALUES (%s, %s, 'v1')",
                 (t.vehicle, t.id))
    conn.execute("INSERT INTO geofences (id, tenant_id, name, kind, geometry, radius_m) VALUES "
                 "(%s, %s, 'depot', 'circle', 'SRID=4326;POINT(13.4 52.5)', 100)", (t.fence, t.id))
    # Ten days of one sample a minute: closed chunks to compress, open ones, and rollups.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=10)
    conn.execute(
        "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lat_e7, lon_e7, speed_kph, "
        "rpm, source) SELECT %s + g * interval '1 minute', %s, %s, g, "
        "525000000, 134000000, 40 + g %% 30, 900 + g %% 1000, 'simulator' "
        "FROM generate_series(0, 14399) g", (start, t.id, t.vehicle))
    now = datetime.now(UTC)
    old = now - timedelta(days=20)
    for when in (old, now):
        conn.execute("INSERT INTO vehicle_events (time, tenant_id, vehicle_id, event_type) "
                     "VALUES (%s, %s, %s, 'overspeed')", (when, t.id, t.vehicle))
        conn.execute("INSERT INTO geofence_events (time, tenant_id, vehicle_id, geofence_id, "
                     "event_type) VALUES (%s, %s, %s, %s, 'enter')",
                     (when, t.id, t.vehicle, t.fence))
        conn.execute("INSERT INTO anomalies (time, tenant_id, vehicle_id, signal, score, "
                     "threshold) VALUES (%s, %s, %s, 'rpm', 9, 5)", (when, t.id, t.vehicle))
    conn.execute("INSERT INTO video_events (time, tenant_id, vehicle_id, source, external_id, "
                 "event_type) VALUES (%s, %s, %s, 'samsara', %s, 'harsh_brake')",
                 (now, t.id, t.vehicle, f"ext-{t.slug}"))
    conn.execute("INSERT INTO fuel_transactions (time, tenant_id, vehicle_id, liters, station) "
                 "VALUES (%s, %s, %s, 40, %s)", (now, t.id, t.vehicle, f"station-{t.slug}"))
    conn.execute("INSERT INTO ingest_rejects (tenant_id, vehicle_code, reason, detail, topic, "
                 "payload) VALUES (%s, 'v1', 'bad_json', 'x', %s, '\\x00')",
                 (t.id, f"fleet/v1/{t.slug}/v1/telemetry"))


@pytest.fixture(scope="module")
def world(module_database: TestDatabase) -> Iterator[World]:
    db = module_database
    a = Tenant(f"a{uuid.uuid4().hex[:8]}", uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    b = Tenant(f"b{uuid.uuid4().hex[:8]}", uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        for t in (a, b):
            _seed(conn, t)
    now = datetime.now(UTC)
    db.refresh_rollups((now - timedelta(days=11)).isoformat(), now.isoformat())
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        if db.edition == "timescale":
            for table in ("telemetry", "vehicle_events", "geofence_events", "anomalies",
                          "telemetry_1m"):
                chunks = conn.execute("SELECT c FROM show_chunks(%s, older_than => "
                                      "interval '3 days') c", (table,)).fetchall()
                for (chunk,) in chunks:
                    # The compression policy may be at the same chunk right now.
                    with contextlib.suppress(errors.DuplicateObject):
                        conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)",
                                     (chunk,))
            compressed = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"
            ).fetchone()
            assert compressed is not None
            assert compressed[0] >= 8
    role = f"analyst_{uuid.uuid4().hex[:10]}"
    password = create_analyst(db.owner_url, role, a.slug)
    base, _, rest = db.app_url.partition("://")
    host = rest.rpartition("@")[2]
    yield World(db, a, b, f"{base}://{role}:{password}@{host}")
    drop_analyst(db.owner_url, role)


def _readable_relations(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Every table, view, materialised view and foreign table this role may select from
    (whole or some columns), in every schema."""
    rows = conn.execute("""
        SELECT format('%I.%I', n.nspname, c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND (has_table_privilege(c.oid, 'SELECT') OR has_any_column_privilege(c.oid, 'SELECT'))
         ORDER BY 1""").fetchall()
    return [str(r[0]) for r in rows]


def _leaks(conn: psycopg.Connection[tuple[object, ...]], other: Tenant) -> dict[str, str]:
    """Relation -> a row of the other tenant's that it showed."""
    found: dict[str, str] = {}
    for rel in _readable_relations(conn):
        try:
            with conn.transaction():
                rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
                    sql.SQL(rel))).fetchall()
        except (errors.InsufficientPrivilege, errors.FeatureNotSupported,
                errors.ObjectNotInPrerequisiteState):
            continue  # only some columns are readable, or a view that needs a superuser
        for (text,) in rows:
            if any(m in str(text) for m in other.markers):
                found[rel] = str(text)[:200]
                break
    return found


def _is_storage(relation: str) -> bool:
    """A hypertable, chunk, compressed chunk or materialisation (TimescaleDB's statistics
    views in _timescaledb_internal are readable by everyone and hold no rows of tenants)."""
    schema, _, name = relation.partition(".")
    return (schema == "public" and name in TIME_SERIES) or (
        schema == "_timescaledb_internal" and name.startswith(
            ("_hyper_", "compress_hyper_", "_materialized_hypertable_", "_partial_view_",
             "_direct_view_")))


def _app(world: World, tenant: uuid.UUID) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(world.db.app_url, autocommit=True)
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
    return conn


def test_api_role_reads_no_other_tenants_row_through_any_relation(world: World) -> None:
    with _app(world, world.a.id) as conn:
        readable = _readable_relations(conn)
        assert _leaks(conn, world.b) == {}
    # Not vacuous: the views are there, and they show tenant A's own rows.
    assert {f"tenant.{t}" for t in TIME_SERIES} <= set(readable)
    assert not [r for r in readable if _is_storage(r)]


def test_analyst_reads_no_other_tenants_row_through_any_relation(world: World) -> None:
    with psycopg.connect(world.analyst_url, autocommit=True) as conn:
        readable = _readable_relations(conn)
        assert _leaks(conn, world.b) == {}
        # It may even set the API's tenant setting: the views do not listen to it for analysts.
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(world.b.id),))
        assert _leaks(conn, world.b) == {}
        seen = {t: conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(
            sql.Identifier(t))).fetchall() for t in TIME_SERIES}  # search_path: tenant first
        own = conn.execute("SELECT id FROM tenants").fetchall()
    assert seen == {t: [(world.a.id,)] for t in TIME_SERIES}
    assert own == [(world.a.id,)]
    assert not [r for r in readable if _is_storage(r)]


def test_no_reader_may_touch_a_hypertable_chunk_or_materialisation(world: World) -> None:
    """The mechanism, stated directly: privileges, not filters, keep readers off the storage."""
    with psycopg.connect(world.db.owner_url) as conn:
        storage = [str(r[0]) for r in conn.execute("""
            SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm')
               AND (n.nspname = '_timescaledb_internal'
                    OR (n.nspname = 'public' AND c.relname = ANY(%s)))""",
            (list(TIME_SERIES),)).fetchall() if _is_storage(str(r[0]))]
        assert any("_hyper_" in s for s in storage)
        if world.db.edition == "timescale":
            assert any("compress_hyper_" in s for s in storage)
            assert any("_materialized_hypertable_" in s for s in storage)
        granted = conn.execute("""
            SELECT rel, role FROM unnest(%s::text[]) rel,
                   unnest(ARRAY['fleet_app', 'fleet_analyst']) role
             WHERE has_table_privilege(role, rel, 'SELECT')
                OR has_any_column_privilege(role, rel, 'SELECT')""", (storage,)).fetchall()
    assert granted == []


def test_a_leaky_function_sees_only_rows_past_the_tenant_filter(world: World) -> None:
    """The views are security barriers: a caller's cheap function in WHERE runs after the
    tenant filter, so it cannot print another tenant's rows."""
    notices: list[str] = []
    with _app(world, world.a.id) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql "
                     "COST 0.0000001 AS $$BEGIN RAISE NOTICE 'leak %', $1; RETURN true; END$$")
        conn.execute("SELECT count(*) FROM tenant.vehicle_events "
                     "WHERE pg_temp.leak(vehicle_id::text)")
    assert notices
    assert not [n for n in notices if str(world.b.vehicle) in n]


def test_analyst_binding_is_the_owners(world: World) -> None:
    with psycopg.connect(world.analyst_url, autocommit=True) as conn:
        # Read-only by default; even with that lifted the binding is not the analyst's.
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP TABLE x (i int)")
        conn.execute("SET default_transaction_read_only = off")
        for attempt in ("INSERT INTO analyst_roles (role_name, tenant_id) "
                        "VALUES (current_user, %s)",
                        "UPDATE analyst_roles SET tenant_id = %s"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(attempt, (world.b.id,))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SET ROLE fleet_app")
    assert [a.tenant_slug for a in list_analysts(world.db.owner_url)] == [world.a.slug]


def test_analyst_names_are_checked(world: World) -> None:
    for bad in ("fleet_app", "pg_monitor", "Robert'); DROP TABLE x;--", "", "a" * 64):
        with pytest.raises(AdminError):
            create_analyst(world.db.owner_url, bad, world.a.slug)
    with pytest.raises(AdminError, match="no tenant"):
        create_analyst(world.db.owner_url, "nobody_special", "no-such-tenant")


def test_fleet_db_analyst_and_refresh_from_the_command_line(
        world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands an operator runs: the password on stdout only, clear errors, exit 2."""
    monkeypatch.setenv("FLEET_DATABASE_OWNER_URL", world.db.owner_url)
    role = f"cli_{uuid.uuid4().hex[:10]}"
    assert main(["db", "analyst", "create", role, "--tenant", world.b.slug]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip()) >= 24  # the generated password, and nothing else
    assert f"analyst {role} reads tenant {world.b.slug}" in out.err
    try:
        assert main(["db", "analyst", "list"]) == 0
        assert role in capsys.readouterr().out
        assert main(["db", "analyst", "create", role, "--tenant", world.b.slug]) == 2
        assert "exists already" in capsys.readouterr().err
        assert main(["db", "refresh-rollups", "--from", "2026-11-02", "--to",
                     "2026-11-01"]) == 2
        assert "empty range" in capsys.readouterr().err
        assert main(["db", "refresh-rollups", "--from", "2026-11-01", "--to",
                     "2026-11-02T00:00+01:00"]) == 0
    finally:
        assert main(["db", "analyst", "drop", role]) == 0
