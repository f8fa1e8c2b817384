"""Audit trail (AU-2/AU-3): one row per mutating request and per authentication event.

Rows go to `audit_logs`; the database trigger chains them (id, prev_hash, hash over
`audit_canonical(row)`), so this module never computes hashes. The application role may
INSERT and SELECT audit rows but never UPDATE or DELETE them (0001_core.sql grants).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from api.auth import USER_KEY, AuthUser
from api.db import POOL_KEY, tenant_connection
from api.params import storable, storable_tree

log = logging.getLogger("api.audit")

_INSERT = """
INSERT INTO audit_logs (tenant_id, user_id, action, resource_type, resource_id, details,
                        ip_address, user_agent, outcome, error_message)
VALUES ($1, $2, $3, $4, $5, $6, $7::inet, $8, $9, $10)
"""


def client_ip(request: web.Request) -> str | None:
    """The peer address (the API is expected to sit behind a trusted proxy only if configured)."""
    return request.remote


async def record(  # noqa: PLR0917 - positional order is the package contract
    target: web.Request | asyncpg.Connection,
    action: str,
    resource_type: str,
    resource_id: str | UUID | None,
    outcome: str,
    details: dict[str, Any] | None = None,
    *,
    tenant_id: UUID | None = None,
    user_id: UUID | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    error_message: str | None = None,
) -> None:
    """Write one audit row.

    With a request, the tenant and user come from ``request[USER_KEY]`` unless given, the IP
    and user agent from the request, and the row is written in its own transaction (so it
    survives a rolled-back request). With a connection, the row joins that transaction.
    """
    if outcome not in ("success", "failure"):
        raise ValueError(f"outcome must be success or failure, not {outcome!r}")
    if isinstance(target, web.Request):
        user: AuthUser | None = target.get(USER_KEY)
        if user is not None:
            tenant_id = tenant_id or user.tenant_id
            user_id = user_id or user.id
        ip = ip or client_ip(target)
        user_agent = user_agent or target.headers.get("User-Agent")
    # What a client sent (path, e-mail, User-Agent, which aiohttp decodes with
    # surrogateescape) is recorded as U+FFFD where PostgreSQL cannot store it, so a hostile
    # request still leaves its audit row.
    args = (tenant_id, user_id, action, resource_type,
            None if resource_id is None else storable(str(resource_id)),
            storable_tree(details or {}), ip,
            None if user_agent is None else storable(user_agent), outcome,
            None if error_message is None else storable(error_message))
    if isinstance(target, web.Request):
        pool = target.app[POOL_KEY]
        if tenant_id is None:
            # Anonymous events (unknown e-mail at login) are allowed by policy
            # audit_anonymous_insert with tenant_id NULL.
            async with pool.acquire() as conn:
                await conn.execute(_INSERT, *args)
        else:
            async with tenant_connection(pool, tenant_id) as conn:
                await conn.execute(_INSERT, *args)
    else:
        await target.execute(_INSERT, *args)
