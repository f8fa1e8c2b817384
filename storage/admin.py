"""Owner-side database administration: analyst logins and rollup refreshes (`fleet db ...`).

Analysts are read-only PostgreSQL logins, each bound to one tenant in `analyst_roles`
(migration 0012). They read the time-series tables through the views of schema `tenant` and
their tenant's reference tables through row-level security; the binding is the owner's to
change, never the analyst's (docs/schema.md, "Tenancy").
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from storage.errors import StorageError

ANALYST_GROUP = "fleet_analyst"
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_RESERVED_PREFIXES = ("fleet_", "pg_")


class AdminError(StorageError):
    """An administrative command was refused (bad name, unknown tenant, ...)."""


@dataclass(frozen=True)
class Analyst:
    """One analyst login and the tenant it reads."""

    role: str
    tenant_slug: str
    created_at: datetime


def _connect(owner_url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(owner_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise AdminError(f"cannot connect to the database: {exc}") from exc


def _check_role_name(role: str) -> None:
    if not _ROLE_NAME.match(role) or role.startswith(_RESERVED_PREFIXES):
        raise AdminError(
            f"analyst role name {role!r}: use 1-63 lower-case letters, digits or _, starting "
            "with a letter, and not fleet_* or pg_* (those are the project's and PostgreSQL's)")


def create_analyst(owner_url: str, role: str, tenant_slug: str,
                   password: str | None = None) -> str:
    """Create a read-only login bound to one tenant; returns its password (generated when
    none is given). A role that exists is refused rather than re-bound."""
    _check_role_name(role)
    password = password or secrets.token_urlsafe(24)
    with _connect(owner_url) as conn:
        tenant = conn.execute("SELECT id FROM tenants WHERE slug = %s",
                              (tenant_slug,)).fetchone()
        if tenant is None:
            raise AdminError(f"no tenant with slug {tenant_slug!r}")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            raise AdminError(f"role {role!r} exists already; drop it first or pick another name")
        ident, db = sql.Identifier(role), sql.Identifier(conn.info.dbname)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                 "NOBYPASSRLS INHERIT PASSWORD {} IN ROLE {}").format(
                ident, sql.Literal(password), sql.Identifier(ANALYST_GROUP)))
            # Names as on both editions without a schema prefix, and read-only by default (the
            # privileges are read-only anyway; this makes a stray write fail early and clearly).
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = tenant, public")
                         .format(ident, db))
            conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on")
                         .format(ident))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, ident))
            conn.execute("INSERT INTO analyst_roles (role_name, tenant_id) VALUES (%s, %s)",
                         (role, tenant[0]))
    return password


def list_analysts(owner_url: str) -> list[Analyst]:
    """Every analyst login of this database, by name."""
    with _connect(owner_url) as conn:
        rows = conn.execute(
            "SELECT a.role_name, t.slug, a.created_at FROM analyst_roles a "
            "JOIN tenants t ON t.id = a.tenant_id ORDER BY a.role_name").fetchall()
    return [Analyst(str(r), str(s), c) for r, s, c in rows]  # type: ignore[arg-type]


def drop_analyst(owner_url: str, role: str) -> None:
    """Remove an analyst login and its binding."""
    _check_role_name(role)
    with _connect(owner_url) as conn:
        bound = conn.execute("SELECT 1 FROM analyst_roles WHERE role_name = %s",
                             (role,)).fetchone()
        if bound is None:
            raise AdminError(f"{role!r} is not an analyst of this database")
        with conn.transaction():
            conn.execute("DELETE FROM analyst_roles WHERE role_name = %s", (role,))
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def refresh_rollups(owner_url: str, start: datetime, end: datetime) -> None:
    """Recompute telemetry_1m and telemetry_1h for the buckets overlapping [start, end), on
    either edition (rows restored from the archive, or written past the policies' window)."""
    if end <= start:
        raise AdminError(f"empty range: {start.isoformat()} .. {end.isoformat()}")
    with _connect(owner_url) as conn:
        try:
            # Autocommit, outside any transaction block: a continuous aggregate's refresh
            # commits as it goes.
            conn.execute("CALL fleet_refresh_rollups(%s, %s)", (start, end))
        except psycopg.Error as exc:
            raise AdminError(f"refresh failed: {exc}") from exc
