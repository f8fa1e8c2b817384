"""The project's Mosquitto: its configuration, the dynamic-security plugin's logins and
roles (the project's own and every device's), the project's broker plugin, and device logins
added on the running broker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from api.broker_logins import BrokerAdmin, dynsec_config, hash_verifies, mosquitto_hash
from deploy.errors import ServiceError
from deploy.services.credentials import MQTT_ADMIN_USER, MQTT_SERVICE_USER
from deploy.services.pings import mqtt_ping
from deploy.services.process import LocalDaemon, ServiceStatus
from deploy.services.settings import _is_root


class LocalMosquitto(LocalDaemon):
    """Starts, stops and checks the project's broker; every operation is idempotent. Stopping
    keeps queued QoS 1 messages in its persistence file."""

    name = "mosquitto"

    @property
    def mq_passwd(self) -> Path:
        """The password file of versions before the dynamic-security plugin (imported once)."""
        return self.folder / "passwd"

    @property
    def mq_dynsec(self) -> Path:
        return self.folder / "dynamic-security.json"

    def _mosquitto_conf(self) -> str:
        s = self.settings
        lines = [
            "# Written by `fleet services up`.",
            "per_listener_settings false",
            f"listener {s.mqtt_port} {s.host}",
            "protocol mqtt",
            "allow_anonymous false",
            # Logins, client ids and ACLs: api.broker_logins (docs/protocol.md, "Who may do
            # what"). The plugin checks subscriptions at SUBACK and binds client ids.
            *self._fleet_plugin(),
            f"plugin {self._dynsec_plugin()}",
            f"plugin_opt_config_file {self.mq_dynsec}",
            "persistence true",
            f"persistence_location {self.folder / 'data'}/",
            "autosave_interval 10",
            # Measured: the defaults throttle a Python consumer ~16x (DESIGN.md).
            "set_tcp_nodelay true",
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            "message_size_limit 1048576",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # Each connection with its login and client id, and each refused one with its
            # address: the trail of a takeover attempt.
            "connection_messages true",
            f"pid_file {self.pid_file}",
        ]
        if _is_root():
            lines.append(f"user {s.mosquitto_os_user}")
        return "\n".join(lines) + "\n"

    def _fleet_plugin(self) -> list[str]:
        # Before the dynamic-security plugin: it must see a refused client id first to name
        # the login, and a message over its device's rate before anything routes it.
        s = self.settings
        path = s.mosquitto_fleet_plugin
        if path and Path(path).is_file():
            # The build's hash (broker-plugin.sh keeps it beside the file): a new build
            # changes this file, so `up` restarts the broker to load it.
            build = Path(f"{path}.sha256")
            return [f"# plugin build {build.read_text().strip() if build.is_file() else '?'}",
                    f"plugin {path}",
                    f"plugin_opt_device_messages_per_s {s.mosquitto_device_messages_per_s:g}",
                    f"plugin_opt_burst_s {s.mosquitto_device_burst_s:g}",
                    f"plugin_opt_flood_cooldown_s {s.mosquitto_flood_cooldown_s:g}"]
        if path:
            self.log(f"mosquitto: {path} is not built (make setup): a device that connects "
                     "with another client id is refused but logged without its login, and "
                     "device rates are held by the stream only")
        return []

    def _dynsec_plugin(self) -> str:
        if self.settings.mosquitto_dynsec_plugin:
            return self.settings.mosquitto_dynsec_plugin
        found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
        found += [p for p in [Path("/usr/lib/mosquitto_dynamic_security.so")] if p.is_file()]
        if not found:
            raise ServiceError("Mosquitto's dynamic-security plugin is not installed (Debian: "
                               "package mosquitto); run `make setup` or set "
                               "services.mosquitto_dynsec_plugin")
        return str(found[0])

    def _dynsec_wanted(self, current: dict[str, Any] | None) -> dict[str, Any]:
        """The plugin's configuration: the project's admin and service logins and roles as
        this version defines them, every device login kept (its role's rules renewed), and,
        on the first start after the password-file era, that file's device logins imported."""
        creds = self.logins.credentials()
        own = {MQTT_ADMIN_USER: creds[MQTT_ADMIN_USER],
               MQTT_SERVICE_USER: creds[MQTT_SERVICE_USER]}
        kept: dict[str, dict[str, Any]] = {}
        devices: list[tuple[str, str]] = []
        if current is not None:
            for client in current.get("clients", []):
                login = str(client.get("username", ""))
                if login in own:
                    kept[login] = client
                elif all(k in client for k in ("password", "salt", "iterations")):
                    devices.append((login, "$7${iterations}${salt}${password}".format(**client)))
        elif self.mq_passwd.is_file():
            for line in self.mq_passwd.read_text().splitlines():
                login, _, pw_hash = line.partition(":")
                if "/" in login and pw_hash.startswith("$7$"):
                    devices.append((login, pw_hash))

        def hashed(login: str) -> str:
            # Keep a stored hash that still verifies, so an unchanged file stays unchanged.
            client = kept.get(login)
            if client is not None and hash_verifies(client, own[login]):
                return "$7${iterations}${salt}${password}".format(**client)
            return mosquitto_hash(own[login])

        return dynsec_config(admins=[(MQTT_ADMIN_USER, hashed(MQTT_ADMIN_USER))],
                             services=[(MQTT_SERVICE_USER, hashed(MQTT_SERVICE_USER))],
                             devices=devices)

    def _read_dynsec(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.mq_dynsec.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ServiceError(f"{self.mq_dynsec} is not valid JSON ({exc}); restore it or "
                               "remove it (device logins are then lost)") from exc
        return data

    def up(self) -> None:
        """Write the configuration and the plugin's logins, then start the broker when it is
        not running. A running broker whose configuration or project-owned logins and rules
        differ from this version's is restarted: the plugin reads its file only at start."""
        conf = self._mosquitto_conf()
        conf_file = self.folder / "mosquitto.conf"
        with self.control.lock():
            (self.folder / "data").mkdir(parents=True, exist_ok=True)
            current = self._read_dynsec()
            wanted = self._dynsec_wanted(current)
            running = self.control.pid_alive(self.pid_file) is not None
            stale = (not conf_file.is_file() or conf_file.read_text() != conf
                     or current is None or not _same_dynsec(current, wanted))
            if running and stale:
                self.log("mosquitto: configuration changed, restarting")
                self.control.stop_pid(self.pid_file, "mosquitto")
                # Stopping saved the plugin's file: read the logins it now holds.
                wanted = self._dynsec_wanted(self._read_dynsec())
                running = False
            if not running:
                conf_file.write_text(conf)
                fd = os.open(self.mq_dynsec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(wanted, fh, indent=1)
                # Imported (or never there): the password-file era ends here.
                if self.mq_passwd.is_file():
                    self.mq_passwd.replace(self.folder / "passwd.imported")
                (self.folder / "acl").unlink(missing_ok=True)
                self.control.own(self.folder, self.settings.mosquitto_os_user)
                self.control.port_free(self.settings.mqtt_port, "mosquitto", "MQTT_PORT")
                self.pid_file.unlink(missing_ok=True)
                self.log(f"mosquitto: starting on {self.settings.host}:{self.settings.mqtt_port}")
                self.control.run(["mosquitto", "-d", "-c", str(conf_file)], "mosquitto start",
                                 self.log_file)
        self.control.wait_port(self.settings.mqtt_port, "mosquitto", self.log_file)

    def add_device_login(self, login: str, password: str) -> None:
        """Add or replace one device's broker login (``{tenant}/{vehicle}``, also its client
        id) on the running local broker, as the API does when it provisions a device."""
        BrokerAdmin(self.logins.mqtt_url(MQTT_ADMIN_USER),
                    timeout_s=self.settings.start_timeout_s).add_device(login, password)

    def status(self) -> ServiceStatus:
        """Health: a real MQTT login with the service account."""
        url = f"mqtt://{self.settings.host}:{self.settings.mqtt_port}"
        return self._pid_status(url, lambda: mqtt_ping(self.logins.mqtt_url()))


def _acl_set(role: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {(a.get("acltype"), a.get("topic"), bool(a.get("allow")), int(a.get("priority", 0)))
            for a in role.get("acls", [])}


def _same_dynsec(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the plugin's file already says what `wanted` says (the broker rewrites the
    file in its own layout, so compare meaning, not text)."""
    if current.get("defaultACLAccess") != wanted["defaultACLAccess"]:
        return False
    roles = {r.get("rolename"): r for r in current.get("roles", [])}
    for role in wanted["roles"]:
        if role["rolename"] not in roles or _acl_set(roles[role["rolename"]]) != _acl_set(role):
            return False
    clients = {c.get("username"): c for c in current.get("clients", [])}
    for client in wanted["clients"]:
        have = clients.get(client["username"])
        if have is None or any(have.get(k) != client.get(k)
                               for k in ("password", "salt", "iterations", "clientid")):
            return False
        if {r.get("rolename") for r in have.get("roles", [])} != \
                {r["rolename"] for r in client["roles"]}:
            return False
    return True

