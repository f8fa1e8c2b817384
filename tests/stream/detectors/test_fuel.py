"""Fuel drop versus refuel, robust to sloshing noise and gaps."""

from __future__ import annotations

import random

import pytest

from stream.detectors.config import DetectorSettings
from stream.detectors.fuel import BUCKET_POINTS, FuelDetector

from .readings import Reading, reading, run, secs, vehicle_events


def fuel_trace(profile: list[tuple[float, float, float]], noise_pct: float = 2.0,
               seed: int = 7, step_s: float = 1.0) -> list[Reading]:
    """Piecewise-linear fuel level: (t0_s, t1_s, level at t0 -> rate %/s), with slosh noise."""
    rng = random.Random(seed)
    out = []
    for t0, t1, level0, rate in [(a, b, c, d) for a, b, c, d in _segments(profile)]:
        t = t0
        while t < t1 - 1e-9:
            level = level0 + rate * (t - t0)
            noisy = min(100.0, max(0.0, level + rng.uniform(-noise_pct, noise_pct)))
            out.append(reading(t, fuel_pct=round(noisy, 2), speed_kph=40.0))
            t += step_s
    return out


def _segments(profile: list[tuple[float, float, float]]) -> list[tuple[float, float, float, float]]:
    """(t0, t1, rate) segments chained from an initial level in the first tuple's third item."""
    level = profile[0][2]
    segs = []
    for i, (t0, t1, rate) in enumerate(profile[1:]):
        del i
        segs.append((t0, t1, level, rate))
        level += rate * (t1 - t0)
    return segs


DRIVE = -0.11 / 60  # normal consumption, % of tank per second


def detector() -> FuelDetector:
    return FuelDetector(DetectorSettings())


def test_normal_consumption_with_sloshing_is_quiet() -> None:
    readings = fuel_trace([(0, 0, 70.0), (0, 3600, DRIVE)], noise_pct=3.0)
    assert run(detector(), readings)[1] == []


def test_theft_is_one_fuel_drop_with_whole_amount() -> None:
    readings = fuel_trace([(0, 0, 70.0), (0, 600, DRIVE), (600, 660, -25 / 60),
                           (660, 1500, DRIVE)])
    [ev] = vehicle_events(run(detector(), readings, pickle_every=11)[1])
    assert ev.event_type == "fuel_drop"
    assert ev.value is not None
    assert 22 <= ev.value <= 28
    assert ev.threshold == 8.0
    assert ev.started_ms is not None
    assert ev.ended_ms is not None
    assert 500 <= secs(ev.started_ms) <= 630  # type: ignore[operator]
    assert 640 <= secs(ev.ended_ms) <= 760  # type: ignore[operator]


def test_refuel_is_info_and_not_a_drop() -> None:
    readings = fuel_trace([(0, 0, 15.0), (0, 300, 0.0), (300, 400, 0.75), (400, 1200, DRIVE)])
    [ev] = vehicle_events(run(detector(), readings)[1])
    assert ev.event_type == "refuel"
    assert ev.severity == "info"
    assert ev.value is not None
    assert 70 <= ev.value <= 80


def test_drop_while_device_was_off_is_found_across_the_gap() -> None:
    before = fuel_trace([(0, 0, 60.0), (0, 120, 0.0)], noise_pct=1.0)
    after = fuel_trace([(0, 0, 40.0), (4000, 4200, 0.0)], noise_pct=1.0, seed=8)
    events = vehicle_events(run(detector(), [*before, *after])[1])
    assert [e.event_type for e in events] == ["fuel_drop"]
    assert events[0].value is not None
    assert abs(events[0].value - 20) < 2


@pytest.mark.parametrize("drop", [6.0, 10.0])
def test_threshold_boundary(drop: float) -> None:
    readings = fuel_trace([(0, 0, 50.0), (0, 300, 0.0), (300, 320, -drop / 20), (320, 900, 0.0)],
                          noise_pct=0.5)
    events = vehicle_events(run(detector(), readings)[1])
    assert len(events) == (1 if drop >= 8 else 0)


def test_dense_samples_keep_the_bucket_bounded_and_still_find_a_theft() -> None:
    """At 20 Hz a bucket keeps at most BUCKET_POINTS values, and the theft is found as at 1 Hz."""
    readings = fuel_trace([(0, 0, 70.0), (0, 600, DRIVE), (600, 660, -25 / 60),
                           (660, 900, DRIVE)], step_s=0.05)
    det = detector()
    st = det.initial_state()
    events = []
    largest = 0
    for r in readings:
        st, out = det.on_reading(st, r)
        events.extend(out)
        largest = max(largest, len(st.bucket_values))
    assert largest <= BUCKET_POINTS + 1
    [ev] = vehicle_events(events)
    assert ev.event_type == "fuel_drop"
    assert ev.value is not None
    assert 22 <= ev.value <= 28
