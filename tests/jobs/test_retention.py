"""Retention and the cold archive against Azurite and the real TimescaleDB."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.jobs.archive import (
    BlobArchive,
    Column,
    blob_path,
    parquet_rows,
    restore_day,
    restore_plan,
    sha256_hex,
)
from api.jobs.config import JobsSettings
from api.jobs.errors import ArchiveError
from api.jobs.retention import RetentionJob, RollupsJob, archive_and_drop
from tests.jobs.archive_rows import NOW, chunks, insert_telemetry, snapshot

pytestmark = pytest.mark.services

async def test_archive_roundtrip(database, azurite, two_tenants) -> None:
    a, b = two_tenants
    before_all = snapshot(database.owner_url)
    old_day = (NOW - timedelta(days=40)).date()
    before_day = snapshot(database.owner_url, old_day)
    assert len(before_day) == 36
    assert chunks(database.owner_url) == 3
    container = f"c{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, container) as store:
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert report.failures == []
            assert report.chunks_dropped == 2
            assert report.days_archived == 4  # 2 tenants x 2 old days
            assert report.rows_archived == 2 * 36  # 3 vehicles x 12 rows x 2 days
            names = await store.list()
            assert blob_path(a.slug, "telemetry", old_day) in names
            assert f"{b.slug}/telemetry/{old_day:%Y}/{old_day:%m}/{old_day:%d}/telemetry.parquet" \
                in names
            assert chunks(database.owner_url) == 1  # only the hot day is left
            assert snapshot(database.owner_url, old_day) == []
            # A second pass finds nothing old to do.
            again = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert again.chunks_considered == 0

            restored = await restore_day(conn, store, old_day)
            assert restored == {a.slug: 24, b.slug: 12}
            assert snapshot(database.owner_url, old_day) == before_day  # identical rows
            # Restoring twice changes nothing; a single tenant can be restored.
            assert await restore_day(conn, store, old_day, tenant_slug=b.slug) == {b.slug: 0}
            # A freshly restored day is not archived and dropped again at once.
            kept = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert kept.chunks_dropped == 0
            day35 = (NOW - timedelta(days=35)).date()
            await restore_day(conn, store, day35)
            assert snapshot(database.owner_url) == before_all
        audit = await conn.fetchval("SELECT count(*) FROM archive_manifest WHERE dropped_at"
                                    " IS NOT NULL")
        assert audit == 4
    finally:
        await conn.close()


async def test_late_rows_for_an_archived_day_are_merged_not_written_over(
        database, azurite, two_tenants) -> None:
    """Issue #24, finding 1: rows that arrive for a day already archived and dropped (a
    backlog, a replay, a vendor backfill) end in the same object with everything archived
    before; a late copy of an archived row is kept once; the manifest remembers the old
    version, and a restore gives back the union exactly."""
    a, _b = two_tenants
    old_day = (NOW - timedelta(days=40)).date()
    vid = a.vehicles["v1"]
    container = f"c{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, container) as store:
            assert (await archive_and_drop(conn, store, "telemetry", hot_days=30,
                                           now=NOW)).failures == []
            first = await conn.fetchrow(
                "SELECT row_count, sha256 FROM archive_manifest WHERE tenant_id = $1"
                " AND day = $2", a.tenant_id, old_day)
            assert first["row_count"] == 24
            # Late: 5 new samples of v1 (seq 900..904) and a second copy of an archived one
            # (seq 0, same time: the table's unique key).
            insert_telemetry(database.owner_url, a.tenant_id, vid, day_offset=40, n=5,
                              seq0=900)
            insert_telemetry(database.owner_url, a.tenant_id, vid, day_offset=40, n=1,
                              seq0=0)
            late = snapshot(database.owner_url, old_day)
            assert len(late) == 6
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert report.failures == []
            assert report.chunks_dropped == 1
            assert snapshot(database.owner_url, old_day) == []
            merged = await conn.fetchrow(
                "SELECT row_count, sha256, history FROM archive_manifest WHERE tenant_id = $1"
                " AND day = $2", a.tenant_id, old_day)
            assert merged["row_count"] == 24 + 5
            history = msgspec.json.decode(merged["history"])
            assert [(h["sha256"], h["row_count"]) for h in history] == \
                [(first["sha256"], 24)]
            data = await store.get(blob_path(a.slug, "telemetry", old_day))
            assert sha256_hex(data) == merged["sha256"]
            assert parquet_rows(data).num_rows == 29

            restored = await restore_day(conn, store, old_day, tenant_slug=a.slug)
            assert restored == {a.slug: 29}
            back = snapshot(database.owner_url, old_day)
            assert len(back) == 29
            assert set(late) <= set(back)  # the late rows, exactly
    finally:
        await conn.close()


async def test_an_archived_object_that_differs_from_its_manifest_is_never_replaced(
        database, azurite, two_tenants) -> None:
    """A damaged archived object cannot be merged with late rows: they stay hot, the run
    says why, and the object is left as it is for an operator."""
    a, _b = two_tenants
    old_day = (NOW - timedelta(days=40)).date()
    container = f"c{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, container) as store:
            await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            path = blob_path(a.slug, "telemetry", old_day)
            await store.put(path, b"not the archived object")
            insert_telemetry(database.owner_url, a.tenant_id, a.vehicles["v1"],
                              day_offset=40, n=3, seq0=900)
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            assert report.chunks_dropped == 0
            assert any("checksum differs from the manifest; late rows are kept hot" in f
                       for f in report.failures)
            assert len(snapshot(database.owner_url, old_day)) == 3
            assert await store.get(path) == b"not the archived object"
    finally:
        await conn.close()


class CorruptingArchive(BlobArchive):
    """Uploads something else than it was given: the read-back check must catch it."""

    async def put(self, path: str, data: bytes) -> None:
        await super().put(path, data[:-10] + b"corrupted!")


async def test_failed_upload_or_verification_drops_nothing(database, azurite,
                                                           two_tenants) -> None:
    before = snapshot(database.owner_url)
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with CorruptingArchive(azurite, f"c{uuid.uuid4().hex[:12]}") as store:
            report = await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
        assert report.chunks_dropped == 0
        assert len(report.failures) == 2
        assert "checksum" in report.failures[0]
        # An unreachable archive: the upload fails outright.
        dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" \
               "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/" \
               "KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        with pytest.raises(ArchiveError):
            async with BlobArchive(dead, "x", retries=0):
                pass
        assert snapshot(database.owner_url) == before
        assert chunks(database.owner_url) == 3
    finally:
        await conn.close()


def _retention_policies(owner_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(owner_url) as conn:
        return [(int(r[0]), str(r[1])) for r in conn.execute(
            "SELECT job_id, config->>'drop_after' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_name = 'ingest_rejects'")]


@pytest.mark.editions
async def test_retention_job_and_rollups(database, azurite, two_tenants) -> None:
    settings = JobsSettings(azure_connection_string=azurite,
                            azure_container=f"c{uuid.uuid4().hex[:12]}", hot_days=30)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO ingest_rejects (time, reason, detail, topic, payload)"
                     " VALUES (now() - interval '60 days', 'malformed', 'x', 't', 'x'),"
                     " (now(), 'malformed', 'y', 't', 'y')")
    details = await RetentionJob(database.owner_url, settings).run()
    assert details["chunks_dropped"] == 2
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        if database.edition == "timescale":
            # A retention policy there, set to the job's setting and run by TimescaleDB.
            job = conn.execute(
                "SELECT job_id, config->>'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention' AND hypertable_name = 'ingest_rejects'"
            ).fetchone()
            assert job[1] == "30 days"
            conn.execute("CALL run_job(%s)", (job[0],))
        else:
            assert details["rejects_chunks_dropped"] >= 1
        assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 1
        # Audit logs are a plain table: retention never touches them.
        assert conn.execute("SELECT count(*) FROM show_chunks('telemetry')").fetchone()[0] == 1
    if database.edition == "timescale":
        # An unchanged setting leaves the policy (and its job) be; a changed one replaces it.
        await RetentionJob(database.owner_url, settings).run()
        assert _retention_policies(database.owner_url) == [(job[0], "30 days")]
        await RetentionJob(database.owner_url, msgspec.structs.replace(
            settings, ingest_rejects_keep_days=10)).run()
        policies = _retention_policies(database.owner_url)
        assert [p[1] for p in policies] == ["10 days"]
        assert policies[0][0] != job[0]
    roll = await RollupsJob(database.owner_url, JobsSettings(rollups_window_s=3 * 86400)).run()
    if database.edition == "timescale":
        assert "policies" in roll["skipped"]
    else:
        assert set(roll) == {"refreshed_from", "refreshed_to"}
    with psycopg.connect(database.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry_1m").fetchone()[0] > 0


def test_fleet_archive_cli(database, azurite, two_tenants) -> None:
    a, _b = two_tenants
    container = f"c{uuid.uuid4().hex[:12]}"
    old_day = (NOW - timedelta(days=40)).date()
    before = snapshot(database.owner_url, old_day)

    async def archive() -> None:
        conn = await asyncpg.connect(database.owner_url)
        try:
            async with BlobArchive(azurite, container) as store:
                await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
        finally:
            await conn.close()

    asyncio.run(archive())
    env = {**os.environ, "FLEET_DATABASE_OWNER_URL": database.owner_url,
           "FLEET_JOBS_AZURE_CONNECTION_STRING": azurite, "FLEET_JOBS_AZURE_CONTAINER": container}
    fleet = [sys.executable, "-m", "deploy.cli", "archive"]
    listed = subprocess.run([*fleet, "list", "--tenant", a.slug], env=env, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert f"{old_day}  {a.slug}" in listed
    assert "no" in listed
    out = subprocess.run([*fleet, "restore", "--day", old_day.isoformat(), "--tenant", a.slug],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"{a.slug}: 24 rows restored" in out
    assert len(snapshot(database.owner_url, old_day)) == 24
    assert set(snapshot(database.owner_url, old_day)) <= set(before)
    bad = subprocess.run([*fleet, "restore", "--day", "2001-01-01"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "no archived telemetry" in bad.stderr


def _as_archived_before_0016(data: bytes) -> bytes:
    """The same rows as an object written before migrations 0013 and 0016: a `location`
    geography (hex EWKB, as geography::text gives it) instead of lat_e7/lon_e7, and none of
    0013's derived columns."""
    table = parquet_rows(data)
    lat, lon = table.column("lat_e7").to_pylist(), table.column("lon_e7").to_pylist()
    location = [None if la is None else
                struct.pack("<BIIdd", 1, 0x20000001, 4326, lo / 1e7, la / 1e7).hex().upper()
                for la, lo in zip(lat, lon, strict=True)]
    table = table.drop_columns(["lat_e7", "lon_e7", "interval_s", "distance_m",
                                "fuel_used_pct", "over_speed", "over_rpm"])
    table = table.add_column(4, "location", pa.array(location, type=pa.string()))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


