"""The OpenAPI 3.1 document, generated from the route table (so it cannot drift from it)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from api.routing import ROUTES_KEY, ApiRoute

_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "field": {"type": "string", "description": "The offending field, for validation errors"},
        "details": {"type": "object"}}}}}

COMMON_SCHEMAS: dict[str, Any] = {
    "Error": ERROR_SCHEMA,
    "Page": {"type": "object", "required": ["items", "page", "limit", "total"], "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "page": {"type": "integer"}, "limit": {"type": "integer", "maximum": 100},
        "total": {"type": "integer"}}},
    "Vehicle": {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}, "code": {"type": "string"},
        "status": {"type": "string"}}, "additionalProperties": True},
    "VehiclePage": {"allOf": [{"$ref": "#/components/schemas/Page"}, {"properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Vehicle"}}}}]},
    "Driver": {"type": "object", "additionalProperties": True},
    "Tokens": {"type": "object", "properties": {
        "access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer", "description": "seconds"},
        "refresh_token": {"type": "string"}, "user": {"type": "object"}}},
    "GeofenceFeature": {"type": "object", "required": ["type", "geometry", "properties"],
                        "properties": {"type": {"const": "Feature"},
                                       # An answer's id is always the row's; a request's
                                       # Feature id is ignored (FenceFeature).
                                       "id": {"type": "string", "format": "uuid"},
                                       "geometry": {"type": "object"},
                                       "properties": {"type": "object"}}},
    "FeatureCollection": {"type": "object", "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array",
                     "items": {"$ref": "#/components/schemas/GeofenceFeature"}}}},
}


def openapi_path(path: str) -> str:
    """aiohttp's ``{id}`` / ``{name:regex}`` to OpenAPI's ``{id}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _operation(route: ApiRoute) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "summary": route.summary, "tags": [route.tag],
        "parameters": [{"name": p.name, "in": p.location, "required": p.required or
                        p.location == "path", "schema": p.schema,
                        **({"description": p.description} if p.description else {})}
                       for p in route.params],
    }
    if route.roles is None:
        op["security"] = []
    else:
        op["x-roles"] = list(route.roles)
        op["description"] = f"Roles: {', '.join(route.roles)}."
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
    ok: dict[str, Any] = {"description": "success"}
    if route.status != 204:
        ok["content"] = {route.media_type: {"schema": route.response or {"type": "object"}}}
    err = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = {str(route.status): ok, "400": {**err, "description": BAD_REQUEST},
                       "default": err}
    if route.body is not None or {p.name for p in route.params} & _RELATED_PARAMS:
        op["responses"]["422"] = {**err, "description": UNPROCESSABLE}
    if route.body is not None:
        op["responses"]["409"] = {**err, "description": CONFLICT}
    if route.roles is not None:
        op["responses"].update({"401": err, "403": err, "429": err})
    return op


BAD_REQUEST = ("The request violates this document (a parameter or body field, named in "
               "`field`). Strings never hold NUL; an empty query value is refused like any "
               "other malformed one.")
UNPROCESSABLE = ("The request conforms to this document but breaks a rule a schema cannot "
                 "state; `field` and `message` say which (from >= to or more than 366 days, "
                 "a bbox that is not a box on Earth, an invalid geometry, a reference to a "
                 "row that does not exist in the tenant, password complexity).")
CONFLICT = ("The request conforms to this document but conflicts with stored data: a value that "
            "must be unique is taken (an e-mail address, a vehicle's device), named in `field`.")
_RELATED_PARAMS = frozenset({"from", "to", "bbox"})


def _body_schemas(bodies: list[type]) -> dict[str, Any]:
    """msgspec's component schemas, plus what a Struct adds as `json_schema_extra`
    (e.g. ``minProperties`` of a PATCH body, which its handler enforces)."""
    _, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}")
    for body in bodies:
        extra = getattr(body, "json_schema_extra", None)
        if extra and body.__name__ in components:
            components[body.__name__].update(extra)
    return components


def build_openapi(routes: list[ApiRoute], *, extra_paths: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The whole document."""
    paths: dict[str, Any] = {}
    bodies = sorted({r.body for r in routes if r.body is not None}, key=lambda t: t.__name__)
    components = _body_schemas(bodies)
    for route in routes:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route)
    for path, item in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleet-telemetry API", "version": "1",
                 "description": "REST and live WebSocket API of fleet-telemetry. Roles follow "
                                "the seed's RBAC matrix (x-roles on each operation)."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**COMMON_SCHEMAS, **components},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
    }


async def openapi_handler(request: web.Request) -> web.Response:
    """GET /api/openapi.json."""
    return web.json_response(build_openapi(request.app[ROUTES_KEY]))
