"""`fleet audit verify`: recompute the audit hash chain and report edited or deleted rows.

Each row's hash is sha256(audit_canonical(row)) and audit_canonical includes prev_hash, so:
an edited row no longer matches its own hash; a deleted row leaves a gap in the ids and a
prev_hash that does not match its predecessor. Removing rows at the end of the chain is only
detectable against a recorded head: pass it with ``--expect-head ID:HASH``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

GENESIS = "0" * 64
_QUERY = """
SELECT id, prev_hash, hash,
       encode(sha256(convert_to(audit_canonical(a), 'UTF8')), 'hex') AS recomputed
  FROM audit_logs a ORDER BY id
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fleet audit`."""
    parser.add_argument("action", choices=["verify"])
    parser.add_argument("--url", help="database URL of a role that sees every tenant's rows "
                                      "(default: database.owner_url)")
    parser.add_argument("--expect-head", metavar="ID:HASH",
                        help="a previously recorded head; detects rows cut off the end")
    parser.add_argument("--max-problems", type=int, default=50)
    parser.set_defaults(func=run)


def verify_rows(rows: Iterable[tuple[int, str, str, str]],
                expect_head: tuple[int, str] | None = None, max_problems: int = 50,
                ) -> tuple[int, list[str], tuple[int, str] | None]:
    """Check (id, prev_hash, hash, recomputed) rows in id order; returns (count, problems, head)."""
    problems: list[str] = []
    prev_id, prev_hash = 0, GENESIS
    count = 0
    head_seen: str | None = None
    for row_id, row_prev, row_hash, recomputed in rows:
        count += 1
        if expect_head is not None and row_id == expect_head[0]:
            head_seen = row_hash
        if row_id != prev_id + 1:
            problems.append(f"rows {prev_id + 1}..{row_id - 1} are missing (deleted)")
        if row_prev != prev_hash:
            problems.append(f"row {row_id}: prev_hash does not match row {prev_id}'s hash "
                            "(a row before it was deleted or edited)")
        if recomputed != row_hash:
            problems.append(f"row {row_id}: content does not match its hash (edited)")
        prev_id, prev_hash = row_id, row_hash
        if len(problems) >= max_problems:
            break
    head = (prev_id, prev_hash) if count else None
    if expect_head is not None and head_seen != expect_head[1]:
        problems.append(f"recorded head {expect_head[0]} is missing or changed "
                        "(rows were removed from the end or rewritten)")
    return count, problems, head


def run(args: argparse.Namespace) -> int:
    """Verify the chain; prints a JSON summary; exit 0 if intact, 1 if not."""
    import json

    import psycopg

    from core.settings import load_settings
    from storage.config import DbCommandSettings

    url = args.url or load_settings(DbCommandSettings, getattr(args, "config", None)
                                    ).database.owner_url
    expect = None
    if args.expect_head:
        head_id, _, head_hash = args.expect_head.partition(":")
        expect = (int(head_id), head_hash)
    # A server-side cursor streams the chain, so memory does not grow with the table.
    with psycopg.connect(url) as conn, conn.cursor(name="audit_verify") as cur:
        cur.itersize = 5000
        cur.execute(_QUERY)
        count, problems, head = verify_rows(
            ((int(r[0]), r[1], r[2], r[3]) for r in cur), expect, args.max_problems)
    print(json.dumps({"rows": count, "ok": not problems, "problems": problems,
                      "head": f"{head[0]}:{head[1]}" if head else None}))
    return 0 if not problems else 1
