"""The request pipeline: one middleware, `pipeline`, runs these steps around every handler,
outermost first:

1. observe: one access-log entry (`core.logs.BatchedLog`) and the metrics of the request;
2. errors: every failure becomes the stable JSON error shape (`errors.error_answer`);
3. security: who calls (token), rate limit per client, authentication required;
4. audit: an audit row for every mutating request, success or failure;
5. input: query and path values PostgreSQL cannot store, and empty values of declared
   parameters, are refused (400 naming the parameter) before any handler runs;

then the handler, wrapped by its role check (`auth.require_roles`).

One middleware, not one per step: aiohttp runs each middleware as a coroutine frame of its
own around the handler, resumed at every await of the request, and five such frames cost a
cached GET more than its Redis lookup (docs/api.md, "Where a cached request's time goes").
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
from api.errors import ApiError, TooManyRequests, ValidationError, error_answer
from api.metrics import METRICS_KEY
from api.params import check_text
from api.routing import AUDIT_RESOURCE_ID, find_route
from core.logs import BatchedLog

log = logging.getLogger("api")

RATE_LIMIT_KEY: web.AppKey[int] = web.AppKey("rate_limit_per_min", int)
ACCESS_LOG_KEY: web.AppKey[BatchedLog] = web.AppKey("access_log", BatchedLog)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def access_log() -> BatchedLog:
    """The access log of one app: a `request` line per request on logger `api.access`."""
    return BatchedLog(logging.getLogger("api.access"), "request")


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Steps 1-5 of the module docstring around `handler`."""
    start = time.perf_counter()
    status = 500
    try:
        try:
            on_api = request.path.startswith("/api/")
            headers = await _authenticate(request, on_api)
            if on_api and request.method in MUTATING:
                response = await _audited(request, handler)
            else:
                _check_input(request)
                response = await handler(request)
            if headers and not response.prepared:
                response.headers.update(headers)
        except Exception as exc:  # noqa: BLE001 - translated at this boundary, 500s logged
            response = error_answer(request, exc)
    except web.HTTPException as exc:  # a redirect, raised again by error_answer
        status = exc.status
        raise
    else:
        status = response.status
        return response
    finally:
        _observe(request, status, start)


def _observe(request: web.Request, status: int, start: float) -> None:
    """Count the request and log it (route template, not raw path)."""
    elapsed = time.perf_counter() - start
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    app = request.app
    app[METRICS_KEY].observe_request(request.method, route, status, elapsed)
    user: AuthUser | None = request.get(USER_KEY)
    # UUIDs as they are: the formatter writes them, once per batch and off the request.
    app[ACCESS_LOG_KEY].add({
        "method": request.method, "path": request.path, "route": route, "status": status,
        "duration_ms": round(elapsed * 1000, 2), "remote": request.remote,
        "user_id": user.id if user else None,
        "tenant_id": user.tenant_id if user else None})


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


async def _authenticate(request: web.Request, on_api: bool) -> dict[str, str]:
    """Authenticate (Bearer token), rate-limit /api/ per user or IP, enforce authentication;
    returns the rate limit's headers for the answer."""
    user, problem = identify(request)
    if user is not None:
        request[USER_KEY] = user
    headers: dict[str, str] = {}
    if on_api and request.app[RATE_LIMIT_KEY] > 0:
        client = f"u:{user.id}" if user is not None else f"ip:{request.remote}"
        headers = await _rate_limit(request, client)
    if on_api and user is None and problem is not None \
            and not is_public(request.match_info.handler) \
            and request.match_info.http_exception is None:
        raise problem
    return headers


async def _audited(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Audit a mutating /api/ request with its outcome (routes may audit themselves)."""
    route = find_route(request)
    if route is not None and not route.audit:
        _check_input(request)
        return await handler(request)
    resource = route.resource if route is not None else "unknown"
    action = f"{resource}.{request.method.lower()}"
    resource_id = request.match_info.get("id")
    try:
        _check_input(request)
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


def _check_input(request: web.Request) -> None:
    """Refuse unstorable text in any query or path value, and empty declared parameters.

    One place for every route, including those other packages mount: a handler may pass
    any parameter to PostgreSQL, whose text cannot hold NUL (query strings cannot carry a
    lone surrogate: the URL decoder replaces invalid UTF-8 with U+FFFD). Bodies are
    checked by `api.params.read_json`.
    """
    query = request.query
    for name, value in query.items():
        check_text(name, name)
        check_text(value, name)
    for name, value in request.match_info.items():
        check_text(value, name)
    if not query:
        return
    route = find_route(request)
    if route is not None:
        for param in route.params:
            if param.location != "query":
                continue
            values = query.getall(param.name, [])
            if len(values) > 1:
                raise ValidationError(f"{param.name} is given more than once", field=param.name)
            if values == [""]:
                raise ValidationError(f"{param.name} must not be empty (leave it out for the "
                                      "default)", field=param.name)