async def test_a_day_archived_before_a_migration_restores_after_it(database, azurite,
                                                                    two_tenants) -> None:
    """Objects keep the columns of their day: a replaced column is converted (the geography
    `location` into degrees x 10^7), columns added since stay NULL, the rows come back
    identical."""
    a, _b = two_tenants
    old_day = (NOW - timedelta(days=40)).date()
    before_day = snapshot(database.owner_url, old_day)
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with BlobArchive(azurite, f"c{uuid.uuid4().hex[:12]}") as store:
            await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
            for slug in (a.slug, _b.slug):
                path = blob_path(slug, "telemetry", old_day)
                old = _as_archived_before_0016(await store.get(path))
                await store.put(path, old)
                await conn.execute("UPDATE archive_manifest SET sha256 = $1 WHERE blob_path = $2",
                                   sha256_hex(old), path)
            assert await restore_day(conn, store, old_day) == {a.slug: 24, _b.slug: 12}
        assert snapshot(database.owner_url, old_day) == before_day
    finally:
        await conn.close()


def test_restore_plan_fills_replaced_and_added_columns_and_refuses_a_missing_required_one(
        ) -> None:
    columns = [Column("time", "timestamptz", nullable=False), Column("lat_e7", "int4"),
               Column("lon_e7", "int4"), Column("interval_s", "float4")]
    stage, select = restore_plan("telemetry", columns, ["time", "location"])
    assert stage == [("time", "timestamptz"), ("location", "text")]
    assert list(select) == ["time", "lat_e7", "lon_e7"]  # interval_s: added later, NULL
    with pytest.raises(ArchiveError, match=r"lacks columns \['time'\]"):
        restore_plan("telemetry", columns, ["location"])


