"""Fixtures of the simulator tests: seeded models at a fixed start time."""

from __future__ import annotations

import pytest

from simulators.vehicle import Fault, VehicleModel

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
def driving_model() -> VehicleModel:
    """A warm, moving vehicle with a misfire (P0301) under way."""
    model = VehicleModel(3, start_ms=START_MS, warm_engine=True,
                         faults=[Fault.parse("misfire@0+600")])
    for _ in range(120):
        model.step(1.0)
    return model
