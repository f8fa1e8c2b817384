"""Issue #24, finding 3: telemetry refuses arrays the cold archive cannot hold, on both
editions, and the migration that says so applies to a database holding compressed chunks
(where TimescaleDB refuses to add a CHECK constraint)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors

from deploy.services import ADMIN_ROLE, LocalServices, drop_database
from storage.migrate import migrate
from tests.conftest import TestDatabase, make_database
from tests.storage.rows import tenant_and_vehicle

pytestmark = pytest.mark.editions

MIGRATIONS = Path(__file__).parents[2] / "storage" / "migrations"


# An array literal: its dimensions and lower bound drawn, its elements short codes.
_bounds = st.integers(min_value=-3, max_value=3)
_dims = st.integers(min_value=1, max_value=3)


@st.composite
def _array_literals(draw: st.DrawFn) -> tuple[str, bool]:
    """(literal, whether telemetry should take it)."""
    dims = draw(_dims)
    lengths = [draw(st.integers(min_value=1, max_value=2)) for _ in range(dims)]
    lower = draw(_bounds) if draw(st.booleans()) else 1

    def nest(level: int) -> str:
        if level == dims:
            return draw(st.sampled_from(["P0300", "U0100", "NULL", '"C 1"']))
        return "{" + ",".join(nest(level + 1) for _ in range(lengths[level])) + "}"

    body = nest(0)
    if lower == 1 and not draw(st.booleans()):
        return body, dims == 1
    bounds = "".join(f"[{lower}:{lower + n - 1}]" for n in lengths)
    return f"{bounds}={body}", dims == 1 and lower == 1


def test_telemetry_takes_only_one_dimensional_arrays_from_one(database: TestDatabase) -> None:
    with psycopg.connect(database.ingest_url, autocommit=True) as conn, \
            psycopg.connect(database.owner_url, autocommit=True) as owner:
        tenant, vehicle = tenant_and_vehicle(owner)
        seq = iter(range(1_000_000))
        insert = ("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, dtc_codes, source)"
                  " VALUES (now(), %s, %s, %s, %s::varchar(10)[], 'gateway')")
        for fine in (None, "{}", "{P0300}", "{P0300,NULL,U0100}", "[1:2]={a,b}"):
            conn.execute(insert, (tenant, vehicle, next(seq), fine))

        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(_array_literals())
        def check(case: tuple[str, bool]) -> None:
            literal, accepted = case
            if accepted:
                conn.execute(insert, (tenant, vehicle, next(seq), literal))
                return
            with pytest.raises(errors.CheckViolation, match=r"telemetry\.dtc_codes: only one-"):
                conn.execute(insert, (tenant, vehicle, next(seq), literal))
            # UPDATE (the schema owner's) and COPY (the stream's path) are held to it too.
            with pytest.raises(errors.CheckViolation):
                owner.execute("UPDATE telemetry SET dtc_codes = %s::varchar(10)[]"
                             " WHERE vehicle_id = %s AND seq = 0", (literal, vehicle))

        check()
        with pytest.raises(errors.CheckViolation), conn.cursor() as cur, cur.copy(
                "COPY telemetry (time, tenant_id, vehicle_id, seq, dtc_codes, source)"
                " FROM STDIN") as copy:
            copy.write_row((datetime.now(UTC), tenant, vehicle, next(seq),
                            "{{P0300},{P0301}}", "gateway"))
        shapes = conn.execute("SELECT DISTINCT coalesce(array_ndims(dtc_codes), 1),"
                              " coalesce(array_lower(dtc_codes, 1), 1) FROM telemetry").fetchall()
        assert shapes == [(1, 1)]


def test_the_rule_migrates_onto_a_database_with_compressed_chunks(
        services: LocalServices, tmp_path: Path) -> None:
    """A database migrated to 0021 with telemetry already compressed (the Timescale edition
    past its compression window) and legacy odd arrays takes migration 0022; the old rows
    stay as they were (the archive dead-letters them), new ones are held to the rule."""
    older = tmp_path / "migrations"
    older.mkdir()
    for f in MIGRATIONS.glob("*.sql"):
        if int(f.name[:4]) <= 21:
            shutil.copy(f, older / f.name)
    db = make_database(services, migrated=False)
    try:
        migrate(db.owner_url, log=lambda _m: None, directory=older)
        start = (datetime.now(UTC) - timedelta(days=10)).replace(hour=1, minute=0, second=0,
                                                                 microsecond=0)
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            tenant, vehicle = tenant_and_vehicle(conn)
            conn.execute(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, dtc_codes, source)"
                " SELECT %s + g * interval '1 minute', %s, %s, g, CASE g WHEN 3 THEN"
                " '{{P0300},{P0301}}'::varchar(10)[] WHEN 4 THEN '[0:1]={P0300,P0301}'"
                " ELSE '{P0100}' END, 'gateway' FROM generate_series(0, 99) g",
                (start, tenant, vehicle))
            if db.edition == "timescale":
                conn.execute("SELECT compress_chunk(c, if_not_compressed => true)"
                             " FROM show_chunks('telemetry') c")
                assert conn.execute("SELECT bool_and(is_compressed) FROM "
                                    "timescaledb_information.chunks WHERE hypertable_name ="
                                    " 'telemetry'").fetchone() == (True,)
        report = migrate(db.owner_url, log=lambda _m: None)
        assert report.applied[0].version == 22
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            odd = conn.execute("SELECT seq, dtc_codes::text FROM telemetry WHERE seq IN (3, 4)"
                               " ORDER BY seq").fetchall()
            assert odd == [(3, "{{P0300},{P0301}}"), (4, "[0:1]={P0300,P0301}")]
            with pytest.raises(errors.CheckViolation):
                conn.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, dtc_codes,"
                             " source) VALUES (%s, %s, %s, 500, '[0:0]={P0300}', 'gateway')",
                             (start, tenant, vehicle))
    finally:
        drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)
