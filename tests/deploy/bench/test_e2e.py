"""`fleet bench e2e` through its own code path at a small rate: the figures a soak or an
overload run reads (where the backlog waits, memory, per-slice latency, spikes) are there
and consistent, and nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.services, pytest.mark.timeout(150)]


def test_a_short_run_reports_backlog_memory_slices_and_spikes() -> None:
    argv = [sys.executable, "-m", "deploy.cli", "bench", "e2e", "--json", "--duration", "8",
            "--rate", "500", "--vehicles", "50", "--batch", "5", "--window-s", "2",
            "--sample-s", "0.5", "--anchor-rows", "2000", "--drain-timeout", "60"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=140,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["lost"], result["duplicated"], result["drained"]) == (0, 0, True), result
    assert result["stored"] == result["published"] > 0
    assert result["drain_s"] is not None
    assert result["peak_rss_stream_mb"] > 0
    assert result["peak_backlog_samples"] >= 0
    assert result["peak_backlog_samples"] >= result["peak_in_stream_samples"] - 1, result
    windows = result["windows"]
    assert 3 <= len(windows) <= 4, windows
    assert [w["from_s"] for w in windows] == sorted(w["from_s"] for w in windows)
    assert sum(w["stored_per_s"] for w in windows) * result["window_s"] \
        == pytest.approx(result["stored"], rel=0.02)
    assert all(w["latency_p99_ms"] >= w["latency_p50_ms"] for w in windows)
    assert set(result["rss_growth_pct"]) == {"rss_stream", "rss_broker"}
    assert result["p99_per_s_max_ms"] >= result["p99_per_s_median_ms"] > 0
    assert 8 <= result["seconds"] <= 10
