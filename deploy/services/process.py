"""What the three daemons share: `DaemonControl` (commands run as the daemon's user, folders
given to it, the project port checked free and then waited for, pid files, stopping, the
tail of a log, and the lock that serialises changes to the stack), and `LocalDaemon`, the
base of each daemon's class (its files, and the status it reports)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from deploy.errors import ServiceError
from deploy.services.credentials import Credentials
from deploy.services.settings import ServicesSettings, _is_root


@dataclass(frozen=True)
class ServiceStatus:
    """Health of one service as `fleet services status` reports it."""

    name: str
    url: str
    running: bool
    healthy: bool
    detail: str


class DaemonControl:
    """Runs, finds and stops the daemons' processes in one state folder; shared by the
    three daemons of one stack (so its lock is re-entrant across them)."""

    def __init__(self, settings: ServicesSettings, log: Callable[[str], None], state: Path,
                 project_state: Path) -> None:
        self.settings = settings
        self.log = log
        self.state = state
        self.project_state = project_state
        self._lock_depth = 0

    def as_user(self, user: str, argv: list[str]) -> list[str]:
        """Prefix a command so that it runs as `user` when we are root."""
        if not _is_root():
            return argv
        return ["runuser", "-u", user, "--", *argv]

    def own(self, path: Path, user: str) -> None:
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

    def run(self, argv: list[str], what: str, log_file: Path | None = None) -> str:
        """Run a command to its end; a failure raises ServiceError with the log's tail."""
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

    def port_free(self, port: int, what: str, setting: str) -> None:
        """Refuse to start when something else already listens on the project port.

        Otherwise the start fails quietly (the daemon exits), and the health checks would
        talk to the stranger and report it as ours.
        """
        with contextlib.suppress(OSError), socket.create_connection(
                (self.settings.host, port), timeout=1):
            raise ServiceError(
                f"{what}: port {self.settings.host}:{port} is already in use by another "
                f"program; stop it or choose another port (FLEET_SERVICES_{setting})")

    def wait_port(self, port: int, what: str, log_file: Path) -> None:
        """Wait until the daemon answers on its port (at most `start_timeout_s`)."""
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

    def pid_alive(self, pid_file: Path) -> int | None:
        """The pid in `pid_file` when that process still runs, else None."""
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
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

    def send_signal(self, pid_file: Path, sig: signal.Signals) -> None:
        """Send `sig` to the process in `pid_file`, when it runs."""
        pid = self.pid_alive(pid_file)
        if pid is not None:
            os.kill(pid, sig)

    def stop_pid(self, pid_file: Path, what: str) -> None:
        """Stop the process in `pid_file` (SIGTERM, then wait up to `start_timeout_s`)."""
        pid = self.pid_alive(pid_file)
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


class LocalDaemon:
    """One of the stack's daemons (a subclass each), given the settings, the stack's
    `DaemonControl` and the logins."""

    name: ClassVar[str]
    """The daemon's folder in the state folder, and the stem of its log and pid files."""

    def __init__(self, settings: ServicesSettings, control: DaemonControl,
                 logins: Credentials) -> None:
        self.settings = settings
        self.control = control
        self.logins = logins
        self.log = control.log
        self.folder = control.state / self.name
        self.log_file = self.folder / f"{self.name}.log"
        self.pid_file = self.folder / f"{self.name}.pid"
        """Where the daemon writes its pid (PostgreSQL: `postmaster.pid` in its data instead)."""

    def down(self) -> None:
        """Stop the daemon: SIGTERM to the process in its pid file."""
        self.control.stop_pid(self.pid_file, self.name)

    def _pid_status(self, url: str, ping: Callable[[], str]) -> ServiceStatus:
        """Running when its pid file names a live process; healthy when `ping` (a login that
        names the daemon's version) succeeds."""
        pid = self.control.pid_alive(self.pid_file)
        return self._status(url, pid is not None, lambda: f"{ping()} (pid {pid})")

    def _status(self, url: str, running: bool, detail: Callable[[], str]) -> ServiceStatus:
        """Not running, or running and healthy when `detail` (a login that describes the
        daemon) succeeds, or running and unhealthy with the reason it failed."""
        if not running:
            return ServiceStatus(self.name, url, False, False, "not running")
        try:
            text = detail()
        except ServiceError as exc:
            return ServiceStatus(self.name, url, True, False, str(exc))
        return ServiceStatus(self.name, url, True, True, text)


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
