"""Test helpers shipped with the gateway (as Bytewax ships its testing connectors).

`PrivateBroker` runs a throwaway Mosquitto on a free port in a directory of its own, for
tests and `fleet bench gateway`, so that they never disturb a shared broker. It needs the
`mosquitto` binary (Debian package `mosquitto`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from core.ports import free_port
from edge_gateway.errors import GatewayError

STOP_TIMEOUT_S = 10.0
"""How long `PrivateBroker.stop` waits for Mosquitto to save and exit before SIGKILL."""


class PrivateBroker:
    """A throwaway Mosquitto on a free port in a temp dir (never the shared one)."""

    def __init__(self, workdir: Path, extra_lines: tuple[str, ...] = ()) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [*extra_lines,
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 1000",
            # QoS 1 messages for a subscriber that is slow or whose connection dropped (a
            # persistent session) wait in its queue; beyond this many they would be dropped
            # silently while the publisher still gets its PUBACK. A benchmark's backlog is a
            # few hundred batches, so this never binds; no byte limit either (the default).
            "max_queued_messages 1000000",
            "set_tcp_nodelay true",
            f"log_dest file {self.dir / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the temp dir
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """Anonymous URL of the broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise GatewayError(f"private mosquitto did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file (queued QoS 1 messages) on exit;
        SIGKILL if it takes longer than `STOP_TIMEOUT_S`, so a stop never leaves it running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
