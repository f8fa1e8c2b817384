"""asyncpg pool and the tenant transaction (DESIGN.md decision 4: tenancy enforced twice).

Every request that touches tenant data runs inside `tenant_transaction(request)`: a transaction
on the application role whose first statement is ``set_config('app.tenant_id', ..., true)``,
so PostgreSQL row-level security limits it to the JWT's tenant; the queries themselves also
filter by ``tenant_id`` explicitly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
from aiohttp import web

from api.auth import USER_KEY
from api.errors import Unavailable

POOL_KEY: web.AppKey[asyncpg.Pool] = web.AppKey("db_pool", asyncpg.Pool)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects; uuid stays uuid.UUID.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


def _where(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without the credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


async def create_pool(url: str, *, min_size: int, max_size: int,
                      timeout_s: float = 10.0) -> asyncpg.Pool:
    """Open the connection pool of the application role."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         init=_init_connection, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"database unavailable at {_where(url)}: {exc}") from exc
    if pool is None:
        raise Unavailable("database pool could not be created")
    return pool


@asynccontextmanager
async def tenant_connection(pool: asyncpg.Pool, tenant_id: UUID | str
                            ) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction bound to one tenant (RLS)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        yield conn


@asynccontextmanager
async def tenant_transaction(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """The request's tenant transaction; the tenant comes from the authenticated user."""
    user = request.get(USER_KEY)
    if user is None:
        raise RuntimeError("tenant_transaction needs an authenticated request")
    try:
        async with tenant_connection(request.app[POOL_KEY], user.tenant_id) as conn:
            yield conn
    except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.CannotConnectNowError) as exc:
        raise Unavailable(f"database unavailable: {exc}") from exc


def row_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """An asyncpg record as a plain dict (None stays None)."""
    return None if row is None else dict(row.items())
