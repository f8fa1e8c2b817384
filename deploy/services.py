"""The project's own local services: PostgreSQL (TimescaleDB + PostGIS), Mosquitto and Redis.

They live under ``.fleet/`` on project ports, so nothing depends on whatever else runs on the
machine (DESIGN.md decision 6). As root, each daemon runs as an unprivileged system user
(PostgreSQL refuses root). Passwords are generated on the first ``up`` and kept in
``.fleet/credentials.json`` (mode 600); ``.fleet/local.toml`` holds the connection URLs that
every ``fleet`` process reads by default.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from msgspec import Meta

from api.broker_logins import BrokerAdmin, dynsec_config, hash_verifies, mosquitto_hash
from core.settings import LOCAL_SERVICES_FILE, to_toml_lines
from deploy.errors import ServiceError

if TYPE_CHECKING:
    import psycopg

ADMIN_ROLE = "fleet_admin"
OWNER_ROLE = "fleet_owner"
APP_ROLE = "fleet_app"
INGEST_ROLE = "fleet_ingest"
MQTT_SERVICE_USER = "fleet-service"
MQTT_ADMIN_USER = "fleet-admin"
"""Sends the broker's dynamic-security commands (device logins); nothing else."""
DATABASE = "fleet"


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


def local_services(config_file: str | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> LocalServices:
    """The project's local services as `fleet services` sees them (TOML + FLEET_SERVICES_*)."""
    from core.settings import load_settings

    return LocalServices(load_settings(ServicesProcessSettings, config_file).services, log=log)


@dataclass(frozen=True)
class ServiceStatus:
    """Health of one service as `fleet services status` reports it."""

    name: str
    url: str
    running: bool
    healthy: bool
    detail: str


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


class LocalServices:
    """Starts, stops and checks the three local services; every operation is idempotent."""

    def __init__(self, settings: ServicesSettings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.log = log
        self.project_state = Path(settings.state_dir).absolute()
        self.state = resolve_state_dir(settings)
        self.pg_data = self.state / "postgres" / "data"
        self.pg_run = self.state / "postgres" / "run"
        self.pg_log = self.state / "postgres" / "postgres.log"
        self.mq_dir = self.state / "mosquitto"
        self.redis_dir = self.state / "redis"
        self.credentials_file = self.project_state / "credentials.json"
        self._lock_depth = 0

    # ---- credentials and URLs -------------------------------------------------------------

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

    # ---- helpers --------------------------------------------------------------------------

    def _as_user(self, user: str, argv: list[str]) -> list[str]:
        """Prefix a command so that it runs as `user` when we are root."""
        if not _is_root():
            return argv
        return ["runuser", "-u", user, "--", *argv]

    def _own(self, path: Path, user: str) -> None:
        """Give a folder tree to the daemon's user (only as root) and keep it private."""
        path.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return
        try:
            entry = pwd.getpwnam(user)
        except KeyError as exc:
            raise ServiceError(
                f"system user {user!r} does not exist; install its package or set another user"
            ) from exc
        uid, gid = entry.pw_uid, entry.pw_gid
        for root, dirs, files in os.walk(path):
            with contextlib.suppress(FileNotFoundError):  # a running daemon's temp file
                os.chown(root, uid, gid)
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
            # A folder the daemon already owns holds only its own files: no need to descend
            # (and a running PostgreSQL keeps creating and removing files in there).
            dirs[:] = [d for d in dirs if _owner(os.path.join(root, d)) != uid]
        for parent in path.parents:
            if parent == self.state.parent:
                break
            # Parents stay root's but must let the daemon's user through.
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)

    def _run(self, argv: list[str], what: str, log_file: Path | None = None) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        except FileNotFoundError as exc:
            raise ServiceError(f"{what}: {argv[0]} not found; run `make setup`") from exc
        if proc.returncode != 0:
            tail = _tail(log_file) if log_file else ""
            raise ServiceError(
                f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{tail}"
            )
        return proc.stdout

    def _port_free(self, port: int, what: str, setting: str) -> None:
        """Refuse to start when something else already listens on the project port.

        Otherwise the start fails quietly (the daemon exits), and the health checks would
        talk to the stranger and report it as ours.
        """
        with contextlib.suppress(OSError), socket.create_connection(
                (self.settings.host, port), timeout=1):
            raise ServiceError(
                f"{what}: port {self.settings.host}:{port} is already in use by another "
                f"program; stop it or choose another port (FLEET_SERVICES_{setting})")

    def _wait_port(self, port: int, what: str, log_file: Path) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                (self.settings.host, port), timeout=1
            ):
                return
            time.sleep(0.1)
        raise ServiceError(
            f"{what} did not answer on {self.settings.host}:{port} within "
            f"{self.settings.start_timeout_s:.0f} s{_tail(log_file)}"
        )

    # ---- PostgreSQL ----------------------------------------------------------------------

    def _pg_bin(self, name: str) -> str:
        path = Path(self.settings.postgres_bin_dir) / name
        if not path.exists():
            raise ServiceError(f"{path} not found: install postgresql-15 (`make setup`)")
        return str(path)

    def _pg_running(self) -> bool:
        if not (self.pg_data / "PG_VERSION").exists():
            return False
        proc = subprocess.run(
            self._as_user(self.settings.postgres_os_user,
                          [self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "status"]),
            capture_output=True, check=False,
        )
        return proc.returncode == 0

    def _pg_conf(self) -> str:
        s = self.settings
        return "\n".join([
            "# Written by `fleet services up`; edit the project settings, not this file.",
            f"port = {s.postgres_port}",
            f"listen_addresses = '{s.host}'",
            f"unix_socket_directories = '{self.pg_run}'",
            "shared_preload_libraries = 'timescaledb'",
            "timescaledb.telemetry_level = off",
            # Always named: a full build's default is `timescale`, the Apache-only build's `apache`.
            f"timescaledb.license = '{s.timescaledb_license}'",
            "max_connections = 200",
            f"shared_buffers = {s.postgres_shared_buffers_mb}MB",
            "max_locks_per_transaction = 256",
            "password_encryption = 'scram-sha-256'",
            "log_min_messages = warning",
            "",
        ])

    def _check_edition_installed(self) -> None:
        """The timescale licence needs the tsl module, which only the full build has."""
        if self.settings.timescaledb_license != "timescale":
            return
        lib = Path(self.settings.postgres_bin_dir).parent / "lib"
        if lib.is_dir() and not any(lib.glob("timescaledb-tsl-*.so")):
            raise ServiceError(
                f"timescaledb.license = timescale needs TimescaleDB's full build, and {lib} has "
                "no timescaledb-tsl module: run `make setup` with the release source "
                "(FLEET_TIMESCALEDB_SOURCE, see docs/schema.md), or choose the Apache edition "
                "with FLEET_SERVICES_TIMESCALEDB_LICENSE=apache")

    def postgres_up(self) -> None:
        """Create the cluster on first use, start it and provision roles and extensions."""
        self._check_edition_installed()
        user = self.settings.postgres_os_user
        creds = self.credentials()
        if not (self.pg_data / "PG_VERSION").exists():
            self.log(f"postgres: initdb into {self.pg_data}")
            if self.pg_data.exists():
                shutil.rmtree(self.pg_data)
            self._own(self.pg_data.parent, user)
            pwfile = self.pg_data.parent / "initdb.pw"
            pwfile.write_text(creds[ADMIN_ROLE] + "\n")
            self._own(self.pg_data.parent, user)
            try:
                self._run(self._as_user(user, [
                    self._pg_bin("initdb"), "-D", str(self.pg_data), "-U", ADMIN_ROLE,
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
                ]), "initdb")
            finally:
                pwfile.unlink(missing_ok=True)
            conf = self.pg_data / "postgresql.conf"
            conf.write_text(conf.read_text() + "\ninclude_if_exists = 'fleet.conf'\n")
        (self.pg_data / "fleet.conf").write_text(self._pg_conf())
        self.pg_run.mkdir(parents=True, exist_ok=True)
        self._own(self.pg_data.parent, user)
        (self.pg_data).chmod(0o700)
        if self._pg_running():
            # The licence is read at server start only (a reload cannot unload the tsl module).
            in_force = self._pg_license_in_force()
            if in_force != self.settings.timescaledb_license:
                self.log(f"postgres: timescaledb.license is {in_force}, the setting says "
                         f"{self.settings.timescaledb_license}: restarting")
                self.postgres_down()
        if not self._pg_running():
            self._port_free(self.settings.postgres_port, "postgres", "POSTGRES_PORT")
            self.log(f"postgres: starting on {self.settings.host}:{self.settings.postgres_port}")
            self._run(self._as_user(user, [
                self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "-l", str(self.pg_log),
                "-w", "-t", str(int(self.settings.start_timeout_s)), "start",
            ]), "postgres start", self.pg_log)
        self._wait_port(self.settings.postgres_port, "postgres", self.pg_log)
        provision_cluster(self.pg_url(ADMIN_ROLE, "postgres"), creds)
        provision_database(self.pg_url(ADMIN_ROLE, "postgres"), DATABASE)

    def _pg_license_in_force(self) -> str | None:
        """`timescaledb.license` of the running server, as a new session sees it.

        Read in the project database, where the extension's library defines the setting (and
        its build's default); before that database exists, only a licence named in the
        configuration is known (None otherwise).
        """
        with _pg_connect(self.pg_url(ADMIN_ROLE, "postgres")) as conn:
            has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
        with _pg_connect(self.pg_url(ADMIN_ROLE, DATABASE if has_db else "postgres")) as conn:
            row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
        return str(row[0]) if row and row[0] else None

    def postgres_down(self) -> None:
        """Stop the cluster (fast shutdown: open transactions roll back)."""
        if self._pg_running():
            self.log("postgres: stopping")
            self._run(self._as_user(self.settings.postgres_os_user, [
                self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "-m", "fast", "-w", "stop",
            ]), "postgres stop", self.pg_log)

    def postgres_status(self) -> ServiceStatus:
        """Health plus the TimescaleDB and PostGIS versions and the TimescaleDB licence."""
        url = f"postgresql://{self.settings.host}:{self.settings.postgres_port}/{DATABASE}"
        running = self._pg_running()
        if not running:
            return ServiceStatus("postgres", url, False, False, "not running")
        try:
            info = database_info(self.pg_url(ADMIN_ROLE))
        except ServiceError as exc:
            return ServiceStatus("postgres", url, True, False, str(exc))
        detail = (f"PostgreSQL {info['server_version']}, timescaledb {info['timescaledb']} "
                  f"(license {info['license']}), postgis {info['postgis']}")
        return ServiceStatus("postgres", url, True, True, detail)

    # ---- Mosquitto -----------------------------------------------------------------------

    @property
    def mq_pid(self) -> Path:
        return self.mq_dir / "mosquitto.pid"

    @property
    def mq_log(self) -> Path:
        return self.mq_dir / "mosquitto.log"

    @property
    def mq_passwd(self) -> Path:
        """The password file of versions before the dynamic-security plugin (imported once)."""
        return self.mq_dir / "passwd"

    @property
    def mq_dynsec(self) -> Path:
        return self.mq_dir / "dynamic-security.json"

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
            f"persistence_location {self.mq_dir / 'data'}/",
            "autosave_interval 10",
            # Measured: the defaults throttle a Python consumer ~16x (DESIGN.md).
            "set_tcp_nodelay true",
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            "message_size_limit 1048576",
            f"log_dest file {self.mq_log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # Each connection with its login and client id, and each refused one with its
            # address: the trail of a takeover attempt.
            "connection_messages true",
            f"pid_file {self.mq_pid}",
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
        creds = self.credentials()
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

    def _pid_alive(self, pid_file: Path) -> int | None:
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def mosquitto_up(self) -> None:
        """Write the configuration and the plugin's logins, then start the broker when it is
        not running. A running broker whose configuration or project-owned logins and rules
        differ from this version's is restarted: the plugin reads its file only at start."""
        conf = self._mosquitto_conf()
        conf_file = self.mq_dir / "mosquitto.conf"
        with self._lock():
            (self.mq_dir / "data").mkdir(parents=True, exist_ok=True)
            current = self._read_dynsec()
            wanted = self._dynsec_wanted(current)
            running = self._pid_alive(self.mq_pid) is not None
            stale = (not conf_file.is_file() or conf_file.read_text() != conf
                     or current is None or not _same_dynsec(current, wanted))
            if running and stale:
                self.log("mosquitto: configuration changed, restarting")
                self._stop_pid(self.mq_pid, "mosquitto")
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
                    self.mq_passwd.replace(self.mq_dir / "passwd.imported")
                (self.mq_dir / "acl").unlink(missing_ok=True)
                self._own(self.mq_dir, self.settings.mosquitto_os_user)
                self._port_free(self.settings.mqtt_port, "mosquitto", "MQTT_PORT")
                self.mq_pid.unlink(missing_ok=True)
                self.log(f"mosquitto: starting on {self.settings.host}:{self.settings.mqtt_port}")
                self._run(["mosquitto", "-d", "-c", str(conf_file)], "mosquitto start",
                          self.mq_log)
        self._wait_port(self.settings.mqtt_port, "mosquitto", self.mq_log)

    def add_device_login(self, login: str, password: str) -> None:
        """Add or replace one device's broker login (``{tenant}/{vehicle}``, also its client
        id) on the running local broker, as the API does when it provisions a device."""
        BrokerAdmin(self.mqtt_url(MQTT_ADMIN_USER),
                    timeout_s=self.settings.start_timeout_s).add_device(login, password)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise changes to the stack (two `up`s at once, parallel test workers).

        Re-entrant within one object, because `up` adds the service login too.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.project_state.mkdir(parents=True, exist_ok=True)
        with (self.project_state / "services.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _signal(self, pid_file: Path, sig: signal.Signals) -> None:
        pid = self._pid_alive(pid_file)
        if pid is not None:
            os.kill(pid, sig)

    def _stop_pid(self, pid_file: Path, what: str) -> None:
        pid = self._pid_alive(pid_file)
        if pid is None:
            return
        self.log(f"{what}: stopping")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise ServiceError(f"{what} (pid {pid}) did not stop")
        pid_file.unlink(missing_ok=True)

    def mosquitto_down(self) -> None:
        """Stop the broker; its persistence file keeps queued QoS 1 messages."""
        self._stop_pid(self.mq_pid, "mosquitto")

    def mosquitto_status(self) -> ServiceStatus:
        """Health: a real MQTT login with the service account."""
        url = f"mqtt://{self.settings.host}:{self.settings.mqtt_port}"
        pid = self._pid_alive(self.mq_pid)
        if pid is None:
            return ServiceStatus("mosquitto", url, False, False, "not running")
        try:
            version = mqtt_ping(self.mqtt_url())
        except ServiceError as exc:
            return ServiceStatus("mosquitto", url, True, False, str(exc))
        return ServiceStatus("mosquitto", url, True, True, f"{version} (pid {pid})")

    # ---- Redis ---------------------------------------------------------------------------

    @property
    def redis_pid(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    def redis_up(self) -> None:
        """Start Redis (no persistence: it carries live fan-out, rate limits and caches)."""
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        conf = self.redis_dir / "redis.conf"
        conf.write_text("\n".join([
            "# Written by `fleet services up`.",
            f"bind {self.settings.host}",
            f"port {self.settings.redis_port}",
            "daemonize yes",
            f"pidfile {self.redis_pid}",
            f"logfile {self.redis_log}",
            f"dir {self.redis_dir}",
            'save ""',
            "appendonly no",
            f"requirepass {self.credentials()['redis']}",
            "maxmemory 1gb",
            # Caches and rate-limit keys carry TTLs; evicting those first keeps pub/sub alive.
            "maxmemory-policy volatile-lru",
            "",
        ]))
        conf.chmod(0o600)
        user = self.settings.redis_os_user
        self._own(self.redis_dir, user)
        if self._pid_alive(self.redis_pid) is None:
            self._port_free(self.settings.redis_port, "redis", "REDIS_PORT")
            self.redis_pid.unlink(missing_ok=True)
            self.log(f"redis: starting on {self.settings.host}:{self.settings.redis_port}")
            self._run(self._as_user(user, ["redis-server", str(conf)]), "redis start",
                      self.redis_log)
        self._wait_port(self.settings.redis_port, "redis", self.redis_log)

    def redis_down(self) -> None:
        """Stop Redis."""
        self._stop_pid(self.redis_pid, "redis")

    def redis_status(self) -> ServiceStatus:
        """Health: PING with the password."""
        url = f"redis://{self.settings.host}:{self.settings.redis_port}/0"
        pid = self._pid_alive(self.redis_pid)
        if pid is None:
            return ServiceStatus("redis", url, False, False, "not running")
        try:
            version = redis_ping(self.redis_url())
        except ServiceError as exc:
            return ServiceStatus("redis", url, True, False, str(exc))
        return ServiceStatus("redis", url, True, True, f"Redis {version} (pid {pid})")

    # ---- all -----------------------------------------------------------------------------

    def up(self) -> None:
        """Start all three and write the local settings file."""
        with self._lock():
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
        with self._lock():
            self._down_locked()

    def _down_locked(self) -> None:
        self.redis_down()
        self.mosquitto_down()
        self.postgres_down()

    def status(self) -> list[ServiceStatus]:
        """One status line per service."""
        return [self.postgres_status(), self.mosquitto_status(), self.redis_status()]


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


def _owner(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_uid
    except FileNotFoundError:
        return None


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(text)


@contextlib.contextmanager
def _pg_connect(url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ServiceError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


def provision_cluster(admin_url: str, creds: dict[str, str]) -> None:
    """Create (or re-password) the owner, application and ingest roles.

    The application role is subject to row-level security. The ingest role (the stream) writes
    every tenant's rows and checks tenancy itself (the topic's tenant must own the vehicle). It
    still has BYPASSRLS from when the hypertables had row-level security (PostgreSQL refuses a
    binary COPY into such a table); since migration 0012 its policies on the ordinary tables
    would do, and dropping the attribute is a follow-up. Neither is a superuser.
    """
    from psycopg import sql

    attributes = ((OWNER_ROLE, "NOBYPASSRLS CREATEROLE"), (APP_ROLE, "NOBYPASSRLS"),
                  (INGEST_ROLE, "BYPASSRLS"))
    with _pg_connect(admin_url) as conn:
        for role, extra in attributes:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER {} PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(role), sql.SQL(extra), sql.Literal(creds[role])))


def provision_database(admin_url: str, database: str) -> None:
    """Create a database owned by the owner role, with the timescaledb and postgis extensions."""
    from psycopg import sql

    with _pg_connect(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(OWNER_ROLE)))
    db_url = _replace_db(admin_url, database)
    with _pg_connect(db_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(database)))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, {}").format(
            sql.Identifier(database), sql.Identifier(APP_ROLE), sql.Identifier(INGEST_ROLE)))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(
            sql.Identifier(OWNER_ROLE)))
        conn.execute(_REVOKE_DEFINER_EXTENSION_FUNCTIONS)


