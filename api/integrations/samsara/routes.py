"""HTTP endpoint of the Samsara integration (mounted with the others by
`api.integrations.routes.setup`).

* ``PUT /api/integrations/samsara/token`` (admin): store the tenant's Samsara API token.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from api.auth import ADMINS, current_user
from api.db import tenant_transaction
from api.errors import ApiError, ValidationError
from api.integrations.state import INTEGRATIONS_KEY
from api.params import read_json
from api.routing import ApiRoute


class SamsaraTokenBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of PUT /api/integrations/samsara/token."""

    token: str


async def samsara_token(request: web.Request) -> web.Response:
    """Store (encrypted) or replace the tenant's Samsara API token."""
    integ = request.app[INTEGRATIONS_KEY]
    if integ.cipher is None:
        raise ApiError("integrations.token_key is not configured", status=503,
                       code="unavailable")
    body = await read_json(request, SamsaraTokenBody)
    if len(body.token) < 8:
        raise ValidationError("token looks too short", field="token")
    user = current_user(request)
    async with tenant_transaction(request) as conn:
        await conn.execute(
            "INSERT INTO integration_credentials (tenant_id, vendor, secret_enc)"
            " VALUES ($1, 'samsara', $2) ON CONFLICT (tenant_id, vendor) DO UPDATE"
            " SET secret_enc = EXCLUDED.secret_enc, is_active = true", user.tenant_id,
            integ.cipher.encrypt(body.token))
    return web.json_response({"vendor": "samsara", "stored": True})


ROUTES = [
    ApiRoute("PUT", "/api/integrations/samsara/token", samsara_token,
             "Store the tenant's Samsara API token (encrypted)", "integrations", ADMINS,
             body=SamsaraTokenBody, resource="integration"),
]
