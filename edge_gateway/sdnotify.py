"""systemd notifications (sd_notify) without a dependency.

The protocol is one datagram of `KEY=VALUE` lines sent to the AF_UNIX socket named by the
NOTIFY_SOCKET environment variable (a leading `@` means the abstract namespace). Without
NOTIFY_SOCKET (not started by systemd) every call is a no-op. WATCHDOG_USEC, set by systemd
when the unit has `WatchdogSec=`, says how often `WATCHDOG=1` must arrive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING messages to systemd when it listens."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid.isdigit() or int(pid) == os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if watched else None
        """The watchdog timeout in seconds, or None when systemd does not watch us."""

    @property
    def enabled(self) -> bool:
        """True when started by systemd with Type=notify."""
        return self._address is not None

    def notify(self, **fields: str) -> bool:
        """Send one notification, e.g. notify(READY="1"); False when nobody listens."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError:
            return False  # systemd restarting or gone: a lost ping is what the watchdog is for
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd that start-up finished."""
        return self.notify(READY="1", STATUS=status) if status else self.notify(READY="1")

    def watchdog(self) -> bool:
        """Keep the watchdog from firing."""
        return self.notify(WATCHDOG="1")

    def stopping(self) -> bool:
        """Tell systemd that the process is shutting down."""
        return self.notify(STOPPING="1")
