"""Settings of the job runner (``[jobs]`` section of the API settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from api.integrations.config import IntegrationsSettings
from core.errors import SettingsError
from core.settings import DatabaseSettings, MqttSettings, RedisSettings, env_overrides


class JobsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Schedules, retention windows, the archive store and SMTP. Times of day are UTC."""

    enabled: bool = True
    """Run the job runner in this process (every API replica may; one wins the lock)."""
    tick_s: float = 5.0
    """How often the runner checks its lock and due jobs."""
    lock_key: int = 0x666C6A6F6273
    """PostgreSQL advisory lock key shared by every replica of one deployment."""
    maintenance_schedule: str = "daily 06:00"
    """`daily HH:MM` (UTC) or `every N` (seconds)."""
    retention_schedule: str = "daily 03:30"
    rollups_schedule: str = "every 300"
    rollups_window_s: float = 7200.0
    """Rollup refresh recomputes buckets of the last this-many seconds."""
    pullers_enabled: bool = True
    """Run the Samsara and Smartcar pullers on the leader."""
    hot_days: int = 30
    """Telemetry younger than this stays in TimescaleDB; older chunks go to the archive."""
    archive_tables: list[str] = msgspec.field(default_factory=lambda: ["telemetry"])
    ingest_rejects_keep_days: int = 30
    """Dead letters older than this are dropped (not archived)."""
    azure_connection_string: str = ""
    """Azure Storage connection string (Azurite in tests); empty disables the archive."""
    azure_container: str = "fleet-archive"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "fleet-telemetry@localhost"
    smtp_timeout_s: float = 10.0
    maintenance_notify_to: list[str] = msgspec.field(default_factory=list)
    """Extra recipients of work-order mail, besides the tenant's admins and fleet managers."""


class JobsProcessSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings `fleet archive` and a stand-alone job runner read (unknown sections ignored)."""

    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    jobs: JobsSettings = msgspec.field(default_factory=JobsSettings)
    integrations: IntegrationsSettings = msgspec.field(default_factory=IntegrationsSettings)


class _Root(msgspec.Struct, kw_only=True):
    jobs: JobsSettings = msgspec.field(default_factory=JobsSettings)


def jobs_settings(section: Mapping[str, Any],
                  environ: Mapping[str, str] | None = None) -> JobsSettings:
    """Validate the API's free-form ``[jobs]`` table, with FLEET_JOBS_* variables on top."""
    env = env_overrides(_Root, os.environ if environ is None else environ)
    data = {**section, **env.get("jobs", {})}
    try:
        return msgspec.convert(data, JobsSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid [jobs] settings: {exc}") from exc
