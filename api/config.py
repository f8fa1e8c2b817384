"""Typed settings of the API process (`fleet api`).

The root struct reuses the shared sections of `core.settings` and adds an ``[api]`` section.
Extension point for other packages (vendor integrations, jobs): the ``integrations`` and
``jobs`` tables are free-form TOML tables kept as dicts; each package validates its own
sub-table with ``msgspec.convert(settings.integrations.get("samsara", {}), type=...)`` at
start-up, so adding an integration needs no change here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from core.settings import DatabaseSettings, MqttSettings, RedisSettings, load_settings

OSM_TILES_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = "&copy; OpenStreetMap contributors"


class ApiSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[api]`` section: listener, security and live fan-out settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    environment: Literal["development", "test", "production"] = "development"
    """In production, `dev_auth_bypass` is refused and `jwt_secret` must be set (>= 32 chars)."""
    jwt_secret: str = ""
    """HMAC key for tokens. Empty outside production: a random key per process (tokens then
    do not survive a restart and are not shared between replicas)."""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_ttl_s: int = 900
    """Access token lifetime, seconds."""
    refresh_ttl_s: int = 7 * 86400
    """Refresh token lifetime, seconds (rotated on every use)."""
    rate_limit_per_min: int = 100
    """Requests per client (user, else IP address) per minute; 0 disables."""
    lockout_failures: int = 3
    """AC-7: consecutive failed logins that lock the account."""
    lockout_s: int = 1800
    """AC-7: how long a locked account stays locked, seconds."""
    vehicle_cache_ttl_s: int = 300
    """Vehicle list cache in Redis, seconds (the seed's 5 minutes); 0 disables."""
    dashboard_cache_ttl_s: int = 3600
    """Dashboard metrics cache, seconds (the seed's 1 hour); 0 disables."""
    cache_local_trust_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    """How long a process serves its copy of a cached body without asking Redis again once
    Redis confirmed it current, s. Writes through any replica still reach every process at
    once (a pushed generation); only what no write announces (an entry evicted or flushed
    from Redis) waits up to this long. 0: ask Redis on every request."""
    dev_auth_bypass: bool = False
    """Development only: requests without a token act as an admin of `dev_tenant_id`."""
    dev_tenant_id: str = ""
    tiles_url: str = OSM_TILES_URL
    """Base map tile URL template for the dispatcher map; empty = no-tiles mode (offline)."""
    tiles_attribution: str = OSM_ATTRIBUTION
    live_flush_ms: int = 250
    """Minimum interval between two live frames to one WebSocket client, ms."""
    live_heartbeat_s: float = 15.0
    """JSON heartbeat to an idle WebSocket client, seconds."""
    live_ping_s: float = 30.0
    """WebSocket ping interval, seconds; a client that has not answered within half of it is
    disconnected (a slow reader's pong waits behind the frames it has not read yet)."""
    live_event_buffer: int = 200
    """Events kept per slow client; older ones are dropped and counted."""
    live_auth_timeout_s: float = 10.0
    """A WebSocket client must subscribe within this many seconds."""
    mqtt_credentials: Literal["dynsec", "database"] = "dynsec"
    """Where device logins go: "dynsec" gives each one its client id and rules in Mosquitto's
    dynamic-security plugin, through `mqtt_admin_url` (the project's broker, or any Mosquitto
    2 with the plugin); "database" only stores the hash in `devices`, for a broker that
    authenticates against the database and applies the rules of docs/protocol.md itself."""
    mqtt_admin_url: str = ""
    """mqtt:// or mqtts:// URL of a login allowed to publish to $CONTROL/dynamic-security/#;
    `fleet services up` writes the local broker's. Without it (with "dynsec") the API runs,
    but provisioning and revoking devices answer 503 naming this setting."""
    mqtt_public_url: str = ""
    """Broker URL written into provisioned gateway configs; default: the [mqtt] host/port."""
    db_pool_min: int = 2
    db_pool_max: int = 10
    log_json: bool | None = None
    """JSON lines on stderr (true), plain text (false), or JSON unless stderr is a terminal."""
    extensions: bool = True
    """Mount `api.integrations.routes` and start `api.jobs.runner` when they are installed."""


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Root settings of the API process."""

    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    integrations: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form per-integration tables (``[integrations.samsara]``), validated by their owners."""
    jobs: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form job settings (``[jobs.archive]``), validated by `api.jobs`."""


SETTINGS_KEY: web.AppKey[ApiSettings] = web.AppKey("settings", ApiSettings)


def load_api_settings(config_file: str | None = None) -> ApiSettings:
    """Load and validate the API settings (TOML + FLEET_* environment)."""
    return load_settings(ApiSettings, config_file)
