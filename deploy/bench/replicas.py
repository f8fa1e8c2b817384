"""API replicas and WebSocket clients for `fleet bench faults` (fault `api_replica_kill`).

`ApiReplicas` runs `fleet api` processes on their own ports over the run's database and Redis,
sharing one JWT secret, as replicas behind a load balancer would. `WsClients` holds
`n` live-map clients, spread over the replicas, each subscribed to the whole tenant; a client
whose connection ends connects again half a second later to the next replica (what a load
balancer that takes a dead backend out of rotation gives it). A client counts as live again
at its first live batch after a mark, so recovery means fan-out through Redis, not only a
socket that accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from deploy.bench import stop_process

RECONNECT_DELAY_S = 0.5
"""A client's pause before it tries the next replica."""

PASSWORD = "Bench!Faults2024"  # noqa: S105 - a throwaway user of a throwaway database


class _Frame(msgspec.Struct):
    type: str


class ApiReplicas:
    """`fleet api` processes, one per port, restartable one at a time."""

    def __init__(self, env: dict[str, str], ports: list[int], log_dir: Path) -> None:
        self.env = env | {
            "FLEET_API_JWT_SECRET": secrets.token_urlsafe(48), "FLEET_API_JWT_TTL_S": "3600",
            "FLEET_API_ENVIRONMENT": "test", "FLEET_API_RATE_LIMIT_PER_MIN": "0",
            "FLEET_API_EXTENSIONS": "false", "FLEET_API_TILES_URL": "",
        }
        self.ports, self.log_dir = ports, log_dir
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(ports)

    @property
    def urls(self) -> list[str]:
        """Base URL of each replica."""
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int, timeout_s: float = 60.0) -> None:
        """Start replica `i` and wait until it answers /readyz."""
        import urllib.error
        import urllib.request

        with (self.log_dir / f"api{i}.log").open("ab") as log:
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "deploy.cli", "api", "--host", "127.0.0.1", "--port",
                 str(self.ports[i])], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"{self.urls[i]}/readyz", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"API replica {i} did not become ready (log: {self.log_dir})")

    def kill9(self, i: int) -> None:
        """kill -9 of replica `i` (no chance to close its WebSockets)."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        """Stop every replica (SIGTERM, SIGKILL after 10 s)."""
        for proc in self.procs:
            stop_process(proc)


def bench_user(app_url: str, tenant_id: Any, email: str) -> None:
    """An admin user of the bench's tenant, to log the clients in."""
    from deploy import seed

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(app_url)
        try:
            await seed.create_user(conn, tenant_id, email, PASSWORD, "admin")
        finally:
            await conn.close()

    asyncio.run(create())


def login(base_url: str, email: str) -> str:
    """An access token from POST /api/auth/login."""
    import json
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - a local URL the bench built
        f"{base_url}/api/auth/login", method="POST",
        data=json.dumps({"email": email, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        token: str = json.loads(resp.read())["access_token"]
    return token


class WsClients(threading.Thread):
    """`n` live-map clients on their own event loop (module doc)."""

    def __init__(self, urls: list[str], token: str, n: int) -> None:
        super().__init__(name="bench-ws-clients", daemon=True)
        self.urls, self.token, self.n = urls, token, n
        self.replica = [i % len(urls) for i in range(n)]
        self.connections = [0] * n
        self.last_batch = [0.0] * n
        self.mark_at = 0.0
        self.replica_at_mark = list(self.replica)
        self.first_after_mark: list[float | None] = [None] * n
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None
        self._ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aiohttp

        self._loop, self._halt = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = [asyncio.create_task(self._client(session, i)) for i in range(self.n)]
            await self._halt.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, session: Any, i: int) -> None:
        import aiohttp

        decoder = msgspec.json.Decoder(_Frame)
        while True:
            url = f"{self.urls[self.replica[i]]}/api/live"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError,
                                     msgspec.DecodeError):
                async with session.ws_connect(url, heartbeat=5.0, max_msg_size=0) as ws:
                    self.connections[i] += 1
                    await ws.send_json({"type": "subscribe", "token": self.token})
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        if decoder.decode(msg.data).type == "batch":
                            now = time.monotonic()
                            self.last_batch[i] = now
                            if self.mark_at and self.first_after_mark[i] is None \
                                    and now >= self.mark_at:
                                self.first_after_mark[i] = now
            self.replica[i] = (self.replica[i] + 1) % len(self.urls)
            await asyncio.sleep(RECONNECT_DELAY_S)

    def wait_live(self, timeout_s: float) -> bool:
        """Every client has had a live batch in the last two seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            if all(now - t < 2.0 for t in self.last_batch):
                return True
            time.sleep(0.2)
        return False

    def mark(self) -> None:
        """From now on, note each client's first live batch."""
        self.first_after_mark = [None] * self.n
        self.replica_at_mark = list(self.replica)
        self.mark_at = time.monotonic()

    def figures(self, dropped_from: int) -> dict[str, Any]:
        """After a fault that started at the mark: clients, how many were on the replica
        that died (`dropped_from`), how many are live again and the slowest one's time."""
        delays = [t - self.mark_at for t in self.first_after_mark if t is not None]
        return {
            "ws_clients": self.n,
            "ws_clients_dropped": self.replica_at_mark.count(dropped_from),
            "ws_clients_recovered": len(delays),
            "ws_recovery_s": round(max(delays), 1) if len(delays) == self.n else None,
            "ws_reconnections": sum(self.connections) - self.n,
        }

    def close(self) -> None:
        """Disconnect every client."""
        if self._loop is not None and self._halt is not None:
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(10)
