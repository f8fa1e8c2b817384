"""Issue #24, finding 3: a row the archive cannot encode is a dead letter of the archive
(archive_rejects, with its reason and the whole row), never a reason to keep its chunk hot.

Against Azurite and the real database; `encode_rows`, the part that finds such values, is
also driven with generated rows."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.jobs.archive import BlobArchive, Column, blob_path, encode_rows, restore_report
from api.jobs.retention import archive_and_drop
from tests.jobs.archive_rows import NOW, chunks, insert_telemetry, snapshot

pytestmark = pytest.mark.services

# Legacy rows, written before migration 0022 forbade their arrays (written here past its
# trigger, as a superuser in replica mode: TimescaleDB refuses DISABLE TRIGGER on a hypertable
# with compression).
ODD = {
    "{{P0300,P0301},{P0302,P0303}}": "2-dimensional array",
    "[0:1]={P0300,P0301}": "array lower bound 0",
    "[3:3]={U0100}": "array lower bound 3",
}


def _legacy_rows(admin_url: str, rows: list[tuple[uuid.UUID, uuid.UUID, datetime, int, str]]
                 ) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for tenant, vehicle, at, seq, dtc in rows:
            conn.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, dtc_codes,"
                         " source) VALUES (%s, %s, %s, %s, %s::varchar(10)[], 'gateway')",
                         (at, tenant, vehicle, seq, dtc))


def _row_texts(owner_url: str, seqs: list[int]) -> dict[int, str]:
    with psycopg.connect(owner_url) as conn:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT seq, t::text FROM telemetry t WHERE seq = ANY(%s)", (seqs,))}


async def test_odd_rows_are_dead_lettered_and_the_rest_archived_and_dropped(
        database, azurite, two_tenants) -> None:
    a, b = two_tenants
    day40, day35 = (NOW - timedelta(days=40)).date(), (NOW - timedelta(days=35)).date()
    v1, w1 = a.vehicles["v1"], b.vehicles["w1"]
    at40 = NOW - timedelta(days=40, minutes=-3)
    odd = list(ODD)
    _legacy_rows(database.admin_url, [
        (a.tenant_id, v1, at40, 9001, odd[0]),
        (a.tenant_id, v1, at40 + timedelta(seconds=1), 9002, odd[1]),
        (b.tenant_id, w1, NOW - timedelta(days=35, minutes=-7), 9003, odd[2]),
    ])
    odd_rows = _row_texts(database.owner_url, [9001, 9002, 9003])
    before40 = [r for r in snapshot(database.owner_url, day40) if r not in odd_rows.values()]
    before35 = [r for r in snapshot(database.owner_url, day35) if r not in odd_rows.values()]
    assert len(before40) == 36
    container = f"c{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, container) as store:
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            # Nothing failed, both old chunks dropped, later chunks not held back.
            assert report.failures == []
            assert report.chunks_dropped == 2
            assert report.rows_archived == 72
            assert report.rows_dead_lettered == 3
            assert any(f"telemetry {day40} {a.slug}: 2 rows in archive_rejects" in line
                       for line in report.dead_letters)
            assert chunks(database.owner_url) == 1
            dead = await conn.fetch(
                "SELECT tenant_id, day, row_key, column_name, reason, row_text"
                " FROM archive_rejects ORDER BY row_text")
            assert {(r["tenant_id"], r["day"], r["column_name"], r["reason"], r["row_text"])
                    for r in dead} == {
                (a.tenant_id, day40, "dtc_codes", ODD[odd[0]], odd_rows[9001]),
                (a.tenant_id, day40, "dtc_codes", ODD[odd[1]], odd_rows[9002]),
                (b.tenant_id, day35, "dtc_codes", ODD[odd[2]], odd_rows[9003])}
            # The key names the row; the row text gives it back exactly, bounds included.
            keys = {r["row_text"]: r["row_key"] for r in dead}
            assert '"seq": 9001' in keys[odd_rows[9001]]
            assert f'"vehicle_id": "{v1}"' in keys[odd_rows[9001]]
            back = await conn.fetchval(
                "SELECT (r.row_text::telemetry).dtc_codes::text FROM archive_rejects r"
                " WHERE r.row_text = $1", odd_rows[9002])
            assert back == "[0:1]={P0300,P0301}"

            # Restore brings the rest back exactly and says what stayed behind.
            report40 = await restore_report(conn, store, day40)
            assert {(r.tenant, r.restored, r.dead_letters, r.error) for r in report40} == {
                (a.slug, 24, 2, None), (b.slug, 12, 0, None)}
            assert snapshot(database.owner_url, day40) == before40
            report35 = await restore_report(conn, store, day35)
            assert {(r.tenant, r.dead_letters) for r in report35} == {(a.slug, 0), (b.slug, 1)}
            assert snapshot(database.owner_url, day35) == before35
    finally:
        await conn.close()
    # What an operator reads: `fleet archive rejects` and `restore`.
    listed = _cli(database, azurite, container, "rejects", "--tenant", a.slug, "--rows")
    assert listed.returncode == 0, listed.stderr
    assert f"{day40}  {a.slug}" in listed.stdout
    assert "dtc_codes: 2-dimensional array" in listed.stdout
    assert odd_rows[9002] in listed.stdout
    assert "2 rows of telemetry in archive_rejects" in listed.stderr
    again = _cli(database, azurite, container, "restore", "--day", day40.isoformat())
    assert again.returncode == 0, again.stderr
    assert f"{day40} {a.slug}: 2 rows of this day are dead letters" in again.stderr


def _cli(database: Any, azurite: str, container: str, *argv: str
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEET_DATABASE_OWNER_URL": database.owner_url,
           "FLEET_JOBS_AZURE_CONNECTION_STRING": azurite, "FLEET_JOBS_AZURE_CONTAINER": container}
    return subprocess.run([sys.executable, "-m", "deploy.cli", "archive", *argv], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_late_odd_rows_for_an_archived_day_are_dead_lettered_in_the_merge(
        database, azurite, two_tenants) -> None:
    """Late rows reach a day already archived and dropped: the good one is merged into the
    object, the odd one dead-lettered; a rerun of the same day adds no second dead letter."""
    a, _ = two_tenants
    day40 = (NOW - timedelta(days=40)).date()
    v2 = a.vehicles["v2"]
    container = f"c{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, container) as store:
            await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            archived = await conn.fetchval(
                "SELECT row_count FROM archive_manifest WHERE tenant_id = $1 AND day = $2",
                a.tenant_id, day40)
            assert archived == 24
            late = NOW - timedelta(days=40, hours=-2)
            insert_telemetry(database.owner_url, a.tenant_id, v2, day_offset=40, n=1,
                              seq0=7000)
            _legacy_rows(database.admin_url, [(a.tenant_id, v2, late, 7001, "[2:2]={P0420}")])
            for newly in (1, 0):  # the second run finds the same odd row again
                report = await archive_and_drop(conn, store, "telemetry", hot_days=30,
                                                now=NOW)
                assert report.failures == []
                assert report.rows_dead_lettered == newly
                assert len(report.dead_letters) == 1
                assert report.chunks_dropped == 1
                _legacy_rows(database.admin_url,
                             [(a.tenant_id, v2, late, 7001, "[2:2]={P0420}")])
            entry = await conn.fetchrow(
                "SELECT row_count, history FROM archive_manifest WHERE tenant_id = $1"
                " AND day = $2", a.tenant_id, day40)
            assert entry["row_count"] == 25
            data = await store.get(blob_path(a.slug, "telemetry", day40))
            assert pq.read_table(io.BytesIO(data)).num_rows == 25
            assert await conn.fetchval("SELECT count(*) FROM archive_rejects") == 1
            # The operator fixes the row (the odd copy left hot above, then the fixed one):
            # it is archived with the day and is no longer a dead letter.
            await conn.execute("UPDATE telemetry SET dtc_codes = '{P0420}' WHERE seq = 7001")
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert (report.failures, report.rows_dead_lettered) == ([], 0)
            assert await conn.fetchval("SELECT count(*) FROM archive_rejects") == 0
            assert await conn.fetchval(
                "SELECT row_count FROM archive_manifest WHERE tenant_id = $1 AND day = $2",
                a.tenant_id, day40) == 26
    finally:
        await conn.close()


# --- encode_rows on generated rows -------------------------------------------------------------

COLUMNS = [Column("seq", "int8"), Column("codes", "_varchar"), Column("note", "text"),
           Column("speed", "float8")]
_codes = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=3))
_bad_codes = st.lists(st.lists(st.text(max_size=3), min_size=1, max_size=2), min_size=1,
                      max_size=2)  # a nested list: what a 2-D array decodes to
_bad_speed = st.sampled_from(["fast", object()])


@st.composite
def _records(draw: st.DrawFn) -> tuple[list[tuple[Any, ...]], set[int], set[int]]:
    """Rows, the indices holding bad codes, and those holding a bad speed."""
    rows: list[tuple[Any, ...]] = []
    bad_codes: set[int] = set()
    bad_speed: set[int] = set()
    for i in range(draw(st.integers(min_value=0, max_value=25))):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "codes", "speed"]))
        codes = draw(_bad_codes) if kind == "codes" else draw(_codes)
        speed = draw(_bad_speed) if kind == "speed" else draw(st.floats(allow_nan=False))
        if kind == "codes":
            bad_codes.add(i)
        if kind == "speed":
            bad_speed.add(i)
        rows.append((i, codes, draw(st.text(max_size=8)), speed))
    return rows, bad_codes, bad_speed


@settings(max_examples=200, deadline=None)
@given(_records())
def test_encode_rows_leaves_out_exactly_the_rows_arrow_cannot_hold(
        case: tuple[list[tuple[Any, ...]], set[int], set[int]]) -> None:
    rows, bad_codes, bad_speed = case
    data, count, refused = encode_rows(COLUMNS, rows)
    assert set(refused) == bad_codes | bad_speed
    assert {i for i, (column, _) in refused.items() if column == "codes"} == bad_codes
    assert {i for i, (column, _) in refused.items() if column == "speed"} == bad_speed
    kept = [r for i, r in enumerate(rows) if i not in refused]
    table = pq.read_table(io.BytesIO(data))
    assert count == table.num_rows == len(kept)
    assert table.to_pylist() == [dict(zip(("seq", "codes", "note", "speed"), r, strict=True))
                                 for r in kept]


def test_encode_rows_names_the_row_and_column_arrow_refuses() -> None:
    data, count, refused = encode_rows(COLUMNS, [(1, ["P0300"], "x", 1.5)])
    assert (count, refused) == (1, {})
    assert pq.read_table(io.BytesIO(data)).num_rows == 1
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    _, _, refused = encode_rows([Column("t", "timestamptz")], [(stamp,), ("not a time",)])
    assert set(refused) == {1}
