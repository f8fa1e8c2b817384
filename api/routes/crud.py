"""One declaration per tenant resource (`TenantResource`) generates its list, get, create,
patch and delete handlers and their route-table entries (`crud_routes`).

A resource says what differs: its table and columns, the row's JSON, who reads and who
writes (role sets of `api.auth`), the list's order and filters, whether drivers see only
their own rows, the rows it refers to in other tables, the caches its writes make stale,
and hooks for the checks only it has. What every resource does the same way is written
here once: the tenant transaction, count + page, 404 for an id of no row of the tenant
(drivers: of no row of theirs), "no field to update", constraint violations as 400/409,
the audit row's id, cache invalidation after the write.

A handler a resource cannot express this way (the vehicles' cached list, a device's
provisioning, a geofence's GeoJSON body) is written in its module and passed to
`crud_routes`, which still builds its route entry from the declaration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web

from api.auth import AuthUser, Handler, current_user
from api.cache import invalidate
from api.db import tenant_transaction
from api.errors import ApiError, NotFound, ValidationError
from api.params import page_params, path_uuid, read_json
from api.routes.common import db_error, driver_scope, ensure_in_tenant, json_response, page_body
from api.routing import AUDIT_RESOURCE_ID, ID_PARAM, PAGE_PARAMS, ApiRoute, Param

Operation = Literal["list", "create", "get", "update", "delete"]
PatchHook = Callable[[asyncpg.Connection, UUID, UUID, dict[str, Any]], Awaitable[None]]
"""(connection, tenant id, row id, changed values): raise to refuse an update."""
DeleteHook = Callable[[web.Request, asyncpg.Connection, UUID, UUID], Awaitable[None]]
"""(request, connection, tenant id, row id), before the DELETE: lock, refuse, clean up."""


@dataclass(frozen=True)
class Filter:
    """A list filter: an optional query parameter and the condition it adds.

    `read` parses the parameter (None: absent); `condition` is SQL with `{}` where the value
    goes (`{0}` more than once for the same value).
    """

    param: Param
    condition: str
    read: Callable[[web.Request, str], Any]


@dataclass(frozen=True)
class TenantResource:
    """What one tenant resource is; see the module docstring."""

    noun: str
    """Singular, as in "vehicle not found" and the audit row's resource type."""
    path: str
    """The collection's path (`/api/vehicles`); items are at `{path}/{id}`."""
    table: str
    columns: tuple[str, ...]
    """Columns of the answer, in order (selected as `{alias}.{column}`)."""
    order_by: str
    tag: str
    """OpenAPI tag."""
    read_roles: tuple[str, ...]
    write_roles: tuple[str, ...]
    schema: str | None = None
    """components/schemas name of one item (None: a plain object)."""
    page_schema: str = "Page"
    create_body: type[msgspec.Struct] | None = None
    patch_body: type[msgspec.Struct] | None = None
    select: str | None = None
    """Select list when the answer is not plain columns (default: the columns)."""
    to_json: Callable[[asyncpg.Record], dict[str, Any]] | None = None
    """Row to answer (default: the columns as they are)."""
    alias: str = "r"
    driver_column: str | None = None
    """Drivers see only rows whose column holds their driver id (`id` for their own record);
    None: drivers see what their role may read."""
    filters: tuple[Filter, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)
    """Column -> table of a foreign key: the referenced row must be the caller's tenant's
    (foreign keys ignore row-level security)."""
    invalidates: tuple[str, ...] = ()
    """Caches that every write of this resource makes stale."""
    before_update: PatchHook | None = None
    before_delete: DeleteHook | None = None

    @property
    def item_path(self) -> str:
        """The path of one item."""
        return f"{self.path}/{{id}}"

    @property
    def select_list(self) -> str:
        """What every query of the resource selects."""
        return self.select or ", ".join(f"{self.alias}.{c}" for c in self.columns)

    def json(self, row: asyncpg.Record) -> dict[str, Any]:
        """The answer for one row."""
        if self.to_json is not None:
            return self.to_json(row)
        return {c: row[c] for c in self.columns}

    def not_found(self) -> NotFound:
        """The 404 of an id that is not the caller's."""
        return NotFound(f"{self.noun} not found")


# -- the generated handlers ------------------------------------------------------------------

