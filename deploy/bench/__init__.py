"""`fleet bench NAME`: benchmarks that print one JSON object as their last line of output.

Benchmarks are development tooling, so they live here at the top of the layers, not in the
runtime packages they measure: one module per benchmark, each defining `register(parser)`
like a subcommand; the registry below is the one list of them. `scratch.py` makes the one
scratch database they share, `apiproc.py` starts API processes for the API benchmarks.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from deploy.optional import module_available

BENCHMARKS: list[tuple[str, str, str]] = [
    ("gateway", "deploy.bench.gateway", "gateway against the simulators: RSS, CPU, catch-up rate"),
    ("geofence", "deploy.bench.geofence", "geofence index against a PostGIS ST_Contains join"),
    ("ingest", "deploy.bench.ingest", "telemetry sink against raw binary COPY"),
    ("storage", "deploy.bench.storage",
     "ingest with the edition's policies, compression ratio, analyst query compressed or not"),
    ("e2e", "deploy.bench.e2e", "load generator -> MQTT -> stream -> TimescaleDB"),
    ("faults", "deploy.bench.faults", "fault matrix under steady e2e load: lost, dup, recovery"),
    ("fairness", "deploy.bench.fairness",
     "one flooding device beside 1,000 normal vehicles: their p99 against the same run without"),
    ("ws", "deploy.bench.ws", "WebSocket live map fan-out staleness"),
    ("api", "deploy.bench.api", "REST GET /api/vehicles under concurrency"),
    ("map", "deploy.bench.map", "the dispatcher console in headless Chromium with N vehicles live"),
]


def register(parser: argparse.ArgumentParser) -> None:
    """Add one sub-parser per benchmark that is built."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module, help_text in BENCHMARKS:
        if not module_available(module):
            continue
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print only the JSON result line")
        importlib.import_module(module).register(p)


def emit(result: dict[str, object], json_only: bool) -> int:
    """Print a benchmark's result: a readable table on stderr (unless `--json`), then the one
    JSON object as the last line of stdout, which is the contract every benchmark keeps."""
    import json
    import sys

    if not json_only:
        width = max((len(k) for k in result), default=0) + 2
        for key, value in result.items():
            print(f"{key:>{width}}: {value}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0


# ---- what a process costs (Linux /proc), for every benchmark -----------------------------------


def process_tree(pid: int) -> list[int]:
    """A process and its direct children (a supervisor and its workers)."""
    from pathlib import Path

    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(c) for c in children)]


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) summed over processes, MiB; a process that has exited counts 0."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    if key == "VmRSS":
                        rss += int(rest.split()[0])
                    elif key == "VmHWM":
                        hwm += int(rest.split()[0])
        except (OSError, ValueError):
            continue
    return round(rss / 1024, 1), round(hwm / 1024, 1)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds summed over processes; a process that has exited counts 0."""
    import os

    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def stop_process(proc: Any, grace_s: float = 10.0) -> None:
    """SIGTERM a child (a `subprocess.Popen`) that still runs, SIGKILL after `grace_s`."""
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
