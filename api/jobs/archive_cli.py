"""`fleet archive list|restore|rejects|status|run`: what the cold archive holds, bringing a
day back, the rows it could not encode, how the last retention runs went, and a run now.

Imports only the standard library at module top; the archive code loads inside `run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from exc


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet archive`."""
    sub = parser.add_subparsers(dest="action", required=True)
    lst = sub.add_parser("list", help="archived days from the manifest")
    lst.add_argument("--tenant", help="tenant slug")
    lst.add_argument("--table", default="telemetry")
    lst.add_argument("--since", type=_day, help="first day (YYYY-MM-DD)")
    res = sub.add_parser("restore", help="bring an archived day back into the database")
    res.add_argument("--day", type=_day, required=True, help="UTC day, YYYY-MM-DD")
    res.add_argument("--tenant", help="only this tenant (slug); default: every tenant")
    res.add_argument("--table", default="telemetry")
    rej = sub.add_parser("rejects", help="rows the archive could not encode (archive_rejects)")
    rej.add_argument("--tenant", help="tenant slug")
    rej.add_argument("--table", default="telemetry")
    rej.add_argument("--since", type=_day, help="first day (YYYY-MM-DD)")
    rej.add_argument("--rows", action="store_true", help="print each row's full text too")
    st = sub.add_parser("status", help="the last retention runs; exit 1 unless the last one "
                                       "succeeded")
    st.add_argument("--runs", type=int, default=5, help="how many runs to show")
    now = sub.add_parser("run", help="archive (and drop) what is past the hot window, now")
    now.add_argument("--day", type=_day,
                     help="only the chunk holding this UTC day (YYYY-MM-DD); it must be past "
                          "the hot window")
    now.add_argument("--dry-run", action="store_true",
                     help="list the chunks and tenant-days it would archive, change nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the process exit code."""
    import asyncio

    from api.jobs.errors import JobError
    from core.errors import SettingsError

    try:
        return asyncio.run(_run(args))
    except (JobError, SettingsError) as exc:
        print(f"fleet archive: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    import asyncpg

    from api.jobs.archive import BlobArchive, restore_report
    from api.jobs.config import JobsProcessSettings
    from core.settings import load_settings

    settings = load_settings(JobsProcessSettings, getattr(args, "config", None))
    conn = await asyncpg.connect(settings.database.owner_url)
    try:
        if args.action == "list":
            rows = await conn.fetch(
                "SELECT t.slug, m.table_name, m.day, m.row_count, m.size_bytes, m.blob_path,"
                " m.dropped_at IS NOT NULL AS dropped, m.restored_at FROM archive_manifest m"
                " JOIN tenants t ON t.id = m.tenant_id WHERE m.table_name = $1"
                " AND ($2::text IS NULL OR t.slug = $2) AND ($3::date IS NULL OR m.day >= $3)"
                " ORDER BY m.day, t.slug", args.table, args.tenant, args.since)
            print(f"{'day':<10}  {'tenant':<20} {'rows':>9} {'bytes':>10}  hot?  path")
            for r in rows:
                hot = "no" if r["dropped"] else "yes"
                if r["restored_at"] is not None:
                    hot = "rest"
                print(f"{r['day']}  {r['slug']:<20} {r['row_count']:>9} {r['size_bytes']:>10}"
                      f"  {hot:<4}  {r['blob_path']}")
            return 0
        if args.action == "rejects":
            return await _rejects(conn, args)
        if args.action == "status":
            return await _status(conn, args.runs)
        if args.action == "run":
            return await _run_now(conn, settings.jobs, settings.database.owner_url, args)
        async with BlobArchive(settings.jobs.azure_connection_string,
                               settings.jobs.azure_container) as store:
            report = await restore_report(conn, store, args.day, table=args.table,
                                          tenant_slug=args.tenant)
        for r in report:
            if r.error:
                print(f"{args.day} {r.tenant}: FAILED, nothing restored: {r.error}",
                      file=sys.stderr)
            else:
                print(f"{args.day} {r.tenant}: {r.restored} rows restored into {args.table}, "
                      f"{r.skipped} already there")
            if r.dead_letters:
                print(f"{args.day} {r.tenant}: {r.dead_letters} rows of this day are dead "
                      "letters of the archive, not restored (fleet archive rejects)",
                      file=sys.stderr)
        return 1 if any(r.error for r in report) else 0
    finally:
        await conn.close()


async def _rejects(conn: Any, args: argparse.Namespace) -> int:
    rows = await conn.fetch(
        "SELECT t.slug, r.day, r.row_key::text AS key, r.column_name, r.reason, r.row_text,"
        " r.rejected_at FROM archive_rejects r JOIN tenants t ON t.id = r.tenant_id"
        " WHERE r.table_name = $1 AND ($2::text IS NULL OR t.slug = $2)"
        " AND ($3::date IS NULL OR r.day >= $3) ORDER BY r.day, t.slug, r.id",
        args.table, args.tenant, args.since)
    for r in rows:
        print(f"{r['day']}  {r['slug']:<20} {r['column_name']}: {r['reason']}  key {r['key']}")
        if args.rows:
            print(f"    {r['row_text']}")
    print(f"{len(rows)} rows of {args.table} in archive_rejects", file=sys.stderr)
    return 0


async def _status(conn: Any, runs: int) -> int:
    import json

    rows = await conn.fetch(
        "SELECT id, started_at, finished_at, status, error, details FROM job_runs"
        " WHERE job = 'retention' ORDER BY started_at DESC LIMIT $1", runs)
    if not rows:
        print("no retention run yet", file=sys.stderr)
        return 1
    for r in rows:
        details = json.loads(r["details"]) if r["details"] else {}
        took = (f"{(r['finished_at'] - r['started_at']).total_seconds():.0f} s"
                if r["finished_at"] else "running")
        print(f"#{r['id']} {r['started_at']:%Y-%m-%d %H:%M:%S} {r['status']:<9} {took:>8}  "
              f"days archived {details.get('days_archived', 0)}, chunks dropped "
              f"{details.get('chunks_dropped', 0)}")
        if r["error"]:
            print(f"    error: {r['error']}")
        for failure in details.get("failures", [])[1:]:
            print(f"    also: {failure}")
        for line in details.get("dead_letters", []):
            print(f"    dead letters: {line}")
    dead = await conn.fetchrow("SELECT count(*) AS n, max(rejected_at) AS last"
                               " FROM archive_rejects")
    if dead["n"]:
        print(f"archive_rejects holds {dead['n']} rows the archive could not encode, the last "
              f"from {dead['last']:%Y-%m-%d %H:%M:%S} (fleet archive rejects)")
    return 0 if rows[0]["status"] == "succeeded" else 1


async def _run_now(conn: Any, jobs: Any, owner_url: str, args: argparse.Namespace) -> int:
    from api.jobs.archive import BlobArchive
    from api.jobs.retention import RetentionReport, archive_and_drop, pending_chunks

    if args.dry_run:
        for table in jobs.archive_tables:
            for chunk, days in await pending_chunks(conn, table, hot_days=jobs.hot_days,
                                                    day=args.day):
                print(f"{table} {chunk}: would archive {len(days)} tenant-days: "
                      + ", ".join(f"{slug} {d}" for slug, d in days))
        return 0
    import json

    from api.jobs.runner import JobRunner, ScheduledJob, runner_identity
    from api.jobs.schedule import parse_schedule

    class OnDemand:
        """The retention job's archive part, now, recorded in job_runs like a scheduled run
        (so `fleet archive status` and the job's last success see it)."""

        name = "retention"

        async def run(self) -> dict[str, Any]:
            report = RetentionReport()
            async with BlobArchive(jobs.azure_connection_string,
                                   jobs.azure_container) as store:
                for table in jobs.archive_tables:
                    await archive_and_drop(
                        conn, store, table, hot_days=jobs.hot_days, report=report,
                        day=args.day, progress=lambda m: print(m, file=sys.stderr, flush=True))
            return report.as_dict()

    runner = JobRunner(owner_url, [], lock_key=0, runner_id=f"cli:{runner_identity()}")
    run_id = await runner.run_job(ScheduledJob(OnDemand(),
                                               parse_schedule(jobs.retention_schedule)))
    row = await conn.fetchrow("SELECT status, error, details FROM job_runs WHERE id = $1",
                              run_id)
    details = json.loads(row["details"]) if row["details"] else {}
    print(f"run #{run_id} {row['status']}: chunks considered "
          f"{details.get('chunks_considered', 0)}, dropped {details.get('chunks_dropped', 0)};"
          f" tenant-days archived {details.get('days_archived', 0)} "
          f"({details.get('rows_archived', 0)} rows, "
          f"{details.get('rows_dead_lettered', 0)} dead-lettered)")
    for line in details.get("dead_letters", []):
        print(f"dead letters: {line}", file=sys.stderr)
    for failure in details.get("failures", []):
        print(f"failed: {failure}", file=sys.stderr)
    if row["error"] and row["status"] == "failed":
        print(f"failed: {row['error']}", file=sys.stderr)
    return 0 if row["status"] == "succeeded" else 1
