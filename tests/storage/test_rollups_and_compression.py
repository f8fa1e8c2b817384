"""Late rows reach the rollups on both editions; compression keeps answers and takes late rows.

The late-data case is a gateway's three-day backlog: rows written after their minutes and
hours were rolled up. Compression is the Timescale edition's: a closed chunk compresses, the
same query gives the same answer, and a late row (as the stream writes it, binary COPY, and
as a replay, INSERT ... ON CONFLICT DO NOTHING) is stored and read back.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors, sql

from stream.sink import RollupRefresher
from tests.conftest import TestDatabase
from tests.storage.rows import tenant_and_vehicle

pytestmark = pytest.mark.editions

ANSWER = ("SELECT count(*), sum(speed_kph)::float8, max(rpm), min(time), max(time), "
          "count(DISTINCT seq) FROM telemetry WHERE vehicle_id = %s")


def _samples(conn: psycopg.Connection[tuple[object, ...]], tenant: uuid.UUID,
             vehicle: uuid.UUID, start: datetime, *, count: int, first_seq: int) -> None:
    conn.execute(
        "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, speed_kph, rpm, source) "
        "SELECT %s + g * interval '10 seconds', %s, %s, %s + g, 50 + g %% 7, 1000 + g, 'gateway' "
        "FROM generate_series(0, %s - 1) g", (start, tenant, vehicle, first_seq, count))


def test_rows_three_days_late_reach_the_rollups(database: TestDatabase) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    late_start = (now - timedelta(days=3)).replace(minute=0, second=0)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        tenant, vehicle = tenant_and_vehicle(conn)
        # What arrived in time: the hour three days ago has half its samples.
        _samples(conn, tenant, vehicle, late_start, count=180, first_seq=0)
    database.refresh_rollups((late_start - timedelta(hours=1)).isoformat(), now.isoformat())
    with psycopg.connect(database.ingest_url, autocommit=True) as conn:
        # The backlog of the same hour, written by the stream three days late.
        _samples(conn, tenant, vehicle, late_start + timedelta(minutes=30), count=180,
                 first_seq=180)
    database.refresh_rollups(late_start.isoformat(), (late_start + timedelta(hours=1)).isoformat())
    with psycopg.connect(database.owner_url) as conn:
        minutes = conn.execute("SELECT sum(samples), count(*) FROM telemetry_1m "
                               "WHERE vehicle_id = %s", (vehicle,)).fetchone()
        hour = conn.execute("SELECT samples, max_speed_kph FROM telemetry_1h "
                            "WHERE vehicle_id = %s", (vehicle,)).fetchall()
    assert minutes == (360, 60)
    assert hour == [(360, 56.0)]


def test_late_rows_reach_the_rollups_without_anyone_naming_a_range(
        database: TestDatabase) -> None:
    """What runs by itself takes a three-day backlog: on the Timescale edition the refresh
    policies (their window covers what the stream accepts), on the Apache edition the stream's
    refresher, which marks the range the rows it wrote cover."""
    now = datetime.now(UTC).replace(microsecond=0)
    late_start = (now - timedelta(days=3)).replace(minute=0, second=0)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        tenant, vehicle = tenant_and_vehicle(conn)
        _samples(conn, tenant, vehicle, late_start, count=360, first_seq=0)
        if database.edition == "timescale":
            for view in ("telemetry_1m", "telemetry_1h"):  # minutes first, as scheduled
                job = conn.execute(
                    "SELECT job_id FROM timescaledb_information.jobs j JOIN "
                    "timescaledb_information.continuous_aggregates c ON "
                    "c.materialization_hypertable_name = j.hypertable_name WHERE "
                    "c.view_name = %s AND j.proc_name = 'policy_refresh_continuous_aggregate'",
                    (view,)).fetchone()
                assert job is not None
                conn.execute("CALL run_job(%s)", (job[0],))
            # Materialised, not merely computed at query time from the raw rows.
            mat_id = _materialization_id(conn, "telemetry_1h")
            table = sql.Identifier("_timescaledb_internal", f"_materialized_hypertable_{mat_id}")
        else:
            start_ms = int(late_start.timestamp() * 1000)
            refresher = RollupRefresher(database.ingest_url, 3600.0, 10.0)
            refresher.touch(start_ms, start_ms + 3_590_000, [vehicle])
            refresher.close()  # its final round: what the stream does on a clean stop
            table = sql.Identifier("telemetry_1h")
        stored = conn.execute(sql.SQL("SELECT sum(samples) FROM {} WHERE vehicle_id = %s")
                              .format(table), (vehicle,)).fetchone()
    assert stored == (360,)


def _materialization_id(conn: psycopg.Connection[tuple[object, ...]], view: str) -> int:
    row = conn.execute("SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg "
                       "WHERE user_view_name = %s", (view,)).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_compressed_chunk_gives_the_same_answer_and_takes_late_rows(
        database: TestDatabase) -> None:
    """On the Apache edition compression is refused outright (not silently skipped) and the
    same late rows go into the plain chunk: the same answers on both."""
    start = (datetime.now(UTC) - timedelta(days=6)).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        tenant, vehicle = tenant_and_vehicle(conn)
        _samples(conn, tenant, vehicle, start, count=5000, first_seq=0)
        before = conn.execute(ANSWER, (vehicle,)).fetchone()
        chunk = conn.execute("SELECT c FROM show_chunks('telemetry', older_than => %s) c "
                             "ORDER BY c LIMIT 1", (start + timedelta(days=1),)).fetchone()
        assert chunk is not None
        if database.edition == "timescale":
            with contextlib.suppress(errors.DuplicateObject):  # the policy may be at it
                conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)",
                             (chunk[0],))
        else:
            with pytest.raises(errors.FeatureNotSupported, match='"apache" license'):
                conn.execute("SELECT compress_chunk(%s)", (chunk[0],))
        assert conn.execute("SELECT is_compressed FROM timescaledb_information.chunks WHERE "
                            "format('%%I.%%I', chunk_schema, chunk_name)::regclass = %s::regclass",
                            (chunk[0],)).fetchone() == (database.edition == "timescale",)
        assert conn.execute(ANSWER, (vehicle,)).fetchone() == before
    with psycopg.connect(database.ingest_url) as conn:
        late = start + timedelta(hours=1, seconds=5)
        with conn.cursor() as cur, cur.copy(
                "COPY telemetry (time, tenant_id, vehicle_id, seq, speed_kph, source) "
                "FROM STDIN") as copy:
            copy.write_row((late, tenant, vehicle, 100_000, 99.0, "gateway"))
        conn.commit()
        # A replay of the same row and of a compressed one: skipped, not an error.
        cur = conn.execute(
            "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, speed_kph, source) "
            "VALUES (%s, %s, %s, 100000, 99, 'gateway'), (%s, %s, %s, 0, 50, 'gateway') "
            "ON CONFLICT DO NOTHING", (late, tenant, vehicle, start, tenant, vehicle))
        assert cur.rowcount == 0
        conn.commit()
    with psycopg.connect(database.owner_url) as conn:
        after = conn.execute(ANSWER, (vehicle,)).fetchone()
        assert after is not None
        assert before is not None
        assert after[0] == before[0] + 1
        assert after[1] == pytest.approx(float(str(before[1])) + 99.0)
        assert conn.execute("SELECT speed_kph FROM telemetry WHERE seq = 100000").fetchone() == (
            99.0,)


def test_rollups_answer_how_far_how_long_and_how_much(database: TestDatabase) -> None:
    """Distance, engine-on, idle and above-threshold seconds, fuel used and max rpm, per
    minute, hour and the tenant's own day (Asia/Kolkata: days start at 18:30 UTC)."""
    day_start = datetime(2026, 11, 1, 18, 30, tzinfo=UTC)  # 2026-11-02 00:00 in Kolkata
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        tenant, vehicle = tenant_and_vehicle(conn)
        conn.execute("UPDATE tenants SET timezone = 'Asia/Kolkata' WHERE id = %s", (tenant,))
        with pytest.raises(errors.CheckViolation):
            conn.execute("UPDATE tenants SET timezone = 'Mars/Olympus' WHERE id = %s", (tenant,))
        # 20 minutes at 10 s a sample from 10 minutes before the local midnight: the first
        # half idling, the second driving fast and revving, using fuel; a NULL interval (the
        # first sample after a gap) counts no time.
        conn.execute(
            "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, speed_kph, rpm, ignition, "
            "interval_s, distance_m, fuel_used_pct, over_speed, over_rpm, source) "
            "SELECT %s - interval '10 minutes' + g * interval '10 seconds', %s, %s, g, "
            "CASE WHEN g < 60 THEN 0 ELSE 100 END, CASE WHEN g < 60 THEN 800 ELSE 3500 END, "
            "true, CASE WHEN g = 0 THEN NULL ELSE 10 END, CASE WHEN g < 60 THEN 0 ELSE 250 END, "
            "0.01, g >= 60, g >= 60, 'gateway' FROM generate_series(0, 119) g",
            (day_start, tenant, vehicle))
    database.refresh_rollups((day_start - timedelta(hours=1)).isoformat(),
                             (day_start + timedelta(hours=1)).isoformat())
    with psycopg.connect(database.owner_url) as conn:
        totals = conn.execute(
            "SELECT sum(distance_km), sum(engine_on_s), sum(idle_s), sum(over_speed_s), "
            "sum(over_rpm_s), round(sum(fuel_used_pct)::numeric, 2)::float8, max(max_rpm) "
            "FROM telemetry_1h WHERE vehicle_id = %s", (vehicle,)).fetchone()
        minutes = conn.execute("SELECT sum(distance_km), sum(idle_s) FROM telemetry_1m "
                               "WHERE vehicle_id = %s", (vehicle,)).fetchone()
    assert totals == (15.0, 1190.0, 590.0, 600.0, 600.0, 1.2, 3500.0)
    assert minutes == (15.0, 590.0)
    with psycopg.connect(database.app_url) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        days = conn.execute(
            "SELECT day, samples, distance_km, engine_on_s, idle_s FROM "
            "tenant.telemetry_days('2026-11-01', '2026-11-02') ORDER BY day").fetchall()
    # Local 1 Nov: the idling 10 minutes; local 2 Nov: the 10 driving minutes.
    assert [(str(d), n, km, on, idle) for d, n, km, on, idle in days] == [
        ("2026-11-01", 60, 0.0, 590.0, 590.0), ("2026-11-02", 60, 15.0, 600.0, 0.0)]
