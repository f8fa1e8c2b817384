"""The aiohttp application factory: `create_app(settings)`.

Mounts the REST resources (route tables in `api.routes.*`), the live WebSocket, the dispatcher
map (static files, Leaflet from `api/web/node_modules`), operations endpoints, and — when
`api.extensions` is on — `api.integrations.routes.setup(app)` and `api.jobs.wiring.setup(app)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from api.auth import SECTION_KEY, TOKENS_KEY, TokenIssuer
from api.cache import (
    BATCHER_KEY,
    COHERENCE_KEY,
    COPIES_KEY,
    LOOKUPS_KEY,
    REDIS_KEY,
    Coherence,
    LocalCopies,
    LookupBatcher,
    RedisBatcher,
)
from api.config import SETTINGS_KEY, ApiSettings
from api.db import POOL_KEY, create_pool
from api.errors import ApiConfigError, Unavailable
from api.integrations import routes as integration_routes
from api.jobs import wiring
from api.live_socket import HUB_KEY, LiveHub, live_handler
from api.metrics import METRICS_KEY, ApiMetrics, metrics_handler
from api.middleware import ACCESS_LOG_KEY, RATE_LIMIT_KEY, access_log, pipeline
from api.openapi import openapi_handler
from api.routes import acks, devices, drivers, geofences, history, vehicles
from api.routes import auth as auth_routes
from api.routes.common import json_response
from api.routing import ROUTE_INDEX_KEY, ROUTES_KEY, ApiRoute, register

log = logging.getLogger("api")
WEB_DIR = Path(__file__).parent / "web"
CONSOLE_DIR = WEB_DIR / "dist"
"""The console's bundle (Leaflet inside), built by `make setup` (`npm run build` in api/web)."""

RESOURCE_MODULES = (auth_routes, vehicles, drivers, devices, geofences, history, acks)
"""Every REST resource module, in the order their routes are registered."""


async def healthz(_request: web.Request) -> web.Response:
    """GET /healthz: the process is alive."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: database and Redis answer, and the live feed is subscribed."""
    checks: dict[str, str] = {}
    try:
        async with request.app[POOL_KEY].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except (OSError, TimeoutError, Unavailable) as exc:
        checks["database"] = f"error: {exc}"
    except Exception as exc:  # noqa: BLE001 - any driver failure means not ready
        checks["database"] = f"error: {exc}"
    try:
        await request.app[REDIS_KEY].ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"error: {exc}"
    checks["live"] = "ok" if request.app[HUB_KEY].connected.is_set() else "connecting"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                         status=200 if ready else 503)


async def map_config(request: web.Request) -> web.Response:
    """GET /api/map-config: what the dispatcher page needs before login (tiles)."""
    section = request.app[SECTION_KEY]
    return json_response({"tiles_url": section.tiles_url,
                          "tiles_attribution": section.tiles_attribution,
                          "live_flush_ms": section.live_flush_ms})


async def index(_request: web.Request) -> web.FileResponse:
    """GET /: the dispatcher console."""
    return web.FileResponse(WEB_DIR / "index.html",
                            headers={"Cache-Control": "no-cache"})


async def favicon(_request: web.Request) -> web.FileResponse:
    """GET /favicon.svg and /favicon.ico (browsers ask for the latter whatever the page says)."""
    return web.FileResponse(WEB_DIR / "favicon.svg",
                            headers={"Content-Type": "image/svg+xml",
                                     "Cache-Control": "max-age=86400"})


OPS_ROUTES = [
    ApiRoute("GET", "/healthz", healthz, "Liveness", "operations", None),
    ApiRoute("GET", "/readyz", readyz, "Readiness (database, Redis, live feed)", "operations",
             None),
    ApiRoute("GET", "/metrics", metrics_handler, "Prometheus metrics", "operations", None,
             response={"type": "string"}, media_type="text/plain"),
    ApiRoute("GET", "/api/openapi.json", openapi_handler, "This document", "operations", None),
    ApiRoute("GET", "/api/map-config", map_config, "Dispatcher map settings (tiles)", "map",
             None),
    ApiRoute("GET", "/api/live", live_handler,
             "Live WebSocket: subscribe, snapshot, coalesced updates (see docs/api.md)",
             "live", None, status=101),
]


def create_app(settings: ApiSettings) -> web.Application:
    """Build the application; raises ApiConfigError for settings it refuses."""
    section = settings.api
    if section.dev_auth_bypass and section.environment == "production":
        raise ApiConfigError("api.dev_auth_bypass is refused with environment=production")
    if section.dev_auth_bypass and not section.dev_tenant_id:
        raise ApiConfigError("api.dev_auth_bypass needs api.dev_tenant_id")
    if section.mqtt_credentials == "dynsec" and not section.mqtt_admin_url:
        # Everything but provisioning works; that answers 503 naming the setting.
        log.warning('api.mqtt_credentials = "dynsec" without api.mqtt_admin_url: devices '
                    'cannot be provisioned or revoked until it is set (or set "database")')
    app = web.Application(
        middlewares=[pipeline],
        client_max_size=1024 * 1024)
    metrics = ApiMetrics()
    app[SETTINGS_KEY] = settings
    app[SECTION_KEY] = section
    app[TOKENS_KEY] = TokenIssuer(section)
    app[METRICS_KEY] = metrics
    app[RATE_LIMIT_KEY] = section.rate_limit_per_min
    app[ROUTES_KEY] = []
    app[ROUTE_INDEX_KEY] = {}
    app[ACCESS_LOG_KEY] = access_log()
    app[HUB_KEY] = LiveHub(settings.redis.url, section, metrics)
    if section.dev_auth_bypass:
        log.warning("DEVELOPMENT AUTH BYPASS ON: requests without a token act as admin")

    for module in RESOURCE_MODULES:
        register(app, module.ROUTES)
    register(app, OPS_ROUTES)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.svg", favicon)
    app.router.add_get("/favicon.ico", favicon)
    if CONSOLE_DIR.is_dir():
        app.router.add_static("/static/app", CONSOLE_DIR)
    else:
        log.warning("the dispatcher console is not built: run `make node` "
                    "(npm ci and npm run build in api/web)")
    app.cleanup_ctx.append(_resources)
    if section.extensions:
        integration_routes.setup(app)
        wiring.setup(app)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    section = settings.api
    app[POOL_KEY] = await create_pool(settings.database.url, min_size=section.db_pool_min,
                                      max_size=section.db_pool_max,
                                      timeout_s=settings.database.connect_timeout_s)
    app[REDIS_KEY] = aioredis.Redis.from_url(settings.redis.url)
    app[BATCHER_KEY] = RedisBatcher(app[REDIS_KEY])
    app[COPIES_KEY] = LocalCopies()
    app[LOOKUPS_KEY] = LookupBatcher(app[REDIS_KEY])
    app[COHERENCE_KEY] = Coherence(settings.redis.url, section.cache_local_trust_s)
    await app[COHERENCE_KEY].start()
    hub = app[HUB_KEY]
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()
        await app[COHERENCE_KEY].stop()
        await app[REDIS_KEY].aclose()
        await app[POOL_KEY].close()
        app[ACCESS_LOG_KEY].flush()


