"""Helpers shared by the resource modules: JSON answers, DB error mapping, driver scoping."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import AuthUser
from api.errors import Conflict, NotFound, Unprocessable, ValidationError

_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    """A JSON answer; UUIDs and datetimes become strings (RFC 3339)."""
    return web.Response(body=_encoder.encode(data), status=status,
                        content_type="application/json", headers=headers)


def page_body(items: list[dict[str, Any]], page: int, limit: int, total: int) -> dict[str, Any]:
    """The list envelope used by every paginated route."""
    return {"items": items, "page": page, "limit": limit, "total": total}


def db_error(exc: asyncpg.PostgresError) -> Exception:
    """Translate constraint violations into 400/409 answers that name the column."""
    detail = getattr(exc, "detail", None) or str(exc)
    column = getattr(exc, "column_name", None)
    constraint = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(f"already exists: {detail}", field=column or _field_of(constraint))
    if isinstance(exc, asyncpg.CheckViolationError | asyncpg.NotNullViolationError
                  | asyncpg.ForeignKeyViolationError | asyncpg.DataError):
        return ValidationError(f"invalid value: {exc}", field=column or _field_of(constraint))
    unchanged: Exception = exc
    return unchanged


def _field_of(constraint: str) -> str | None:
    # Constraint names follow PostgreSQL's defaults: table_column_check / _key / _fkey.
    for suffix in ("_check", "_key", "_fkey"):
        if constraint.endswith(suffix):
            parts = constraint[: -len(suffix)].split("_", 1)
            return parts[1] if len(parts) == 2 else None
    return None


async def visible_vehicle(conn: asyncpg.Connection, user: AuthUser, vehicle_id: UUID
                          ) -> asyncpg.Record:
    """The vehicle if the caller may see it (tenant, and for drivers the assignment)."""
    row = await conn.fetchrow(
        "SELECT id, code, status, assigned_driver_id FROM vehicles "
        "WHERE id = $1 AND tenant_id = $2 AND ($3::uuid IS NULL OR assigned_driver_id = $3)",
        vehicle_id, user.tenant_id, driver_scope(user))
    if row is None:
        raise NotFound("vehicle not found")
    return row


def driver_scope(user: AuthUser) -> UUID | None:
    """For drivers, the driver id every vehicle query must match; else None.

    A driver account without a driver record sees nothing: a random UUID never matches.
    """
    if not user.is_driver:
        return None
    return user.driver_id or UUID(int=0)


async def ensure_in_tenant(conn: asyncpg.Connection, table: str, row_id: UUID | None,
                           tenant_id: UUID, field: str) -> None:
    """Foreign keys ignore row-level security: check that a referenced row is ours.

    A well-formed id of no row of ours is a 422: the document cannot know which ids exist.
    """
    if row_id is None:
        return
    if table not in ("drivers", "vehicles", "users", "geofences"):
        raise ValueError(table)
    found = await conn.fetchval(
        f"SELECT 1 FROM {table} WHERE id = $1 AND tenant_id = $2",  # noqa: S608 - fixed names
        row_id, tenant_id)
    if found is None:
        raise Unprocessable(f"{field} does not exist", field=field)
