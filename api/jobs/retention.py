"""Retention: archive hot chunks older than the window, then drop them; housekeeping.

For each chunk of an archived hypertable whose whole range ends before ``now - hot_days``
(``timescaledb_information.chunks``), every tenant-day in it is exported to the archive and
verified (see archive.export_day). Only when every tenant-day of the chunk verified does the
job drop it, inside one transaction that first locks the chunk against writers and recounts
its rows against the manifest: a row that arrived after the export (late data) stops the drop
and the next run exports again. A failed upload or verification leaves the chunk in place.
A row the archive cannot encode does not hold its chunk back: it goes to archive_rejects
(export_day) and counts as exported.
Audit logs are a plain table and are never touched. Days an analyst restored are left hot for
`restore_keep_days`.

Also here: the Apache edition has no retention policies or continuous aggregates, so the job
drops old `ingest_rejects` chunks and a separate job refreshes the rollups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from api.jobs.archive import ArchivedDay, BlobArchive, export_day, table_columns
from api.jobs.config import JobsSettings
from api.jobs.errors import ArchiveError

log = logging.getLogger(__name__)

RESTORE_KEEP_DAYS = 7
"""A restored day stays in the hot store at least this long before it may be dropped again."""


@dataclass
class RetentionReport:
    """What one retention pass did."""

    chunks_considered: int = 0
    chunks_dropped: int = 0
    days_archived: int = 0
    rows_archived: int = 0
    failures: list[str] = field(default_factory=list)
    rejects_chunks_dropped: int = 0
    rows_dead_lettered: int = 0
    """Rows newly set aside in archive_rejects (left out of their objects); a rerun that
    finds the same rows again does not count them twice."""
    dead_letters: list[str] = field(default_factory=list)
    """One line per tenant-day with dead letters."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for job_runs.details."""
        return {"chunks_considered": self.chunks_considered,
                "chunks_dropped": self.chunks_dropped, "days_archived": self.days_archived,
                "rows_archived": self.rows_archived, "failures": self.failures[:20],
                "failure_count": len(self.failures),
                "rejects_chunks_dropped": self.rejects_chunks_dropped,
                "rows_dead_lettered": self.rows_dead_lettered,
                "dead_letters": self.dead_letters[:20]}


def _days(start: datetime, end: datetime) -> list[date]:
    out = []
    day = start.astimezone(UTC).date()
    while datetime.combine(day, datetime.min.time(), tzinfo=UTC) < end:
        out.append(day)
        day += timedelta(days=1)
    return out


