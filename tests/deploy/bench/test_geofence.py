"""The geofence benchmark runs end to end on a small case and agrees with PostGIS exactly."""

from __future__ import annotations

import pytest

from deploy.bench.geofence import measure
from deploy.services import LocalServices

pytestmark = pytest.mark.services


def test_small_benchmark_has_no_mismatches(services: LocalServices) -> None:
    logs: list[str] = []
    result = measure(fences=300, positions=5000, tenants=3, batch=1000, rounds=1, seed=7,
                     grid_cell_m=None, keep_database=False, log=logs.append)
    assert result["mismatches"] == 0
    assert result["hits"] > 100
    assert result["fences"] == 300
    assert {"positions_per_s", "postgis_positions_per_s", "ratio"} <= result.keys()
    assert any("PostGIS geography" in m for m in logs)
