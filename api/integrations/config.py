"""Settings of the integrations (a section of the API's settings, ``[integrations]``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from core.errors import SettingsError
from core.settings import env_overrides

SAMSARA_FEED_TYPES_DEFAULT: tuple[tuple[str, ...], ...] = (
    ("gps", "engineStates", "obdOdometerMeters"),
    ("fuelPercents", "obdEngineSeconds"),
)
"""Samsara allows at most 3 stat types per feed request, so the stats come in two feeds."""


SMARTCAR_API_VERSIONS = ("v3", "2.0")


class IntegrationsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Vendor base URLs, secrets and polling cadence. Base URLs point at the mocks in tests."""

    token_key: str = ""
    """Secret from which the Fernet key for vendor tokens is derived (any string >= 16 chars)."""
    samsara_base_url: str = "https://api.samsara.com"
    samsara_feeds: list[list[str]] = msgspec.field(
        default_factory=lambda: [list(f) for f in SAMSARA_FEED_TYPES_DEFAULT])
    """Stat types per feed (at most 3 each)."""
    samsara_caught_up_wait_s: float = 5.0
    """Wait after a page with hasNextPage=false; Samsara asks for at least 5 s."""
    samsara_safety_poll_s: float = 60.0
    """How often safety events are fetched."""
    samsara_safety_lookback_s: float = 3600.0
    """First safety-event fetch of a tenant covers this much history."""
    smartcar_api_version: str = "v3"
    """Smartcar API used for new consents, reads and commands: "v3" (application token +
    ``sc-user-id``, the default) or "2.0" (per-vehicle token pairs). docs/integrations.md
    says why; vehicles connected under the other version keep working (see there)."""
    smartcar_v3_api_url: str = "https://vehicle.api.smartcar.com/v3"
    smartcar_iam_url: str = "https://iam.smartcar.com"
    """v3 application tokens: ``POST {iam}/oauth2/token`` (client-credentials grant)."""
    smartcar_app_token_margin_s: float = 300.0
    """Request a new v3 application token when the cached one expires within this (its
    lifetime is 3600 s; no refresh token exists)."""
    smartcar_api_url: str = "https://api.smartcar.com/v2.0"
    smartcar_auth_url: str = "https://auth.smartcar.com"
    smartcar_connect_url: str = "https://connect.smartcar.com"
    smartcar_client_id: str = ""
    smartcar_client_secret: str = ""
    smartcar_redirect_uri: str = "http://127.0.0.1:8080/api/smartcar/callback"
    smartcar_management_token: str = ""
    """Application management token: the HMAC-SHA256 key of webhook signatures."""
    smartcar_scope: list[str] = msgspec.field(default_factory=lambda: [
        "read_vehicle_info", "read_location", "read_odometer", "read_fuel", "read_battery",
        "control_security"])
    smartcar_test_mode: bool = False
    """Adds mode=test to the Connect URL (Smartcar's simulated vehicles)."""
    smartcar_poll_s: float = 300.0
    """How often location, odometer, fuel and battery are pulled per vehicle."""
    smartcar_refresh_margin_s: float = 600.0
    """Refresh an access token when it expires within this many seconds."""
    smartcar_location_cache_s: int = 300
    """Redis cache lifetime of the last Smartcar location (seed: 5 minutes)."""
    smartcar_state_ttl_s: int = 600
    """How long an OAuth state from /auth-url stays valid (Smartcar codes expire after 10 min)."""
    http_timeout_s: float = 30.0
    http_max_retries: int = 6
    """Retries of one request on 429, 5xx or network errors before giving up."""
    http_backoff_base_s: float = 0.5
    http_backoff_max_s: float = 60.0
    mqtt_client_id_prefix: str = "fleet-puller"


class _Root(msgspec.Struct, kw_only=True):
    integrations: IntegrationsSettings = msgspec.field(default_factory=IntegrationsSettings)


def integrations_settings(section: Mapping[str, Any],
                          environ: Mapping[str, str] | None = None) -> IntegrationsSettings:
    """Validate the API's free-form ``[integrations]`` table, with FLEET_INTEGRATIONS_* on top.

    The API settings keep this section as a plain table, which the shared loader cannot
    resolve environment variables into; the same resolver is applied here instead.
    """
    env = env_overrides(_Root, os.environ if environ is None else environ)
    data = {**section, **env.get("integrations", {})}
    try:
        settings = msgspec.convert(data, IntegrationsSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid [integrations] settings: {exc}") from exc
    if settings.smartcar_api_version not in SMARTCAR_API_VERSIONS:
        raise SettingsError(f"invalid [integrations] settings: smartcar_api_version must be"
                            f" one of {', '.join(SMARTCAR_API_VERSIONS)}, not"
                            f" {settings.smartcar_api_version!r}")
    return settings
