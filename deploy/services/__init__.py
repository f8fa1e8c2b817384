"""The project's own local services: PostgreSQL (TimescaleDB + PostGIS), Mosquitto and Redis.

They live under ``.fleet/`` on project ports, so nothing depends on whatever else runs on the
machine (DESIGN.md decision 6). As root, each daemon runs as an unprivileged system user
(PostgreSQL refuses root). Passwords are generated on the first ``up`` and kept in
``.fleet/credentials.json`` (mode 600); ``.fleet/local.toml`` holds the connection URLs that
every ``fleet`` process reads by default.

One module a daemon (`postgres`, `mosquitto`, `redis`), what they share in `process`, where
they run in `settings`, the logins and URLs in `credentials`, the database's roles in
`provisioning` and the login checks in `pings`; `LocalServices` drives all three.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.settings import load_settings
from deploy.services.credentials import (
    ADMIN_ROLE,
    APP_ROLE,
    DATABASE,
    INGEST_ROLE,
    MQTT_ADMIN_USER,
    MQTT_SERVICE_USER,
    OWNER_ROLE,
    Credentials,
)
from deploy.services.mosquitto import LocalMosquitto
from deploy.services.pings import mqtt_ping, redis_ping
from deploy.services.postgres import LocalPostgres
from deploy.services.process import DaemonControl, ServiceStatus
from deploy.services.provisioning import (
    database_info,
    drop_database,
    provision_cluster,
    provision_database,
)
from deploy.services.redis import LocalRedis
from deploy.services.settings import ServicesProcessSettings, ServicesSettings, resolve_state_dir

__all__ = [
    "ADMIN_ROLE",
    "APP_ROLE",
    "DATABASE",
    "INGEST_ROLE",
    "MQTT_ADMIN_USER",
    "MQTT_SERVICE_USER",
    "OWNER_ROLE",
    "LocalServices",
    "ServiceStatus",
    "ServicesProcessSettings",
    "ServicesSettings",
    "database_info",
    "drop_database",
    "local_services",
    "mqtt_ping",
    "provision_cluster",
    "provision_database",
    "redis_ping",
    "resolve_state_dir",
]


def local_services(config_file: str | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> LocalServices:
    """The project's local services as `fleet services` sees them (TOML + FLEET_SERVICES_*)."""
    return LocalServices(load_settings(ServicesProcessSettings, config_file).services, log=log)


class LocalServices:
    """Starts, stops and checks the three local services; every operation is idempotent."""

    def __init__(self, settings: ServicesSettings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self.project_state = Path(settings.state_dir).absolute()
        self.state = resolve_state_dir(settings)
        # One control for the three, so `up` holds the lock that `mosquitto_up` takes again.
        self.control = DaemonControl(settings, log, self.state, self.project_state)
        self.logins = Credentials(settings, self.project_state)
        self.postgres = LocalPostgres(settings, self.control, self.logins)
        self.mosquitto = LocalMosquitto(settings, self.control, self.logins)
        self.redis = LocalRedis(settings, self.control, self.logins)
        # Each daemon's operations and files, under the names callers have always used.
        pg, mq, rd = self.postgres, self.mosquitto, self.redis
        self.postgres_up, self.mosquitto_up, self.redis_up = pg.up, mq.up, rd.up
        self.postgres_down, self.mosquitto_down, self.redis_down = pg.down, mq.down, rd.down
        self.postgres_status, self.mosquitto_status, self.redis_status = (
            pg.status, mq.status, rd.status)
        self.add_device_login = mq.add_device_login
        self.pg_data, self.pg_run, self.pg_log = pg.pg_data, pg.pg_run, pg.log_file
        self.mq_dir, self.mq_pid, self.mq_log = mq.folder, mq.pid_file, mq.log_file
        self.mq_passwd, self.mq_dynsec = mq.mq_passwd, mq.mq_dynsec
        self.redis_dir, self.redis_pid, self.redis_log = rd.folder, rd.pid_file, rd.log_file
        # The logins and the URLs built from them.
        self.credentials_file = self.logins.credentials_file
        self.credentials = self.logins.credentials
        self.pg_url = self.logins.pg_url
        self.mqtt_url = self.logins.mqtt_url
        self.redis_url = self.logins.redis_url
        self.env = self.logins.env
        self.write_local_settings = self.logins.write_local_settings

    def up(self) -> None:
        """Start all three and write the local settings file."""
        with self.control.lock():
            self._up_locked()

    def _up_locked(self) -> None:
        if self.state != self.project_state:
            self.log(f"services: state kept in {self.state} (the checkout is private to root)")
        self.postgres_up()
        self.mosquitto_up()
        self.redis_up()
        self.write_local_settings()

    def down(self) -> None:
        """Stop all three; data stays for the next `up`."""
        with self.control.lock():
            self._down_locked()

    def _down_locked(self) -> None:
        self.redis_down()
        self.mosquitto_down()
        self.postgres_down()

    def status(self) -> list[ServiceStatus]:
        """One status line per service."""
        return [self.postgres_status(), self.mosquitto_status(), self.redis_status()]
