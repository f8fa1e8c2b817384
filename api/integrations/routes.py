"""HTTP endpoints of the integrations, mounted by `api.app.create_app` through `setup(app)`.

Each vendor package holds its own endpoints in `routes.ROUTES`
(`api.integrations.smartcar.routes`: Connect, lock/unlock, location, webhooks;
`api.integrations.samsara.routes`: the tenant's API token); this module mounts them with the
per-app state they share (`api.integrations.state.Integrations`) and its clean-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api.config import SETTINGS_KEY
from api.integrations.config import integrations_settings
from api.integrations.samsara import routes as samsara_routes
from api.integrations.smartcar import routes as smartcar_routes
from api.integrations.state import INTEGRATIONS_KEY, Integrations
from api.routing import register

ROUTES = [*smartcar_routes.ROUTES, *samsara_routes.ROUTES]


def setup(app: web.Application) -> None:
    """Mount the integration endpoints (called by api.app.create_app)."""
    settings = integrations_settings(app[SETTINGS_KEY].integrations)
    integ = Integrations(settings)
    app[INTEGRATIONS_KEY] = integ
    register(app, ROUTES)

    async def resources(_app: web.Application) -> AsyncIterator[None]:
        await integ.http.__aenter__()
        try:
            yield
        finally:
            if integ.publisher is not None:
                await integ.publisher.__aexit__(None, None, None)
            await integ.http.__aexit__(None, None, None)

    app.cleanup_ctx.append(resources)
