"""`fleet bench gateway` stops everything it started when its run fails or is interrupted:
the private Mosquitto and every gateway process (its children), and it keeps the run's logs.

The runs are real (broker, simulators, `fleet gateway` processes), only made to fail early:
by a backlog timeout of zero, and by cancellation, which is what Ctrl-C does to
`asyncio.run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.bench import gateway as bench
from edge_gateway.errors import GatewayError

pytestmark = pytest.mark.services


def _children() -> dict[int, str]:
    """Living children of this process, pid -> command name (from /proc; zombies excluded,
    they have exited)."""
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            found[int(entry)] = name
    return found


class _Watcher:
    """Records every child seen while a run goes on, to show that the run did start them."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    async def run(self) -> None:
        while True:
            self.seen.update(_children())
            await asyncio.sleep(0.05)

    def has_broker_and_gateway(self) -> bool:
        names = set(self.seen.values())
        return "mosquitto" in names and any(n.startswith("python") for n in names)


def _kept_logs(tmp_path: Path) -> list[str]:
    """The logs a failed run left in its (single) work dir."""
    (workdir,) = tmp_path.glob("fleet-bench-gw-*")
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*.log"))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.register(parser)
    return parser.parse_args(list(argv))


@contextlib.asynccontextmanager
async def _watching() -> AsyncIterator[_Watcher]:
    watcher = _Watcher()
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failed_run_stops_its_broker_and_gateway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _children()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the kept logs land
    args = _args("--warmup-s", "1", "--steady-s", "1", "--backlog-timeout-s", "0")
    async with _watching() as watcher:
        with pytest.raises(GatewayError, match="backlog samples arrived within 0 s"):
            await bench._bench(args)
    assert watcher.has_broker_and_gateway(), watcher.seen
    assert _children().keys() <= before.keys(), _children()
    assert _kept_logs(tmp_path) == ["broker/mosquitto.log", "gateway.log"]


async def test_an_interrupted_run_stops_its_broker_and_gateway(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    before = _children()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = _args("--warmup-s", "600")
    async with _watching() as watcher:
        run = asyncio.create_task(bench._bench(args))
        deadline = asyncio.get_running_loop().time() + 60
        while not watcher.has_broker_and_gateway():
            assert not run.done(), run
            assert asyncio.get_running_loop().time() < deadline, watcher.seen
            await asyncio.sleep(0.05)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert _children().keys() <= before.keys(), _children()
