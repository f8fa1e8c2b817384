"""The schema against the real PostgreSQL + TimescaleDB + PostGIS, as each role sees it."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from deploy.services import ADMIN_ROLE, LocalServices, drop_database
from storage.errors import MigrationError
from storage.migrate import Migration, discover, migrate, plan, status
from tests.conftest import TestDatabase, make_database

HYPERTABLES = {"telemetry", "geofence_events", "vehicle_events", "anomalies", "video_events",
               "fuel_transactions", "ingest_rejects"}
ROLLUPS = {"telemetry_1m", "telemetry_1h"}
pytestmark = pytest.mark.editions


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def two_tenants(database: TestDatabase) -> Iterator[tuple[uuid.UUID, uuid.UUID]]:
    """Tenants A and B with one vehicle each, created by the schema owner."""
    with connect(database.owner_url) as conn:
        a, b = uuid.uuid4(), uuid.uuid4()
        for tid, slug in ((a, "tenant-a"), (b, "tenant-b")):
            conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, %s, %s)",
                         (tid, slug, slug.upper()))
            conn.execute("INSERT INTO vehicles (tenant_id, code, make, model) "
                         "VALUES (%s, 'truck-1', 'Ford', 'Transit')", (tid,))
    return a, b


def test_hypertables_exist(database: TestDatabase) -> None:
    """The rollups are hypertables on the Apache edition, continuous aggregates on the other:
    the same names and columns either way."""
    with connect(database.owner_url) as conn:
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
        caggs = conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates").fetchall()
        columns = {name: conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (name,)).fetchall() for name in ROLLUPS}
    if database.edition == "timescale":
        assert {r[0] for r in rows} == HYPERTABLES
        assert {r[0] for r in caggs} == ROLLUPS
    else:
        assert {r[0] for r in rows} == HYPERTABLES | ROLLUPS
        assert caggs == []
    assert columns["telemetry_1m"] == columns["telemetry_1h"]
    assert [c[0] for c in columns["telemetry_1m"]] == [
        "bucket", "tenant_id", "vehicle_id", "samples", "avg_speed_kph", "max_speed_kph",
        "avg_rpm", "max_coolant_temp_c", "min_fuel_level_pct", "last_fuel_level_pct",
        "min_odometer_km", "max_odometer_km", "max_engine_hours_h", "min_battery_voltage_v",
        "last_location", "sum_speed_kph", "speed_samples", "sum_rpm", "rpm_samples", "max_rpm",
        "distance_km", "engine_on_s", "idle_s", "over_speed_s", "over_rpm_s", "fuel_used_pct"]


def test_second_migrate_is_a_no_op(database: TestDatabase) -> None:
    report = migrate(database.owner_url, log=lambda _m: None)
    assert report.applied == []
    assert report.already_applied == len(plan(discover(), report.edition))
    assert all(applied for _m, applied in status(database.owner_url))


def test_edition_detected_is_the_clusters(database: TestDatabase) -> None:
    with connect(database.owner_url) as conn:
        license_row = conn.execute("SHOW timescaledb.license").fetchone()
        editions = conn.execute("SELECT edition FROM schema_migrations WHERE edition IS NOT NULL"
                                ).fetchall()
    assert license_row == (database.edition,)
    assert {e[0] for e in editions} == {database.edition}


def test_plan_picks_the_edition_file() -> None:
    found = discover()
    apache = {m.version: m for m in plan(found, "apache")}
    timescale = {m.version: m for m in plan(found, "timescale")}
    assert apache[3].edition == "apache"
    assert timescale[3].edition == "timescale"
    assert apache[1] is timescale[1]
    with pytest.raises(MigrationError, match="licence"):
        plan(found, "enterprise")


def test_plan_refuses_a_version_without_a_file_for_the_edition() -> None:
    only_licensed = [Migration(1, "a", None, "SELECT 1"), Migration(2, "b", "timescale", "X")]
    with pytest.raises(MigrationError, match="no file for edition 'apache'"):
        plan(only_licensed, "apache")


def test_edited_applied_migration_is_refused(database: TestDatabase, tmp_path: Path) -> None:
    for m in plan(discover(), database.edition):
        suffix = f".{m.edition}" if m.edition else ""
        text = m.sql + ("\n-- edited\n" if m.version == 1 else "")
        (tmp_path / f"{m.version:04d}_{m.name}{suffix}.sql").write_text(text)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(database.owner_url, log=lambda _m: None, directory=tmp_path)


def test_a_migration_that_deadlocks_runs_again(database: TestDatabase, tmp_path: Path) -> None:
    """A background job (here: another session) locking the same tables in the other order
    makes PostgreSQL abort the migration; the runner rolls it back and runs it again."""
    for m in plan(discover(), database.edition):
        suffix = f".{m.edition}" if m.edition else ""
        (tmp_path / f"{m.version:04d}_{m.name}{suffix}.sql").write_text(m.sql)
    with connect(database.owner_url) as conn:
        conn.execute("CREATE TABLE lock_a (x int); CREATE TABLE lock_b (x int)")
    (tmp_path / "9999_two_locks.sql").write_text(
        "LOCK TABLE lock_a; SELECT pg_sleep(0.3); LOCK TABLE lock_b; "
        "INSERT INTO lock_a VALUES (1);")
    holding = threading.Event()

    def other_order() -> None:
        with psycopg.connect(database.owner_url) as other:
            other.execute("LOCK TABLE lock_b")
            holding.set()
            time.sleep(0.6)  # the migration waits for lock_b first: it sees the deadlock
            other.execute("LOCK TABLE lock_a")
            other.execute("INSERT INTO lock_b VALUES (1)")

    worker = threading.Thread(target=other_order)
    worker.start()
    holding.wait(5)
    logged: list[str] = []
    report = migrate(database.owner_url, log=logged.append, directory=tmp_path)
    worker.join(10)
    assert [m.version for m in report.applied] == [9999]
    assert any("9999_two_locks met a background job (deadlock detected)" in line
               for line in logged), logged
    with connect(database.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM lock_a").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM lock_b").fetchone() == (1,)


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="not named"):
        discover(tmp_path)


def test_postgis_geofence_zones_are_measured_in_metres(database: TestDatabase,
                                                       two_tenants: tuple[uuid.UUID, uuid.UUID]
                                                       ) -> None:
    a, _b = two_tenants
    with connect(database.owner_url) as conn:
        conn.execute(
            "INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m) VALUES "
            "(%s, 'depot', 'circle', 'SRID=4326;POINT(13.4 52.5)', 500)", (a,))
        conn.execute(
            "INSERT INTO geofences (tenant_id, name, kind, geometry, corridor_width_m) VALUES "
            "(%s, 'route', 'corridor', 'SRID=4326;LINESTRING(13.0 52.0, 13.1 52.0)', 200)", (a,))
        # 0.0066 deg of latitude is ~734 m: outside a 500 m circle; 0.004 deg (~445 m) inside.
        inside, outside = conn.execute(
            "SELECT ST_Covers(zone, 'SRID=4326;POINT(13.4 52.504)'::geography),"
            "       ST_Covers(zone, 'SRID=4326;POINT(13.4 52.5066)'::geography)"
            "  FROM geofences WHERE name = 'depot'").fetchone() or (None, None)
        assert (inside, outside) == (True, False)
        # 90 m off the corridor's centre line is inside a 200 m-wide corridor; 120 m is not.
        near, far = conn.execute(
            "SELECT ST_Covers(zone, ST_Project('SRID=4326;POINT(13.05 52.0)'::geography, 90, 0)),"
            "       ST_Covers(zone, ST_Project('SRID=4326;POINT(13.05 52.0)'::geography, 120, 0))"
            "  FROM geofences WHERE name = 'route'").fetchone() or (None, None)
        assert (near, far) == (True, False)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO geofences (tenant_id, name, kind, geometry) VALUES "
                         "(%s, 'bad', 'circle', 'SRID=4326;POINT(1 1)')", (a,))


def test_telemetry_accepts_samples_and_refuses_duplicates(
        database: TestDatabase, two_tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, _b = two_tenants
    with connect(database.ingest_url) as conn:
        vid = conn.execute("SELECT id FROM vehicles WHERE tenant_id = %s", (a,)).fetchone()
        assert vid is not None
        row = (a, vid[0])
        conn.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lat_e7, lon_e7, "
                     "speed_kph, source) VALUES ('2026-11-01T10:00:00Z', %s, %s, 1, "
                     "525000000, 134000000, 42.5, 'gateway')", row)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source) "
                         "VALUES ('2026-11-01T10:00:00Z', %s, %s, 1, 'gateway')", row)
    database.refresh_rollups("2026-11-01T09:00Z", "2026-11-01T11:00Z")
    with connect(database.owner_url) as conn:
        assert conn.execute("SELECT samples, max_speed_kph FROM telemetry_1m").fetchall() == [
            (1, 42.5)]
        assert conn.execute("SELECT samples, max_speed_kph FROM telemetry_1h").fetchall() == [
            (1, 42.5)]


def _as_tenant(conn: psycopg.Connection[tuple[object, ...]], tenant: uuid.UUID) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))


def test_rls_blocks_cross_tenant_reads_and_writes(
        database: TestDatabase, two_tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, b = two_tenants
    with connect(database.ingest_url) as ingest:
        for tenant in (a, b):
            ingest.execute(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source) "
                "SELECT now(), tenant_id, id, 1, 'gateway' FROM vehicles WHERE tenant_id = %s",
                (tenant,))
    with connect(database.app_url) as app:
        # Without a tenant the application role sees nothing at all.
        assert app.execute("SELECT count(*) FROM vehicles").fetchone() == (0,)
        _as_tenant(app, a)
        assert app.execute("SELECT DISTINCT tenant_id FROM vehicles").fetchall() == [(a,)]
        assert app.execute("SELECT DISTINCT tenant_id FROM tenant.telemetry").fetchall() == [
            (a,)]
        # The hypertable itself (and with it every chunk) is not the API role's to read.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT count(*) FROM telemetry")
        assert app.execute("SELECT id FROM tenants").fetchall() == [(a,)]
        # Even an explicit filter on the other tenant returns nothing.
        assert app.execute("SELECT count(*) FROM vehicles WHERE tenant_id = %s",
                           (b,)).fetchone() == (0,)
        # Writing into the other tenant is refused; updating or deleting its rows affects none.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO vehicles (tenant_id, code) VALUES (%s, 'sneaky')", (b,))
        cur = app.execute("UPDATE vehicles SET make = 'X' WHERE tenant_id = %s", (b,))
        assert cur.rowcount == 0
        cur = app.execute("DELETE FROM vehicles WHERE tenant_id = %s", (b,))
        assert cur.rowcount == 0
        # Moving an own row into the other tenant is refused too.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE vehicles SET tenant_id = %s", (b,))
        # The application role does not write raw telemetry (only the stream does).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source) "
                        "SELECT now(), tenant_id, id, 2, 'gateway' FROM vehicles")
    with connect(database.owner_url) as owner:
        assert owner.execute("SELECT make FROM vehicles WHERE tenant_id = %s",
                             (b,)).fetchone() == ("Ford",)


def test_audit_log_is_chained_and_append_only_for_the_app(
        database: TestDatabase, two_tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, b = two_tenants
    with connect(database.app_url) as app:
        _as_tenant(app, a)
        for action in ("login", "vehicle.update"):
            app.execute("INSERT INTO audit_logs (tenant_id, action, resource_type, outcome, "
                        "prev_hash, hash) VALUES (%s, %s, 'vehicle', 'success', '', '')",
                        (a, action))
        app.execute("INSERT INTO audit_logs (tenant_id, action, resource_type, outcome, "
                    "prev_hash, hash) VALUES (NULL, 'login', 'user', 'failure', '', '')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE audit_logs SET outcome = 'failure'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM audit_logs")
        _as_tenant(app, b)
        assert app.execute("SELECT count(*) FROM audit_logs").fetchone() == (0,)
    with connect(database.owner_url) as owner:
        rows = owner.execute(
            "SELECT id, prev_hash, hash, encode(sha256(convert_to(audit_canonical(a), 'UTF8')), "
            "'hex') FROM audit_logs a ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == "0" * 64
    for prev, row in itertools.pairwise(rows):
        assert row[1] == prev[2]
    assert all(r[2] == r[3] for r in rows)


def test_work_order_total_cost_is_generated(database: TestDatabase,
                                            two_tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, _b = two_tenants
    with connect(database.owner_url) as conn:
        total = conn.execute(
            "INSERT INTO work_orders (tenant_id, vehicle_id, type, description, labor_cost, "
            "parts_cost) SELECT tenant_id, id, 'corrective', 'brakes', 120.50, 79.25 FROM vehicles "
            "WHERE tenant_id = %s RETURNING total_cost", (a,)).fetchone()
    assert total is not None
    assert float(str(total[0])) == pytest.approx(199.75)


ROLLUP_COLUMNS = ("samples, avg_speed_kph, max_speed_kph, avg_rpm, max_coolant_temp_c, "
                  "min_fuel_level_pct, last_fuel_level_pct, min_odometer_km, max_odometer_km, "
                  "max_engine_hours_h, min_battery_voltage_v, ST_AsText(last_location)")


def test_hourly_rollup_equals_the_raw_aggregate(
        database: TestDatabase, two_tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    """The hour is built from the minutes, with NULL speeds and rpm in some of them, in two
    refreshes (as the stream does it): it must equal aggregating the raw rows directly."""
    a, _b = two_tenants
    with connect(database.ingest_url) as conn:
        vid = conn.execute("SELECT id FROM vehicles WHERE tenant_id = %s", (a,)).fetchone()
        assert vid is not None
        rows = []
        for i in range(150):  # 10:00:00 to 10:02:29, every second
            speed = None if i % 7 == 0 else 30.0 + (i * 13) % 50 / 3
            rpm = None if i % 5 == 0 else 800.0 + (i * 37) % 900
            lat, lon = (None, None) if i == 149 else (525_000_000, 130_000_000 + i * 10_000)
            rows.append((f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}Z", a, vid[0], i + 1,
                         lat, lon, speed, rpm, 90.0 + i % 11, 60.0 - i / 100,
                         1000.0 + i / 10, 13.0 - (i % 3) / 10))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lat_e7, lon_e7, "
                "speed_kph, rpm, coolant_temp_c, fuel_level_pct, odometer_km, battery_voltage_v, "
                "source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'gateway')",
                rows[:100])
            conn.commit()
            database.refresh_rollups("2026-11-01T10:00Z", "2026-11-01T10:01:40Z")
            cur.executemany(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lat_e7, lon_e7, "
                "speed_kph, rpm, coolant_temp_c, fuel_level_pct, odometer_km, battery_voltage_v, "
                "source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'gateway')",
                rows[100:])
        conn.commit()
    database.refresh_rollups("2026-11-01T10:01:40Z", "2026-11-01T10:02:30Z")
    with connect(database.owner_url) as conn:
        hour = conn.execute(f"SELECT {ROLLUP_COLUMNS} FROM telemetry_1h").fetchall()
        raw = conn.execute(
            "SELECT count(*)::integer, avg(speed_kph)::real, max(speed_kph), avg(rpm)::real, "
            "max(coolant_temp_c), min(fuel_level_pct), last(fuel_level_pct, time), "
            "min(odometer_km), max(odometer_km), max(engine_hours_h), min(battery_voltage_v), "
            "ST_AsText(last(fleet_position(lat_e7, lon_e7), time)) FROM telemetry").fetchall()
        minutes = conn.execute("SELECT sum(samples) FROM telemetry_1m").fetchone()
    # The averages go through per-minute float sums, so they may differ from one sum over the
    # raw rows in the last bit (summation order): equal up to that, every other column exact.
    assert len(hour) == len(raw) == 1
    assert [pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for v in hour[0]] \
        == list(raw[0])
    assert hour[0][0] == 150
    assert hour[0][-1] is None  # the newest sample had no fix
    assert minutes == (150,)


def test_positions_survive_the_move_to_integers(services: LocalServices, tmp_path: Path) -> None:
    """Telemetry stored before 0016 (a geography) keeps its positions, to the centimetre,
    through 0016/0017, and the rebuilt rollups hold the old rows (on the Timescale edition
    the runner refreshes the recreated aggregates over everything stored)."""
    db = make_database(services, migrated=False)
    try:
        for m in plan(discover(), db.edition):
            if m.version < 16:  # the schema before the change
                suffix = f".{m.edition}" if m.edition else ""
                (tmp_path / f"{m.version:04d}_{m.name}{suffix}.sql").write_text(m.sql)
        migrate(db.owner_url, log=lambda _m: None, directory=tmp_path)
        with connect(db.owner_url) as conn:
            tenant = conn.execute("INSERT INTO tenants (slug, name) VALUES ('t', 'T') "
                                  "RETURNING id").fetchone()[0]  # type: ignore[index]
            vid = conn.execute("INSERT INTO vehicles (tenant_id, code) VALUES (%s, 'v') "
                               "RETURNING id", (tenant,)).fetchone()[0]  # type: ignore[index]
            # 40 days back: outside the aggregates' 30-day policy window.
            conn.execute(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, location, speed_kph, "
                "source) SELECT date_trunc('minute', now()) - interval '40 days' "
                "+ g * interval '1 s', %s, %s, g, "
                "CASE WHEN g = 3 THEN NULL ELSE ST_SetSRID(ST_MakePoint(-179.9999999 + g, "
                "-89.1234567 + g * 0.5), 4326)::geography END, 10, 'gateway' "
                "FROM generate_series(1, 5) g", (tenant, vid))
            conn.execute("CALL fleet_refresh_rollups(now() - interval '41 days', now())")
        logged: list[str] = []
        migrate(db.owner_url, log=logged.append)
        with connect(db.owner_url) as conn:
            rows = conn.execute("SELECT seq, lat_e7, lon_e7 FROM telemetry ORDER BY seq").fetchall()
            assert rows == [(1, -886234567, -1789999999), (2, -881234567, -1779999999),
                            (3, None, None), (4, -871234567, -1759999999),
                            (5, -866234567, -1749999999)]
            assert conn.execute("SELECT samples, ST_AsText(last_location) FROM telemetry_1m"
                                ).fetchall() == [(5, "POINT(-174.9999999 -86.6234567)")]
        if db.edition == "timescale":
            assert any("refreshing the rollups" in line for line in logged), logged
    finally:
        drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)
