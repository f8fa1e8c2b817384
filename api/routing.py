"""The route table: one declaration per endpoint drives registration, role checks and OpenAPI.

Other packages mount their endpoints with `register(app, [ApiRoute(...), ...])` so that the
role matrix and the OpenAPI document (`/api/openapi.json`) cover them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.auth import Handler, public, require_roles
from api.params import UUID_SCHEMA


@dataclass(frozen=True)
class Param:
    """One query or path parameter."""

    name: str
    location: str = "query"
    # An empty value is refused (api.middleware.pipeline), so a free-text parameter is minLength 1.
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string", "minLength": 1})
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class ApiRoute:
    """One endpoint: method, path, handler, allowed roles (None = public) and its docs."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: tuple[str, ...] | None
    params: tuple[Param, ...] = ()
    body: type | None = None
    """msgspec Struct of the JSON body (documented in components/schemas)."""
    response: dict[str, Any] | None = None
    """JSON Schema of the success body (default: an object)."""
    media_type: str = "application/json"
    """Content type of the success body."""
    status: int = 200
    resource: str = ""
    """Audit resource_type of a mutating route."""
    audit: bool = True
    """Mutating routes are audited by the middleware unless they audit themselves."""


ROUTES_KEY: web.AppKey[list[ApiRoute]] = web.AppKey("api_routes", list)
ROUTE_INDEX_KEY: web.AppKey[dict[tuple[str, str], ApiRoute]] = web.AppKey("api_route_index",
                                                                          dict)
"""(method, path template) -> declaration, for the request pipeline's lookups."""
AUDIT_RESOURCE_ID: web.RequestKey[str] = web.RequestKey("audit_resource_id", str)
"""Handlers of create routes set the new row's id here for the audit row."""

ID_PARAM = Param("id", "path", UUID_SCHEMA, required=True)
"""The `{id}` of every item path."""

PAGE_PARAMS = (
    Param("page", schema={"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
    Param("limit", schema={"type": "integer", "minimum": 1, "maximum": 100, "default": 50}),
)


def register(app: web.Application, routes: Sequence[ApiRoute]) -> None:
    """Add routes to the app's router with their role check, and to its OpenAPI table."""
    table = app[ROUTES_KEY]
    index = app[ROUTE_INDEX_KEY]
    for route in routes:
        handler = (public(route.handler) if route.roles is None
                   else require_roles(*route.roles)(route.handler))
        app.router.add_route(route.method, route.path, handler)
        table.append(route)
        index[route.method, route.path] = route


def find_route(request: web.Request) -> ApiRoute | None:
    """The declaration of the route that matched `request`."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return request.app[ROUTE_INDEX_KEY].get((request.method, resource.canonical))
