"""The per-app state the integration endpoints share (`INTEGRATIONS_KEY`), set up by
`api.integrations.routes.setup` and read by each vendor's routes."""

from __future__ import annotations

from aiohttp import web

from api.errors import ApiError
from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.http import vendor_http
from api.integrations.publisher import MqttPublisher
from api.integrations.smartcar.client import SmartcarAppToken, SmartcarClient, SmartcarV3Client
from api.integrations.smartcar.consent import SmartcarTokens, SmartcarV3Connections


class Integrations:
    """Per-app state: settings, the vendor HTTP client, both Smartcar versions, a publisher.

    `version` (``integrations.smartcar_api_version``) decides how new consents are taken.
    Commands and reads use the version a vehicle was connected with: a v3 connection when
    one exists, otherwise a 2.0 token pair, so vehicles connected before a switch to v3
    keep working until their owners reconnect.
    """

    def __init__(self, settings: IntegrationsSettings) -> None:
        self.settings = settings
        self.http = vendor_http(settings, "smartcar")
        self.cipher = TokenCipher(settings.token_key) if settings.token_key else None
        self.client = SmartcarClient(self.http, settings)
        self.tokens = (SmartcarTokens(self.client, self.cipher,
                                      refresh_margin_s=settings.smartcar_refresh_margin_s)
                       if self.cipher else None)
        self.version = settings.smartcar_api_version
        self.app_token = SmartcarAppToken(self.http, settings)
        self.v3 = SmartcarV3Client(self.http, settings, self.app_token)
        self.v3_connections = SmartcarV3Connections()
        self.publisher: MqttPublisher | None = None

    def need_tokens(self) -> SmartcarTokens:
        """The token store; 503 when no token key is configured."""
        if self.tokens is None:
            raise ApiError("integrations.token_key is not configured", status=503,
                           code="unavailable")
        return self.tokens


INTEGRATIONS_KEY: web.AppKey[Integrations] = web.AppKey("integrations", Integrations)
