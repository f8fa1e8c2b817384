"""The local services' logins: their passwords, kept in ``.fleet/credentials.json`` (mode
600), and the connection URLs built from them, which ``.fleet/local.toml`` hands to every
``fleet`` process."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from core.settings import LOCAL_SERVICES_FILE, to_toml_lines
from deploy.services.settings import ServicesSettings

ADMIN_ROLE = "fleet_admin"
OWNER_ROLE = "fleet_owner"
APP_ROLE = "fleet_app"
INGEST_ROLE = "fleet_ingest"
MQTT_SERVICE_USER = "fleet-service"
MQTT_ADMIN_USER = "fleet-admin"
"""Sends the broker's dynamic-security commands (device logins); nothing else."""
DATABASE = "fleet"


class Credentials:
    """Passwords of the local services and the URLs that carry them."""

    def __init__(self, settings: ServicesSettings, project_state: Path) -> None:
        self.settings = settings
        self.project_state = project_state
        self.credentials_file = project_state / "credentials.json"

    def credentials(self) -> dict[str, str]:
        """Passwords of the local services, generated once and kept private; a login added
        by a later version of the project gets its password on the next call."""
        names = (ADMIN_ROLE, OWNER_ROLE, APP_ROLE, INGEST_ROLE, MQTT_SERVICE_USER,
                 MQTT_ADMIN_USER, "redis")
        data: dict[str, str] = {}
        if self.credentials_file.is_file():
            data = json.loads(self.credentials_file.read_text())
            if all(name in data for name in names):
                return data
        self.project_state.mkdir(parents=True, exist_ok=True)
        for name in names:
            data.setdefault(name, secrets.token_urlsafe(18))
        # Written aside and renamed: a reader never sees half a file.
        tmp = self.credentials_file.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        tmp.replace(self.credentials_file)
        return data

    def pg_url(self, role: str, database: str = DATABASE) -> str:
        """Connection URL of one PostgreSQL role."""
        pw = quote(self.credentials()[role], safe="")
        host, port = self.settings.host, self.settings.postgres_port
        return f"postgresql://{role}:{pw}@{host}:{port}/{database}"

    def mqtt_url(self, user: str = MQTT_SERVICE_USER) -> str:
        """Connection URL of an MQTT service login (by default the service account)."""
        pw = quote(self.credentials()[user], safe="")
        return f"mqtt://{user}:{pw}@{self.settings.host}:{self.settings.mqtt_port}"

    def redis_url(self) -> str:
        """Connection URL of Redis."""
        pw = quote(self.credentials()["redis"], safe="")
        return f"redis://:{pw}@{self.settings.host}:{self.settings.redis_port}/0"

    def env(self) -> dict[str, str]:
        """The settings other processes need, as `FLEET_*` variables."""
        return {
            "FLEET_DATABASE_URL": self.pg_url(APP_ROLE),
            "FLEET_DATABASE_OWNER_URL": self.pg_url(OWNER_ROLE),
            "FLEET_DATABASE_INGEST_URL": self.pg_url(INGEST_ROLE),
            "FLEET_DATABASE_ADMIN_URL": self.pg_url(ADMIN_ROLE),
            "FLEET_MQTT_URL": self.mqtt_url(),
            "FLEET_API_MQTT_ADMIN_URL": self.mqtt_url(MQTT_ADMIN_USER),
            "FLEET_REDIS_URL": self.redis_url(),
        }

    def write_local_settings(self) -> Path:
        """Write `.fleet/local.toml`, read by every `fleet` process started in this checkout."""
        lines = ["# Written by `fleet services up`: connection settings of the local services.", ""]
        lines += to_toml_lines("database", {
            "url": self.pg_url(APP_ROLE),
            "owner_url": self.pg_url(OWNER_ROLE),
            "ingest_url": self.pg_url(INGEST_ROLE),
            "admin_url": self.pg_url(ADMIN_ROLE),
        })
        lines += ["", *to_toml_lines("mqtt", {"url": self.mqtt_url()})]
        lines += ["", *to_toml_lines("redis", {"url": self.redis_url()})]
        lines += ["", *to_toml_lines("api", {"mqtt_admin_url": self.mqtt_url(MQTT_ADMIN_USER)})]
        path = self.project_state / LOCAL_SERVICES_FILE.name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path
