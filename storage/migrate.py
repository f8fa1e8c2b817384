"""A small migration runner for the SQL files in storage/migrations.

Files are named ``NNNN_name.sql``; a version may instead come in two editions,
``NNNN_name.apache.sql`` and ``NNNN_name.timescale.sql``, and the runner applies the one that
matches ``SHOW timescaledb.license`` (DESIGN.md decision 5). Each migration runs in its own
transaction and is recorded in ``schema_migrations`` with a checksum, so a second run is a
no-op and an edited, already-applied file is refused. A session advisory lock keeps two
concurrent runners (say, two API replicas starting) from racing.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg

from storage.errors import MigrationError

EDITIONS = ("apache", "timescale")
_NAME_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<edition>apache|timescale))?\.sql$")
_LOCK_KEY = 0x666C656574  # "fleet": any constant shared by every runner
# Migrations that rebuild the continuous aggregates: once they are applied, the runner
# refreshes the aggregates over every stored telemetry row. A refresh cannot run inside the
# migration's transaction, and the policies only reach back 30 days.
_REFRESH_ROLLUPS_AFTER = frozenset({(17, "timescale")})
_CONFLICT_RETRY_S = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    edition: str | None
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class MigrationReport:
    """What one run did."""

    edition: str
    applied: list[Migration] = field(default_factory=list)
    already_applied: int = 0


def discover(directory: Path | None = None) -> list[Migration]:
    """Read every migration file, sorted by version."""
    found: list[Migration] = []
    if directory is None:
        files: Iterable[tuple[str, str]] = (
            (entry.name, entry.read_text(encoding="utf-8"))
            for entry in resources.files("storage").joinpath("migrations").iterdir()
            if entry.name.endswith(".sql")
        )
    else:
        files = ((p.name, p.read_text(encoding="utf-8")) for p in directory.glob("*.sql"))
    for filename, text in files:
        match = _NAME_RE.match(filename)
        if not match:
            raise MigrationError(
                f"migration file {filename!r} is not named NNNN_name[.edition].sql")
        found.append(Migration(int(match["version"]), match["name"], match["edition"], text))
    return sorted(found, key=lambda m: (m.version, m.edition or ""))


def plan(migrations: list[Migration], edition: str) -> list[Migration]:
    """Pick one migration per version: the shared file, or the one for this edition."""
    if edition not in EDITIONS:
        raise MigrationError(f"unknown TimescaleDB licence {edition!r}; expected one of {EDITIONS}")
    by_version: dict[int, list[Migration]] = {}
    for m in migrations:
        by_version.setdefault(m.version, []).append(m)
    chosen: list[Migration] = []
    for version, group in sorted(by_version.items()):
        shared = [m for m in group if m.edition is None]
        specific = [m for m in group if m.edition == edition]
        if shared and len(group) > 1:
            raise MigrationError(f"version {version:04d} has both a shared and an edition file")
        if len(shared) > 1:
            raise MigrationError(f"version {version:04d} has more than one file")
        pick = shared or specific
        if not pick:
            raise MigrationError(f"version {version:04d} has no file for edition {edition!r}")
        chosen.append(pick[0])
    return chosen


def detect_edition(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """The TimescaleDB licence in force: 'apache' or 'timescale'."""
    try:
        row = conn.execute("SHOW timescaledb.license").fetchone()
    except psycopg.Error as exc:
        raise MigrationError(
            "timescaledb is not loaded (shared_preload_libraries) in this database") from exc
    edition = str(row[0]) if row else ""
    return "timescale" if edition == "timescale" else "apache"


def migrate(url: str, log: Callable[[str], None] = print,
            directory: Path | None = None) -> MigrationReport:
    """Apply every pending migration as the schema owner; returns what was done."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, log, directory)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection[tuple[object, ...]], log: Callable[[str], None],
                    directory: Path | None) -> MigrationReport:
    conn.execute("""
        CREATE TABLE IF NOT EXISTS schema_migrations (
          version    integer PRIMARY KEY,
          name       text NOT NULL,
          edition    text,
          checksum   text NOT NULL,
          applied_at timestamptz NOT NULL DEFAULT now()
        )""")
    edition = detect_edition(conn)
    recorded = {
        int(str(v)): (str(c), e)
        for v, c, e in conn.execute("SELECT version, checksum, edition FROM schema_migrations")
    }
    report = MigrationReport(edition=edition)
    for m in plan(discover(directory), edition):
        if m.version in recorded:
            checksum, applied_edition = recorded[m.version]
            if checksum != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} changed after it was applied "
                    f"(edition {applied_edition or 'shared'}); add a new migration instead")
            report.already_applied += 1
            continue
        log(f"migrate: applying {m.version:04d}_{m.name}{'.' + m.edition if m.edition else ''}")
        _apply(conn, m, log)
        report.applied.append(m)
    if any((m.version, m.edition) in _REFRESH_ROLLUPS_AFTER for m in report.applied):
        _refresh_all_rollups(conn, log)
    return report


