"""Request pipeline, outermost first (the order is this list, in `app.py`):

1. `observe_middleware` — one structured log line and metrics per request;
2. `errors.error_middleware` — every failure becomes the stable JSON error shape;
3. `security_middleware` — who calls (token), rate limit per client, authentication required;
4. `audit_middleware` — an audit row for every mutating request, success or failure;
5. `input_middleware` — query and path values PostgreSQL cannot store, and empty values of
   declared parameters, are refused (400 naming the parameter) before any handler runs;
then the handler, wrapped by its role check (`auth.require_roles`).
"""

from __future__ import annotations

import logging
import time

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from api import audit
from api.auth import USER_KEY, AuthUser, Handler, identify, is_public
from api.cache import BATCHER_KEY
from api.errors import ApiError, TooManyRequests, ValidationError
from api.metrics import METRICS_KEY
from api.params import check_text
from api.routing import AUDIT_RESOURCE_ID, find_route

access_log = logging.getLogger("api.access")
log = logging.getLogger("api")

RATE_LIMIT_KEY: web.AppKey[int] = web.AppKey("rate_limit_per_min", int)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log one JSON line per request and count it (route template, not raw path)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        status = exc.status
        raise
    else:
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - start
        route = _route_label(request)
        request.app[METRICS_KEY].observe_request(request.method, route, status, elapsed)
        user: AuthUser | None = request.get(USER_KEY)
        access_log.info("request", extra={"fields": {
            "method": request.method, "path": request.path, "route": route, "status": status,
            "duration_ms": round(elapsed * 1000, 2), "remote": request.remote,
            "user_id": str(user.id) if user else None,
            "tenant_id": str(user.tenant_id) if user else None}})


# INCR and EXPIRE as one atomic command, so that it can share a batched round trip
# (`RedisBatcher`) with the other requests' commands instead of a MULTI/EXEC of its own.
_RATE_COUNT = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
"""


async def _rate_limit(request: web.Request, client: str) -> dict[str, str]:
    """Fixed one-minute window per client in Redis; raises TooManyRequests with Retry-After."""
    app = request.app
    limit = app[RATE_LIMIT_KEY]
    now = time.time()
    window = int(now // 60)
    key = f"fleet:ratelimit:{client}:{window}"
    try:
        count = await app[BATCHER_KEY].execute("EVAL", _RATE_COUNT, 1, key, 61)
    except RedisError as exc:
        # Availability over strictness: a Redis outage must not take the API down.
        log.warning("rate limiter unavailable: %s", exc)
        return {}
    retry_after = max(1, int((window + 1) * 60 - now + 0.999))
    headers = {"X-RateLimit-Limit": str(limit),
               "X-RateLimit-Remaining": str(max(0, limit - int(count)))}
    if int(count) > limit:
        request.app[METRICS_KEY].rate_limited.inc()
        raise TooManyRequests(f"rate limit of {limit} requests per minute exceeded",
                              headers={**headers, "Retry-After": str(retry_after)},
                              details={"retry_after_s": retry_after})
    return headers


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate (Bearer token), rate-limit /api/ per user or IP, enforce authentication."""
    user, problem = identify(request)
    if user is not None:
        request[USER_KEY] = user
    headers: dict[str, str] = {}
    if request.path.startswith("/api/") and request.app[RATE_LIMIT_KEY] > 0:
        client = f"u:{user.id}" if user is not None else f"ip:{request.remote}"
        headers = await _rate_limit(request, client)
    route_handler = request.match_info.handler
    needs_auth = request.path.startswith("/api/") and not is_public(route_handler) \
        and request.match_info.http_exception is None
    if needs_auth and user is None and problem is not None:
        raise problem
    response = await handler(request)
    if headers and not response.prepared:
        response.headers.update(headers)
    return response


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Audit every mutating /api/ request with its outcome (routes may audit themselves)."""
    if request.method not in MUTATING or not request.path.startswith("/api/"):
        return await handler(request)
    route = find_route(request)
    if route is not None and not route.audit:
        return await handler(request)
    resource = route.resource if route is not None else "unknown"
    action = f"{resource}.{request.method.lower()}"
    resource_id = request.match_info.get("id")
    try:
        response = await handler(request)
    except ApiError as err:
        await _safe_record(request, action, resource, resource_id=resource_id,
                           outcome="failure", error=err.message,
                           details={"path": request.path, "status": err.status,
                                    "code": err.code})
        raise
    outcome = "success" if response.status < 400 else "failure"
    await _safe_record(request, action, resource,
                       resource_id=request.get(AUDIT_RESOURCE_ID, resource_id),
                       outcome=outcome, error=None,
                       details={"path": request.path, "status": response.status})
    return response


async def _safe_record(request: web.Request, action: str, resource: str, *,
                       resource_id: object, outcome: str, details: dict[str, object],
                       error: str | None) -> None:
    try:
        await audit.record(request, action, resource,
                           None if resource_id is None else str(resource_id), outcome, details,
                           error_message=error)
    except (OSError, asyncpg.PostgresError, ApiError):
        log.exception("audit write failed for %s %s", request.method, request.path)


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unstorable text in any query or path value, and empty declared parameters.

    One place for every route, including those other packages mount: a handler may pass
    any parameter to PostgreSQL, whose text cannot hold NUL (query strings cannot carry a
    lone surrogate: the URL decoder replaces invalid UTF-8 with U+FFFD). Bodies are
    checked by `api.params.read_json`.
    """
    for name, value in request.query.items():
        check_text(name, name)
        check_text(value, name)
    for name, value in request.match_info.items():
        check_text(value, name)
    route = find_route(request)
    if route is not None:
        for param in route.params:
            if param.location != "query":
                continue
            values = request.query.getall(param.name, [])
            if len(values) > 1:
                raise ValidationError(f"{param.name} is given more than once", field=param.name)
            if values == [""]:
                raise ValidationError(f"{param.name} must not be empty (leave it out for the "
                                      "default)", field=param.name)
    return await handler(request)
