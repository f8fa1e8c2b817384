"""Where and how the local services run, and the folder that holds their state."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class ServicesSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the local services run."""

    state_dir: str = ".fleet"
    host: str = "127.0.0.1"
    postgres_port: int = 55432
    mqtt_port: int = 51883
    redis_port: int = 56379
    postgres_bin_dir: str = "/usr/lib/postgresql/15/bin"
    postgres_os_user: str = "postgres"
    """Unprivileged user that runs PostgreSQL when `fleet services` runs as root."""
    mosquitto_os_user: str = "mosquitto"
    mosquitto_dynsec_plugin: str = ""
    """Path of Mosquitto's dynamic-security plugin; empty = where Debian's package puts it."""
    mosquitto_fleet_plugin: str = "/usr/local/lib/fleet-telemetry/mosquitto_fleet.so"
    """The project's broker plugin (deploy/broker/fleet_plugin.c, built by `make setup`): logs
    the login behind a refused device client id, and holds each device login to
    `mosquitto_device_messages_per_s`. Without it both are still refused (the client id) or
    limited (by the stream's `[limits]`), less well."""
    mosquitto_device_messages_per_s: Annotated[float, Meta(ge=0)] = 50.0
    """Messages a second per device login at the broker (PUBACK 0x87 beyond); 0 = no limit.
    Keep it equal to the stream's `limits.device_messages_per_s`."""
    mosquitto_device_burst_s: Annotated[float, Meta(ge=1)] = 10.0
    """Seconds of that rate a quiet device may send at once (the stream's `limits.burst_s`)."""
    mosquitto_flood_cooldown_s: Annotated[float, Meta(ge=0)] = 60.0
    """A device that has more than a whole burst's worth refused within 10 s is
    disconnected and may not log in again for this long, s; 0 = never disconnect."""
    redis_os_user: str = "redis"
    start_timeout_s: float = 60.0
    postgres_shared_buffers_mb: int = 256
    timescaledb_license: Literal["apache", "timescale"] = "timescale"
    """TimescaleDB edition the cluster offers (`timescaledb.license`): `timescale` (compression,
    continuous aggregates, policies: what Timescale's packages and official images run, so the
    default) or `apache` (the Apache-2 subset, as in Debian's own package). `timescale` needs
    the full build that `make setup` makes from the vendored source. A change restarts the
    project's PostgreSQL on the next `up`."""


class ServicesProcessSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of the `fleet services` process."""

    services: ServicesSettings = msgspec.field(default_factory=ServicesSettings)


def _is_root() -> bool:
    return os.geteuid() == 0


def _world_traversable(path: Path) -> bool:
    """True when every ancestor lets other users through (needed by the daemons' users)."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def resolve_state_dir(settings: ServicesSettings) -> Path:
    """The folder holding data, logs and pids.

    As root, the daemons run as other users, who must be able to reach the folder; when the
    checkout sits below a private folder (say /root) the state moves to /var/lib/fleet-telemetry,
    keyed by the checkout's path so two checkouts never share a cluster.
    """
    wanted = Path(settings.state_dir).absolute()
    if not _is_root() or _world_traversable(wanted.parent):
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    return Path("/var/lib/fleet-telemetry") / digest