def _beside_jobs(what: str, fn: Callable[[], object], log: Callable[[str], None]) -> None:
    """Run `fn`, and again after a pause when PostgreSQL aborted it for a conflict with one
    of TimescaleDB's background jobs (policies), which lock the same relations in their own
    order: a deadlock, or "tuple concurrently updated" from two refreshes of one aggregate.
    `fn` must be safe to repeat (one transaction, or an idempotent refresh). Other errors,
    and a conflict on the last attempt, propagate."""
    for delay in (*_CONFLICT_RETRY_S, None):
        try:
            fn()
            return  # noqa: TRY300
        except psycopg.Error as exc:
            conflict = isinstance(exc, psycopg.errors.DeadlockDetected) or \
                "concurrently updated" in str(exc)
            if delay is None or not conflict:
                raise
            log(f"migrate: {what} met a background job ({str(exc).splitlines()[0]}); "
                f"running it again in {delay} s")
            time.sleep(delay)


def _apply(conn: psycopg.Connection[tuple[object, ...]], m: Migration,
           log: Callable[[str], None]) -> None:
    """Run one file in one transaction (rolled back whole, so it can run again)."""
    def run() -> None:
        with conn.transaction():
            conn.execute(m.sql.encode())  # bytes: run the file as one simple query
            conn.execute(
                "INSERT INTO schema_migrations (version, name, edition, checksum) "
                "VALUES (%s, %s, %s, %s)", (m.version, m.name, m.edition, m.checksum))
    try:
        _beside_jobs(f"{m.version:04d}_{m.name}", run, log)
    except psycopg.Error as exc:
        raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {exc}") from exc


def _refresh_all_rollups(conn: psycopg.Connection[tuple[object, ...]],
                         log: Callable[[str], None]) -> None:
    row = conn.execute("SELECT min(time), max(time) FROM telemetry").fetchone()
    if row is None or row[0] is None:
        return
    log(f"migrate: refreshing the rollups from {row[0]} to {row[1]} (rebuilt aggregates)")
    try:
        # The new aggregates' policies start at once and may refresh beside this call.
        _beside_jobs("the rollup refresh", lambda: conn.execute(
            "CALL fleet_refresh_rollups(%s, %s)", (row[0], row[1])), log)
    except psycopg.Error as exc:
        raise MigrationError(
            f"rollup refresh after the migrations failed: {exc}; the schema is migrated, "
            f"run `fleet db refresh-rollups --from {row[0]:%Y-%m-%d} --to <today>` "
            f"again") from exc


def status(url: str, directory: Path | None = None) -> list[tuple[Migration, bool]]:
    """Every planned migration and whether it is applied."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    with conn:
        edition = detect_edition(conn)
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        applied: set[int] = set()
        if exists and exists[0]:
            rows = conn.execute("SELECT version FROM schema_migrations")
            applied = {int(str(r[0])) for r in rows}
    return [(m, m.version in applied) for m in plan(discover(directory), edition)]