def test_fleet_archive_run_on_a_day_and_status(database, azurite, two_tenants) -> None:
    """Issue #24, findings 2 and 5: `fleet archive run [--day] [--dry-run]` archives on
    demand with progress and is recorded like a scheduled run; `fleet archive status` shows
    the runs and exits 1 unless the last one succeeded."""
    a, b = two_tenants
    container = f"c{uuid.uuid4().hex[:12]}"
    day40, day35 = (NOW - timedelta(days=40)).date(), (NOW - timedelta(days=35)).date()
    env = {**os.environ, "FLEET_DATABASE_OWNER_URL": database.owner_url,
           "FLEET_JOBS_AZURE_CONNECTION_STRING": azurite, "FLEET_JOBS_AZURE_CONTAINER": container}
    fleet = [sys.executable, "-m", "deploy.cli", "archive"]

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*fleet, *argv], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    assert cli("status").returncode == 1  # no run yet
    dry = cli("run", "--dry-run", "--day", day40.isoformat())
    assert dry.returncode == 0, dry.stderr
    assert f"{a.slug} {day40}" in dry.stdout
    assert f"{b.slug} {day40}" in dry.stdout
    assert str(day35) not in dry.stdout
    assert chunks(database.owner_url) == 3  # a dry run changes nothing

    done = cli("run", "--day", day40.isoformat())
    assert done.returncode == 0, done.stderr
    assert ("succeeded: chunks considered 1, dropped 1; tenant-days archived 2 (36 rows, "
            "0 dead-lettered)") \
        in done.stdout
    assert "chunk 1 of 1" in done.stderr  # progress
    assert snapshot(database.owner_url, day40) == []
    assert len(snapshot(database.owner_url, day35)) == 36  # the other day is untouched
    status = cli("status")
    assert status.returncode == 0, status.stdout
    assert "succeeded" in status.stdout

    # A failure in a run: the day-35 chunk cannot be uploaded (no such container account).
    env["FLEET_JOBS_AZURE_CONNECTION_STRING"] = azurite.replace("AccountKey=", "AccountKey=x")
    bad = cli("run", "--day", day35.isoformat())
    assert bad.returncode == 1
    status = cli("status")
    assert status.returncode == 1
    assert status.stdout.splitlines()[0].split()[3] == "failed"
    assert len(snapshot(database.owner_url, day35)) == 36


