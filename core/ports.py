"""TCP ports on this host: is one free, and which to pick for a throwaway server.

A port picked by binding to port 0 lies in the kernel's ephemeral range, which every outgoing
connection also draws from: between the pick and the server's own bind, a client socket may
take it. A block of ports (a local Bytewax cluster's) is therefore picked below that range,
where only listeners live, and every port of it is checked.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

from core.errors import FleetError

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICK = 10_000
"""Below this lie well-known services' ports (databases, brokers, 2101 of our own cluster)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (chosen by the kernel)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def busy_ports(ports: Iterable[int], host: str = "127.0.0.1") -> list[int]:
    """Those of `ports` that a server could not bind on `host` now."""
    busy = []
    for port in ports:
        with socket.socket() as sock:
            # As a server binds: SO_REUSEADDR lets a port in TIME_WAIT count as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A base port such that base .. base + n - 1 are all free, below the ephemeral range."""
    high = _ephemeral_low() - n
    if high <= _LOWEST_PICK:
        raise FleetError(f"no room for {n} ports below the ephemeral range")
    for _ in range(200):
        base = random.randrange(_LOWEST_PICK, high)  # noqa: S311 - not a secret
        if not busy_ports(range(base, base + n), host):
            return base
    raise FleetError(f"no block of {n} free ports found")
