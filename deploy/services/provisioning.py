"""The project's roles and databases in a PostgreSQL cluster: created, re-passworded,
dropped and described through the admin role."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from deploy.errors import ServiceError
from deploy.services.credentials import APP_ROLE, INGEST_ROLE, OWNER_ROLE


@contextlib.contextmanager
def _pg_connect(url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ServiceError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


def provision_cluster(admin_url: str, creds: dict[str, str]) -> None:
    """Create (or re-password) the owner, application and ingest roles.

    The application role is subject to row-level security. The ingest role (the stream) writes
    every tenant's rows and checks tenancy itself (the topic's tenant must own the vehicle). It
    still has BYPASSRLS from when the hypertables had row-level security (PostgreSQL refuses a
    binary COPY into such a table); since migration 0012 its policies on the ordinary tables
    would do, and dropping the attribute is a follow-up. Neither is a superuser.
    """
    attributes = ((OWNER_ROLE, "NOBYPASSRLS CREATEROLE"), (APP_ROLE, "NOBYPASSRLS"),
                  (INGEST_ROLE, "BYPASSRLS"))
    with _pg_connect(admin_url) as conn:
        for role, extra in attributes:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER {} PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(role), sql.SQL(extra), sql.Literal(creds[role])))


def provision_database(admin_url: str, database: str) -> None:
    """Create a database owned by the owner role, with the timescaledb and postgis extensions."""
    with _pg_connect(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(OWNER_ROLE)))
    db_url = _replace_db(admin_url, database)
    with _pg_connect(db_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(database)))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, {}").format(
            sql.Identifier(database), sql.Identifier(APP_ROLE), sql.Identifier(INGEST_ROLE)))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(
            sql.Identifier(OWNER_ROLE)))
        conn.execute(_REVOKE_DEFINER_EXTENSION_FUNCTIONS)


# SECURITY DEFINER functions of the extensions that PUBLIC may call and the application roles
# must not (docs/api.md, "Threat model"): PostGIS's ST_EstimatedExtent reads planner statistics
# of any table past row-level security (every tenant's bounding box), and TimescaleDB's
# cagg_migrate_update_watermark moves a continuous aggregate's watermark. Only the admin role,
# which installed the extensions, may revoke them; by name, so every signature is covered and
# an edition without one of them is fine.
_REVOKE_DEFINER_EXTENSION_FUNCTIONS = """
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.proname IN ('st_estimatedextent', 'cagg_migrate_update_watermark')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC', f);
  END LOOP;
END $$
"""


def drop_database(admin_url: str, database: str) -> None:
    """Drop a database (used by tests for their throwaway databases)."""
    with _pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))


def _replace_db(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def database_info(url: str) -> dict[str, str]:
    """Server version, extension versions and the TimescaleDB licence in force."""
    with _pg_connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        ext = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
        license_row = conn.execute("SHOW timescaledb.license").fetchone()
    return {
        "server_version": str(version[0]) if version else "?",
        "timescaledb": str(ext.get("timescaledb", "missing")),
        "postgis": str(ext.get("postgis", "missing")),
        "license": str(license_row[0]) if license_row else "?",
    }