def _scope(res: TenantResource, user: AuthUser) -> tuple[str, list[Any]]:
    """The WHERE clause every query starts with, and its arguments ($1, maybe $2)."""
    where = f"{res.alias}.tenant_id = $1"
    args: list[Any] = [user.tenant_id]
    scope = driver_scope(user) if res.driver_column is not None else None
    if scope is not None:
        args.append(scope)
        where += f" AND {res.alias}.{res.driver_column} = $2"
    return where, args


def list_query(res: TenantResource, request: web.Request
               ) -> tuple[str, list[Any], dict[str, Any]]:
    """The list's WHERE clause and arguments for this request, and the filter values read
    (for a cache key). Raises ValidationError for a bad parameter."""
    where, args = _scope(res, current_user(request))
    values: dict[str, Any] = {}
    for flt in res.filters:
        value = flt.read(request, flt.param.name)
        values[flt.param.name] = value
        if value is None:
            continue
        args.append(value)
        where += " AND " + flt.condition.format(f"${len(args)}")
    return where, args, values


async def list_page(res: TenantResource, request: web.Request, where: str, args: list[Any], *,
                    page: int, limit: int) -> dict[str, Any]:
    """One page of the list under `where` (count, then the rows in `order_by`)."""
    table = f"{res.table} {res.alias}"
    n = len(args)
    async with tenant_transaction(request) as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args)  # noqa: S608 - declared names
        rows = await conn.fetch(
            f"SELECT {res.select_list} FROM {table} WHERE {where} "  # noqa: S608 - declared names
            f"ORDER BY {res.order_by} LIMIT ${n + 1} OFFSET ${n + 2}",
            *args, limit, (page - 1) * limit)
    return page_body([res.json(r) for r in rows], page, limit, int(total))


def _list(res: TenantResource) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        page, limit, _ = page_params(request)
        where, args, _ = list_query(res, request)
        return json_response(await list_page(res, request, where, args, page=page, limit=limit))

    handler.__doc__ = f"GET {res.path}"
    return handler


def _get(res: TenantResource) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        where, args = _scope(res, user)
        args.append(path_uuid(request))
        async with tenant_transaction(request) as conn:
            row = await conn.fetchrow(
                f"SELECT {res.select_list} FROM {res.table} {res.alias} "  # noqa: S608 - declared names
                f"WHERE {where} AND {res.alias}.id = ${len(args)}", *args)
        if row is None:
            raise res.not_found()
        return json_response(res.json(row))

    handler.__doc__ = f"GET {res.item_path}"
    return handler


async def _check_references(res: TenantResource, conn: asyncpg.Connection, tenant_id: UUID,
                            values: Mapping[str, Any]) -> None:
    for column, table in res.references.items():
        if column in values:
            await ensure_in_tenant(conn, table, values[column], tenant_id, column)


async def _after_write(res: TenantResource, request: web.Request, tenant_id: UUID) -> None:
    for cache in res.invalidates:
        await invalidate(request, cache, tenant_id)


def _create(res: TenantResource) -> Handler:
    body_type = res.create_body
    assert body_type is not None  # noqa: S101 - crud_routes checks

    async def handler(request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        values = msgspec.structs.asdict(await read_json(request, body_type))
        cols = ["tenant_id", *values]
        placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        async with tenant_transaction(request) as conn:
            await _check_references(res, conn, user.tenant_id, values)
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO {res.table} AS {res.alias} ({', '.join(cols)}) "  # noqa: S608 - declared names
                    f"VALUES ({placeholders}) RETURNING {res.select_list}",
                    user.tenant_id, *values.values())
            except asyncpg.PostgresError as exc:
                raise db_error(exc) from exc
        if row is None:
            raise ApiError("insert returned no row")
        await _after_write(res, request, user.tenant_id)
        request[AUDIT_RESOURCE_ID] = str(row["id"])
        return json_response(res.json(row), status=201)

    handler.__doc__ = f"POST {res.path}"
    return handler