def test_restore_goes_on_past_a_damaged_object_and_says_what_it_did(
        database, azurite, two_tenants) -> None:
    """Issue #24, finding 4: one tenant's damaged object does not stop the others'; the
    report names per tenant what was restored, already there, or failed; exit code 1."""
    a, b = two_tenants
    container = f"c{uuid.uuid4().hex[:12]}"
    old_day = (NOW - timedelta(days=40)).date()

    async def archive_and_damage() -> None:
        conn = await asyncpg.connect(database.owner_url)
        try:
            async with BlobArchive(azurite, container) as store:
                await archive_and_drop(conn, store, "telemetry", hot_days=30, now=NOW)
                await store.put(blob_path(a.slug, "telemetry", old_day), b"damaged")
                with pytest.raises(ArchiveError, match=rf"{a.slug}: .*checksum differs.*"
                                                       rf"restored: {b.slug} \(12 rows\)"):
                    await restore_day(conn, store, old_day)
        finally:
            await conn.close()

    asyncio.run(archive_and_damage())
    assert len(snapshot(database.owner_url, old_day)) == 12  # b's rows are back
    env = {**os.environ, "FLEET_DATABASE_OWNER_URL": database.owner_url,
           "FLEET_JOBS_AZURE_CONNECTION_STRING": azurite, "FLEET_JOBS_AZURE_CONTAINER": container}
    again = subprocess.run([sys.executable, "-m", "deploy.cli", "archive", "restore", "--day",
                            old_day.isoformat()], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 1
    assert f"{a.slug}: FAILED, nothing restored" in again.stderr
    assert "checksum differs from the manifest" in again.stderr
    assert f"{b.slug}: 0 rows restored into telemetry, 12 already there" in again.stdout
