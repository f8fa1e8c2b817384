"""The `fleet gateway` process: systemd notifications, and no server-only imports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.edge_gateway.helpers import free_port

SERVER_ONLY = ("numpy", "shapely", "bytewax", "psycopg", "asyncpg", "redis", "aiohttp",
               "rtree", "pyarrow", "azure")


def test_ready_and_watchdog_reach_systemd(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify"
    config = tmp_path / "g.toml"
    # No broker listens on this port: the sampling loop must still run and ping the watchdog.
    config.write_text(f'[gateway]\nspool_path = "{tmp_path / "s.db"}"\n'
                      f'[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock_path))
        server.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "gateway", "--config",
                                 str(config), "--log-level", "ERROR"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            messages = [server.recv(1024) for _ in range(3)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        stopping = server.recv(1024)
    assert messages[0].startswith(b"READY=1")
    assert messages[1:] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    assert stopping == b"STOPPING=1"
    assert proc.returncode == 0


def test_gateway_imports_nothing_from_the_server_stack() -> None:
    code = (
        "import sys, edge_gateway.gateway, edge_gateway.cli, "
        "edge_gateway.sources.can, edge_gateway.sources.gps, edge_gateway.sources.obd, "
        "edge_gateway.commands, edge_gateway.uplink, edge_gateway.spool;"
        "import cantools, can, pynmea2, serial, aiomqtt;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert not [m for m in out if m in SERVER_ONLY]