def _update(res: TenantResource) -> Handler:
    body_type = res.patch_body
    assert body_type is not None  # noqa: S101 - crud_routes checks

    async def handler(request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        row_id = path_uuid(request)
        body = await read_json(request, body_type)
        values = {k: v for k, v in msgspec.structs.asdict(body).items()
                  if v is not msgspec.UNSET}
        if not values:
            raise ValidationError("no field to update", field="body")
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(values, start=3))
        async with tenant_transaction(request) as conn:
            await _check_references(res, conn, user.tenant_id, values)
            if res.before_update is not None:
                await res.before_update(conn, user.tenant_id, row_id, values)
            try:
                row = await conn.fetchrow(
                    f"UPDATE {res.table} AS {res.alias} SET {sets} "  # noqa: S608 - declared names
                    f"WHERE {res.alias}.id = $1 AND {res.alias}.tenant_id = $2 "
                    f"RETURNING {res.select_list}", row_id, user.tenant_id, *values.values())
            except asyncpg.PostgresError as exc:
                raise db_error(exc) from exc
        if row is None:
            raise res.not_found()
        await _after_write(res, request, user.tenant_id)
        return json_response(res.json(row))

    handler.__doc__ = f"PATCH {res.item_path}"
    return handler


def _delete(res: TenantResource) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        row_id = path_uuid(request)
        async with tenant_transaction(request) as conn:
            if res.before_delete is not None:
                await res.before_delete(request, conn, user.tenant_id, row_id)
            deleted = await conn.fetchval(
                f"DELETE FROM {res.table} WHERE id = $1 AND tenant_id = $2 RETURNING id",  # noqa: S608 - declared names
                row_id, user.tenant_id)
        if deleted is None:
            raise res.not_found()
        await _after_write(res, request, user.tenant_id)
        return web.Response(status=204)

    handler.__doc__ = f"DELETE {res.item_path}"
    return handler


_ORDER: tuple[Operation, ...] = ("list", "create", "get", "update", "delete")
_GENERATORS: dict[Operation, Callable[[TenantResource], Handler]] = {
    "list": _list, "create": _create, "get": _get, "update": _update, "delete": _delete}


def crud_routes(res: TenantResource, *, operations: Sequence[Operation] = (
        "list", "create", "get", "update", "delete"),
        handlers: Mapping[Operation, Handler] | None = None,
        overrides: Mapping[Operation, Mapping[str, Any]] | None = None) -> list[ApiRoute]:
    """The route entries of `res`'s operations, in this order: list, create, get, update,
    delete. `handlers` replaces a generated handler; `overrides` changes an entry's fields
    (method, summary, body, response, status, params...)."""
    handlers = handlers or {}
    overrides = overrides or {}
    plural = res.tag
    item = {"$ref": f"#/components/schemas/{res.schema}"} if res.schema else None
    entries: dict[Operation, dict[str, Any]] = {
        "list": {"method": "GET", "path": res.path, "summary": f"List {plural}",
                 "roles": res.read_roles,
                 "params": (*PAGE_PARAMS, *(f.param for f in res.filters)),
                 "response": {"$ref": f"#/components/schemas/{res.page_schema}"}},
        "create": {"method": "POST", "path": res.path, "summary": f"Create a {res.noun}",
                   "roles": res.write_roles, "body": res.create_body, "response": item,
                   "status": 201, "resource": res.noun},
        "get": {"method": "GET", "path": res.item_path, "summary": f"One {res.noun}",
                "roles": res.read_roles, "params": (ID_PARAM,), "response": item},
        "update": {"method": "PATCH", "path": res.item_path,
                   "summary": f"Update a {res.noun}", "roles": res.write_roles,
                   "params": (ID_PARAM,), "body": res.patch_body, "response": item,
                   "resource": res.noun},
        "delete": {"method": "DELETE", "path": res.item_path,
                   "summary": f"Delete a {res.noun}", "roles": res.write_roles,
                   "params": (ID_PARAM,), "status": 204, "resource": res.noun},
    }
    routes = []
    for op in _ORDER:
        if op not in operations:
            continue
        handler = handlers.get(op)
        if handler is None:
            if (op == "create" and res.create_body is None) or (
                    op == "update" and res.patch_body is None):
                raise ValueError(f"{res.noun}: {op} needs a body type or a handler")
            handler = _GENERATORS[op](res)
        entry = {**entries[op], "tag": res.tag}
        entry.update(overrides.get(op, {}))
        routes.append(ApiRoute(handler=handler, **entry))
    return routes
