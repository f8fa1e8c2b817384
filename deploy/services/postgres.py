"""The project's PostgreSQL (TimescaleDB + PostGIS): one cluster under the state folder,
created on first use, configured by the settings and provisioned with the project's roles
and database."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from deploy.errors import ServiceError
from deploy.services.credentials import ADMIN_ROLE, DATABASE, Credentials
from deploy.services.process import DaemonControl, LocalDaemon, ServiceStatus
from deploy.services.provisioning import (
    _pg_connect,
    database_info,
    provision_cluster,
    provision_database,
)
from deploy.services.settings import ServicesSettings


class LocalPostgres(LocalDaemon):
    """Starts, stops and checks the project's PostgreSQL; every operation is idempotent."""

    name = "postgres"

    def __init__(self, settings: ServicesSettings, control: DaemonControl,
                 logins: Credentials) -> None:
        super().__init__(settings, control, logins)
        self.pg_data = self.folder / "data"
        self.pg_run = self.folder / "run"

    def _pg_bin(self, name: str) -> str:
        path = Path(self.settings.postgres_bin_dir) / name
        if not path.exists():
            raise ServiceError(f"{path} not found: install postgresql-15 (`make setup`)")
        return str(path)

    def _pg_running(self) -> bool:
        if not (self.pg_data / "PG_VERSION").exists():
            return False
        proc = subprocess.run(
            self.control.as_user(self.settings.postgres_os_user,
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

    def up(self) -> None:
        """Create the cluster on first use, start it and provision roles and extensions."""
        self._check_edition_installed()
        user = self.settings.postgres_os_user
        creds = self.logins.credentials()
        if not (self.pg_data / "PG_VERSION").exists():
            self.log(f"postgres: initdb into {self.pg_data}")
            if self.pg_data.exists():
                shutil.rmtree(self.pg_data)
            self.control.own(self.pg_data.parent, user)
            pwfile = self.pg_data.parent / "initdb.pw"
            pwfile.write_text(creds[ADMIN_ROLE] + "\n")
            self.control.own(self.pg_data.parent, user)
            try:
                self.control.run(self.control.as_user(user, [
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
        self.control.own(self.pg_data.parent, user)
        (self.pg_data).chmod(0o700)
        if self._pg_running():
            # The licence is read at server start only (a reload cannot unload the tsl module).
            in_force = self._pg_license_in_force()
            if in_force != self.settings.timescaledb_license:
                self.log(f"postgres: timescaledb.license is {in_force}, the setting says "
                         f"{self.settings.timescaledb_license}: restarting")
                self.down()
        if not self._pg_running():
            self.control.port_free(self.settings.postgres_port, "postgres", "POSTGRES_PORT")
            self.log(f"postgres: starting on {self.settings.host}:{self.settings.postgres_port}")
            self.control.run(self.control.as_user(user, [
                self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "-l", str(self.log_file),
                "-w", "-t", str(int(self.settings.start_timeout_s)), "start",
            ]), "postgres start", self.log_file)
        self.control.wait_port(self.settings.postgres_port, "postgres", self.log_file)
        provision_cluster(self.logins.pg_url(ADMIN_ROLE, "postgres"), creds)
        provision_database(self.logins.pg_url(ADMIN_ROLE, "postgres"), DATABASE)

    def _pg_license_in_force(self) -> str | None:
        """`timescaledb.license` of the running server, as a new session sees it.

        Read in the project database, where the extension's library defines the setting (and
        its build's default); before that database exists, only a licence named in the
        configuration is known (None otherwise).
        """
        with _pg_connect(self.logins.pg_url(ADMIN_ROLE, "postgres")) as conn:
            has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
        with _pg_connect(self.logins.pg_url(ADMIN_ROLE,
                                            DATABASE if has_db else "postgres")) as conn:
            row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
        return str(row[0]) if row and row[0] else None

    def down(self) -> None:
        """Stop the cluster (fast shutdown: open transactions roll back)."""
        if self._pg_running():
            self.log("postgres: stopping")
            self.control.run(self.control.as_user(self.settings.postgres_os_user, [
                self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "-m", "fast", "-w", "stop",
            ]), "postgres stop", self.log_file)

    def status(self) -> ServiceStatus:
        """Health plus the TimescaleDB and PostGIS versions and the TimescaleDB licence."""
        url = f"postgresql://{self.settings.host}:{self.settings.postgres_port}/{DATABASE}"
        return self._status(url, self._pg_running(), self._versions)

    def _versions(self) -> str:
        info = database_info(self.logins.pg_url(ADMIN_ROLE))
        return (f"PostgreSQL {info['server_version']}, timescaledb {info['timescaledb']} "
                f"(license {info['license']}), postgis {info['postgis']}")
