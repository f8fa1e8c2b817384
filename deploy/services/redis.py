"""The project's Redis: live fan-out, rate limits and caches, so nothing is persisted."""

from __future__ import annotations

from deploy.services.pings import redis_ping
from deploy.services.process import LocalDaemon, ServiceStatus


class LocalRedis(LocalDaemon):
    """Starts, stops and checks the project's Redis; every operation is idempotent."""

    name = "redis"

    def up(self) -> None:
        """Start Redis (no persistence: it carries live fan-out, rate limits and caches)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text("\n".join([
            "# Written by `fleet services up`.",
            f"bind {self.settings.host}",
            f"port {self.settings.redis_port}",
            "daemonize yes",
            f"pidfile {self.pid_file}",
            f"logfile {self.log_file}",
            f"dir {self.folder}",
            'save ""',
            "appendonly no",
            f"requirepass {self.logins.credentials()['redis']}",
            "maxmemory 1gb",
            # Caches and rate-limit keys carry TTLs; evicting those first keeps pub/sub alive.
            "maxmemory-policy volatile-lru",
            "",
        ]))
        conf.chmod(0o600)
        user = self.settings.redis_os_user
        self.control.own(self.folder, user)
        if self.control.pid_alive(self.pid_file) is None:
            self.control.port_free(self.settings.redis_port, "redis", "REDIS_PORT")
            self.pid_file.unlink(missing_ok=True)
            self.log(f"redis: starting on {self.settings.host}:{self.settings.redis_port}")
            self.control.run(self.control.as_user(user, ["redis-server", str(conf)]),
                             "redis start", self.log_file)
        self.control.wait_port(self.settings.redis_port, "redis", self.log_file)

    def status(self) -> ServiceStatus:
        """Health: PING with the password."""
        url = f"redis://{self.settings.host}:{self.settings.redis_port}/0"
        return self._pid_status(url, lambda: f"Redis {redis_ping(self.logins.redis_url())}")
