"""`fleet archive list|restore`: what the cold archive holds, and bringing a day back.

Imports only the standard library at module top; the archive code loads inside `run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the process exit code."""
    import asyncio

    from api.jobs.errors import JobError
    from deploy.errors import SettingsError

    try:
        return asyncio.run(_run(args))
    except (JobError, SettingsError) as exc:
        print(f"fleet archive: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    import asyncpg

    from api.jobs.archive import BlobArchive, restore_day
    from api.jobs.config import JobsProcessSettings
    from deploy.settings import load_settings

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
        async with BlobArchive(settings.jobs.azure_connection_string,
                               settings.jobs.azure_container) as store:
            restored = await restore_day(conn, store, args.day, table=args.table,
                                         tenant_slug=args.tenant)
        for slug, n in restored.items():
            print(f"{args.day} {slug}: {n} rows restored into {args.table}")
        return 0
    finally:
        await conn.close()
