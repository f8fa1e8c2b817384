"""Drivers (CRUD from their declaration; a driver reads only their own record) and user
accounts (admin)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import (
    ADMINS,
    MANAGERS,
    PASSWORD_MAX_LEN,
    PASSWORD_MIN_LEN,
    ROLES,
    current_user,
    hash_password,
    password_problems,
)
from api.db import tenant_transaction
from api.errors import ApiError, Conflict, Unprocessable
from api.params import page_params, query_choice, read_json
from api.routes.common import db_error, ensure_in_tenant, json_response, page_body
from api.routes.crud import Filter, TenantResource, crud_routes
from api.routing import AUDIT_RESOURCE_ID, PAGE_PARAMS, ApiRoute, Param
from core.protocol import whole

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType
DriverStatus = Literal["active", "inactive", "suspended"]
DRIVER_STATUSES = ("active", "inactive", "suspended")


class DriverIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new driver record."""

    first_name: str
    last_name: str
    email: str | None = None
    phone: str | None = None
    license_number: str | None = None
    license_state: str | None = None
    license_expiry: date | None = None
    cdl_class: str | None = None
    status: DriverStatus = "active"


class DriverPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial driver update (at least one field)."""

    json_schema_extra: ClassVar[dict[str, Any]] = {"minProperties": 1}

    first_name: str | Unset = UNSET
    last_name: str | Unset = UNSET
    email: str | Unset | None = UNSET
    phone: str | Unset | None = UNSET
    license_number: str | Unset | None = UNSET
    license_state: str | Unset | None = UNSET
    license_expiry: date | Unset | None = UNSET
    cdl_class: str | Unset | None = UNSET
    status: DriverStatus | Unset = UNSET


DRIVERS = TenantResource(
    noun="driver", path="/api/drivers", table="drivers", tag="drivers", schema="Driver",
    columns=("id", "first_name", "last_name", "email", "phone", "license_number",
             "license_state", "license_expiry", "cdl_class", "status", "created_at",
             "updated_at"),
    order_by="r.last_name, r.first_name", read_roles=ROLES, write_roles=MANAGERS,
    create_body=DriverIn, patch_body=DriverPatch, driver_column="id",
    filters=(Filter(Param("status", schema={"enum": list(DRIVER_STATUSES)}), "r.status = {}",
                    lambda request, name: query_choice(request, name, DRIVER_STATUSES)),),
    # Deleting a driver clears vehicles.assigned_driver_id (the foreign key): cached vehicle
    # lists are stale.
    invalidates=("vehicles",))


# -- users -----------------------------------------------------------------------------------

# One '@' with something around it, no spaces or control characters: the same regular
# expression is msgspec's check and the document's `pattern` (whole(): ECMA and Python agree).
Email = Annotated[str, msgspec.Meta(pattern=whole(r"[^@\u0000-\u0020]+@[^@\u0000-\u0020]+"),
                                    max_length=254)]
Password = Annotated[str, msgspec.Meta(min_length=PASSWORD_MIN_LEN,
                                       max_length=PASSWORD_MAX_LEN)]


class UserIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new user account; the password must meet the IA-5 rules (complexity: else 422)."""

    email: Email
    password: Password
    role: Literal["admin", "fleet_manager", "driver", "technician", "viewer"]
    first_name: str | None = None
    last_name: str | None = None
    driver_id: UUID | None = None


USER_COLUMNS = ("id", "email", "role", "first_name", "last_name", "driver_id", "is_active",
                "failed_login_attempts", "account_locked_until", "last_login_at", "created_at")


async def list_users(request: web.Request) -> web.Response:
    """GET /api/users (never the password hash)."""
    user = current_user(request)
    page, limit, offset = page_params(request)
    async with tenant_transaction(request) as conn:
        total = await conn.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1",
                                    user.tenant_id)
        rows = await conn.fetch(
            f"SELECT {', '.join(USER_COLUMNS)} FROM users WHERE tenant_id = $1 "  # noqa: S608
            "ORDER BY email LIMIT $2 OFFSET $3", user.tenant_id, limit, offset)
    items = [{c: r[c] for c in USER_COLUMNS} for r in rows]
    return json_response(page_body(items, page, limit, int(total)))


async def create_user(request: web.Request) -> web.Response:
    """POST /api/users: create an account (argon2id hash; IA-5 rules)."""
    user = current_user(request)
    body = await read_json(request, UserIn)
    if body.role == "driver" and body.driver_id is None:
        raise Unprocessable("a driver account needs driver_id", field="driver_id")
    problems = password_problems(body.password, body.email)
    if problems:
        # Length is in the document (400 from the decoder); complexity is not: 422.
        raise Unprocessable("password does not meet the rules: " + "; ".join(problems),
                            field="password")
    pw_hash = hash_password(body.password, body.email)
    async with tenant_transaction(request) as conn:
        await ensure_in_tenant(conn, "drivers", body.driver_id, user.tenant_id, "driver_id")
        try:
            row = await conn.fetchrow(
                "INSERT INTO users (tenant_id, email, role, password_hash, first_name, last_name,"  # noqa: S608 - constant column list
                " driver_id) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                f"RETURNING {', '.join(USER_COLUMNS)}",
                user.tenant_id, body.email, body.role, pw_hash, body.first_name,
                body.last_name, body.driver_id)
        except asyncpg.UniqueViolationError as exc:
            # Schema-valid, but taken: a conflict with stored data, like every unique key.
            raise Conflict("email is already registered", field="email") from exc
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
    if row is None:
        raise ApiError("insert returned no row")
    request[AUDIT_RESOURCE_ID] = str(row["id"])
    return json_response({c: row[c] for c in USER_COLUMNS}, status=201)


ROUTES = [
    *crud_routes(DRIVERS, overrides={"list": {"summary": "List drivers (drivers: themselves)"}}),
    ApiRoute("GET", "/api/users", list_users, "List user accounts", "users",
             MANAGERS, params=PAGE_PARAMS,
             response={"$ref": "#/components/schemas/Page"}),
    ApiRoute("POST", "/api/users", create_user, "Create a user account (IA-5 password rules)",
             "users", ADMINS, body=UserIn, status=201, resource="user"),
]