async def _old_chunks(conn: asyncpg.Connection, table: str, *, hot_days: int,
                      now: datetime | None, day: date | None) -> list[asyncpg.Record]:
    """Chunks of `table` past the hot window (only the one holding `day`, if given)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=hot_days)
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) if day else None
    return list(await conn.fetch(
        "SELECT chunk_schema, chunk_name, range_start, range_end"
        " FROM timescaledb_information.chunks WHERE hypertable_schema = 'public'"
        " AND hypertable_name = $1 AND range_end <= $2"
        " AND ($3::timestamptz IS NULL OR (range_start <= $3 AND range_end > $3))"
        " ORDER BY range_start", table, cutoff, at))


async def pending_chunks(conn: asyncpg.Connection, table: str, *, hot_days: int,
                         now: datetime | None = None, day: date | None = None
                         ) -> list[tuple[str, list[tuple[str, date]]]]:
    """What a run would archive: per chunk, its (tenant slug, day) pairs (a dry run)."""
    out = []
    for chunk in await _old_chunks(conn, table, hot_days=hot_days, now=now, day=day):
        qualified = f'"{chunk["chunk_schema"]}"."{chunk["chunk_name"]}"'
        pairs = await conn.fetch(
            f"SELECT DISTINCT t.slug, (c.time AT TIME ZONE 'UTC')::date AS day"  # noqa: S608
            f" FROM {qualified} c JOIN tenants t ON t.id = c.tenant_id ORDER BY 1, 2")
        out.append((qualified, [(r["slug"], r["day"]) for r in pairs]))
    return out


async def archive_and_drop(conn: asyncpg.Connection, store: BlobArchive, table: str, *,
                           hot_days: int, now: datetime | None = None,
                           report: RetentionReport | None = None, day: date | None = None,
                           progress: Callable[[str], None] | None = None) -> RetentionReport:
    """Archive every chunk of `table` older than the hot window (or only the one holding
    `day`); drop those fully verified. `progress` hears one line per chunk."""
    report = report or RetentionReport()
    # One archive run per table at a time (the API's scheduled run and `fleet archive run`):
    # two merges of one tenant-day would each write the union they saw.
    if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('fleet-archive:' || $1))",
                               table):
        report.failures.append(f"{table}: another archive run is in progress; skipped")
        return report
    try:
        return await _archive_and_drop(conn, store, table, hot_days=hot_days, now=now,
                                       report=report, day=day, progress=progress)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('fleet-archive:' || $1))",
                           table)


async def _archive_and_drop(conn: asyncpg.Connection, store: BlobArchive, table: str, *,
                            hot_days: int, now: datetime | None, report: RetentionReport,
                            day: date | None, progress: Callable[[str], None] | None
                            ) -> RetentionReport:
    now = now or datetime.now(UTC)
    columns = await table_columns(conn, table)
    chunks = await _old_chunks(conn, table, hot_days=hot_days, now=now, day=day)
    for n, chunk in enumerate(chunks, 1):
        if progress is not None:
            progress(f"{table}: chunk {n} of {len(chunks)}, {chunk['range_start']:%Y-%m-%d}"
                     f" .. {chunk['range_end']:%Y-%m-%d}")
        report.chunks_considered += 1
        qualified = f'"{chunk["chunk_schema"]}"."{chunk["chunk_name"]}"'
        start, end = chunk["range_start"], chunk["range_end"]
        if start.astimezone(UTC).time() != datetime.min.time() or \
                end.astimezone(UTC).time() != datetime.min.time():
            report.failures.append(f"{qualified}: range {start}..{end} is not whole UTC days")
            continue
        recent_restore = await conn.fetchval(
            "SELECT count(*) FROM archive_manifest WHERE table_name = $1 AND day >= $2"
            " AND day < $3 AND restored_at > $4", table, start.date(), end.date(),
            now - timedelta(days=RESTORE_KEEP_DAYS))
        if recent_restore:
            continue
        tenants = await conn.fetch(
            f"SELECT DISTINCT c.tenant_id, t.slug FROM {qualified} c"  # noqa: S608 - catalogue name
            " JOIN tenants t ON t.id = c.tenant_id")
        exported: list[ArchivedDay] = []
        try:
            for tenant in tenants:
                for one_day in _days(start, end):
                    done = await export_day(conn, store, table, columns=columns,
                                            tenant_id=tenant["tenant_id"],
                                            tenant_slug=tenant["slug"], day=one_day)
                    if done is not None:
                        exported.append(done)
        except ArchiveError as exc:
            # Nothing of this chunk is dropped; the next run starts the chunk again.
            report.failures.append(f"{qualified}: {exc}")
            log.warning("retention: %s kept: %s", qualified, exc)
            continue
        report.days_archived += len(exported)
        report.rows_archived += sum(e.rows for e in exported)
        for e in exported:
            if e.rejected:
                first = e.rejected[0]
                line = (f"{table} {e.day} {e.tenant_slug}: {len(e.rejected)} rows in"
                        f" archive_rejects, first {first.key} {first.column}: {first.reason}")
                report.rows_dead_lettered += e.new_rejects
                report.dead_letters.append(line)
                log.warning("retention: %s", line)
        if await _drop_verified(conn, table, qualified, start=start, end=end,
                                exported=exported):
            report.chunks_dropped += 1
        else:
            report.failures.append(f"{qualified}: rows changed after export; kept")
    return report


async def _drop_verified(conn: asyncpg.Connection, table: str, qualified: str, *,
                         start: datetime, end: datetime, exported: list[ArchivedDay]) -> bool:
    async with conn.transaction():
        # SHARE mode blocks INSERT/UPDATE/DELETE on the chunk until the drop commits, so the
        # count below is the final content of the chunk.
        await conn.execute(f"LOCK TABLE {qualified} IN SHARE MODE")
        counts = await conn.fetch(
            f"SELECT tenant_id, (time AT TIME ZONE 'UTC')::date AS day, count(*) AS n"  # noqa: S608
            f" FROM {qualified} GROUP BY 1, 2")
        expected = {(e.tenant_id, e.day): e.live_rows for e in exported}
        actual = {(r["tenant_id"], r["day"]): r["n"] for r in counts}
        if actual != expected:
            return False
        await conn.execute(
            "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz,"
            " newer_than => $3::timestamptz)", table, end, start)
        await conn.execute(
            "UPDATE archive_manifest SET dropped_at = now() WHERE table_name = $1"
            " AND day >= $2 AND day < $3", table, start.date(), end.date())
    return True


class RetentionJob:
    """Archive + drop for each configured table, and drop old dead letters."""

    name = "retention"

    def __init__(self, db_url: str, settings: JobsSettings) -> None:
        self._db_url = db_url
        self._s = settings

    async def run(self) -> dict[str, Any]:
        """One retention pass."""
        report = RetentionReport()
        conn = await asyncpg.connect(self._db_url)
        try:
            if self._s.azure_connection_string:
                async with BlobArchive(self._s.azure_connection_string,
                                       self._s.azure_container) as store:
                    for table in self._s.archive_tables:
                        await archive_and_drop(conn, store, table, hot_days=self._s.hot_days,
                                               report=report)
            else:
                report.failures.append("no archive configured: nothing archived or dropped")
            keep = timedelta(days=self._s.ingest_rejects_keep_days)
            if await _edition(conn) == "timescale":
                # Retention is a policy on this edition (migration 0014), run by TimescaleDB's
                # scheduler; replaced only when the setting has changed.
                current = await conn.fetchval(
                    "SELECT (config->>'drop_after')::interval FROM timescaledb_information.jobs"
                    " WHERE proc_name = 'policy_retention' AND hypertable_name = 'ingest_rejects'")
                if current != keep:
                    await conn.execute(
                        "SELECT remove_retention_policy('ingest_rejects', if_exists => true)")
                    await conn.execute("SELECT add_retention_policy('ingest_rejects', "
                                       "drop_after => $1::interval)", keep)
                report.rejects_chunks_dropped = 0
            else:
                dropped = await conn.fetch(
                    "SELECT drop_chunks('ingest_rejects', older_than => $1::timestamptz)",
                    datetime.now(UTC) - keep)
                report.rejects_chunks_dropped = len(dropped)
        finally:
            await conn.close()
        return report.as_dict()


async def _edition(conn: asyncpg.Connection) -> str:
    """The TimescaleDB licence in force: 'timescale' or 'apache'."""
    edition = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return "timescale" if edition == "timescale" else "apache"


class RollupsJob:
    """Refresh telemetry_1m/1h for recent buckets (the Apache edition has no caggs)."""

    name = "rollups"

    def __init__(self, db_url: str, settings: JobsSettings) -> None:
        self._db_url = db_url
        self._s = settings

    async def run(self) -> dict[str, Any]:
        """Recompute the rollup buckets of the last `rollups_window_s` seconds."""
        conn = await asyncpg.connect(self._db_url)
        try:
            if await _edition(conn) == "timescale":
                return {"skipped": "continuous aggregates: their policies refresh them"}
            now = datetime.now(UTC)
            start = now - timedelta(seconds=self._s.rollups_window_s)
            await conn.execute("CALL fleet_refresh_rollups($1, $2)", start, now)
        finally:
            await conn.close()
        return {"refreshed_from": start.isoformat(), "refreshed_to": now.isoformat()}
