"""`fleet bench faults`: two cheap faults through the benchmark's own code path, end to end.

The benchmark starts its own PostgreSQL, Mosquitto and Redis (never the shared ones), so
this needs the services' binaries but not the `services` fixture. The database restart is
the fault used here: it goes through the stream's retries on both the inbox and the sink,
and is expected to lose and duplicate nothing. (The broker restart and the gateway-broker
partition are measured by the benchmark, docs/benchmarks.md, "Fault matrix"; a broker restart
is tested at the device, tests/edge_gateway/test_gateway_mqtt.py.) The second fault kills one
of two API replicas under ten live-map clients: every client must be live again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.bench.faults import PLATEAU_S, _plateau

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(200)


def test_database_restart_and_api_replica_kill_lose_nothing() -> None:
    argv = [sys.executable, "-m", "deploy.cli", "bench", "faults", "--json",
            "--faults", "db_restart,api_replica_kill", "--rate", "200", "--vehicles", "20",
            "--batch", "5", "--fault-s", "2", "--warmup-s", "2", "--baseline-s", "3",
            "--settle-s", "2", "--post-s", "2", "--recovery-timeout-s", "40",
            "--ws-clients", "10"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=190,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["benchmark"] == "faults"
    assert {"offered_per_s", "committed_per_s_no_fault", "faults", "lost", "duplicated",
            "drained", "not_measured"} <= result.keys()
    assert result["offered_per_s"] > 0
    assert result["committed_per_s_no_fault"] > 0
    fault = result["faults"]["db_restart"]
    assert {"lost", "duplicated", "recovery_s", "fault_s", "live_recovery_s",
            "stream_restarts", "samples"} <= fault.keys()
    assert fault["samples"] > 0
    assert (fault["lost"], fault["duplicated"]) == (0, 0), result
    assert fault["recovery_s"] is not None, result
    assert (result["lost"], result["duplicated"], result["drained"]) == (0, 0, True), result
    api = result["faults"]["api_replica_kill"]
    assert (api["lost"], api["duplicated"]) == (0, 0), result
    assert api["ws_clients"] == api["ws_clients_recovered"] == 10, api
    assert api["ws_clients_dropped"] > 0, api  # some clients were on the replica killed
    assert api["ws_reconnections"] >= api["ws_clients_dropped"], api
    assert api["ws_recovery_s"] is not None, api


def test_a_slow_drain_is_not_a_plateau() -> None:
    """The loss rule: a backlog that keeps its level is a loss; one that drains slowly (the
    run that reported a database restart recovered with 250,000 samples still waiting) or
    swings is not."""
    lag = 22_760
    times = [i * 0.5 for i in range(int(PLATEAU_S * 2) + 1)]
    now = times[-1]
    flat = [(t, 100_000 + (3_000 if i % 2 else -3_000)) for i, t in enumerate(times)]
    assert _plateau(flat, now, lag)
    draining = [(t, int(330_000 - 1_000 * t)) for t in times]
    assert max(b for _, b in draining) - min(b for _, b in draining) <= lag
    assert not _plateau(draining, now, lag)
    swinging = [(t, 100_000 + (2 * lag if i % 7 == 0 else 0)) for i, t in enumerate(times)]
    assert not _plateau(swinging, now, lag)
    assert not _plateau(flat[-4:], now, lag)  # too few polls to tell
