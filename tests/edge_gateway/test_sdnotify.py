"""sd_notify over NOTIFY_SOCKET, as systemd's Type=notify and WatchdogSec expect."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from edge_gateway.sdnotify import Notifier


def test_messages_reach_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000",
                             "WATCHDOG_PID": str(os.getpid())})
        assert notifier.enabled
        assert notifier.watchdog_s == 20.0
        assert notifier.ready("up")
        assert server.recv(1024) == b"READY=1\nSTATUS=up"
        assert notifier.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.ready()


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000",
                         "WATCHDOG_PID": "1"})
    assert notifier.watchdog_s is None
    assert not notifier.watchdog()