# SECURITY DEFINER functions of the extensions that PUBLIC may call and the application roles
# must not (docs/api.md, "Threat model"): PostGIS's ST_EstimatedExtent reads planner statistics
# of any table past row-level security (every tenant's bounding box), and TimescaleDB's
# cagg_migrate_update_watermark moves a continuous aggregate's watermark. Only the admin role,
# which installed the extensions, may revoke them; by name, so every signature is covered and
# an edition without one of them is fine.
_REVOKE_DEFINER_EXTENSION_FUNCTIONS = """
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.proname IN ('st_estimatedextent', 'cagg_migrate_update_watermark')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC', f);
  END LOOP;
END $$
"""


def drop_database(admin_url: str, database: str) -> None:
    """Drop a database (used by tests for their throwaway databases)."""
    from psycopg import sql

    with _pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))


def _replace_db(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def database_info(url: str) -> dict[str, str]:
    """Server version, extension versions and the TimescaleDB licence in force."""
    with _pg_connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        ext = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
        license_row = conn.execute("SHOW timescaledb.license").fetchone()
    return {
        "server_version": str(version[0]) if version else "?",
        "timescaledb": str(ext.get("timescaledb", "missing")),
        "postgis": str(ext.get("postgis", "missing")),
        "license": str(license_row[0]) if license_row else "?",
    }


def mqtt_ping(url: str, timeout_s: float = 10.0, *, read_version: bool = True) -> str:
    """Log in to the broker and read its version from $SYS; raises ServiceError on failure.

    With `read_version` false it only checks the login (a device may not read $SYS).
    """
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from core.mqtt_url import parse_mqtt_url

    target = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if target.username:
        client.username_pw_set(target.username, target.password)
    connack: list[Any] = []
    version: list[str] = []
    connected, got_version = threading.Event(), threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        connack.append(reason)
        connected.set()
        if not reason.is_failure and read_version:
            c.subscribe("$SYS/broker/version")

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        version.append(msg.payload.decode(errors="replace"))
        got_version.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(target.host, target.port, keepalive=10)
    except OSError as exc:
        raise ServiceError(f"MQTT connect failed: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise ServiceError(f"MQTT broker did not answer the login within {timeout_s:.0f} s")
        if connack[0].is_failure:
            raise ServiceError(f"MQTT login refused: {connack[0]}")
        if not read_version:
            return "login ok"
        if not got_version.wait(timeout_s):
            raise ServiceError("MQTT broker accepted the login but sent no $SYS version")
    finally:
        client.disconnect()
        client.loop_stop()
    return version[0]


def redis_ping(url: str) -> str:
    """PING Redis and return its version; raises ServiceError on failure."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.ping()
        info = client.info("server")
        client.close()
    except redis.RedisError as exc:
        raise ServiceError(f"Redis: {exc}") from exc
    return str(info.get("redis_version", "?"))
