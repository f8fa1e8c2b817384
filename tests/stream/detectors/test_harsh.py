"""Harsh acceleration and braking from speed deltas."""

from __future__ import annotations

import random

from stream.detectors.config import DetectorSettings
from stream.detectors.harsh import HarshDrivingDetector

from .readings import Reading, reading, run, secs, vehicle_events


def ramp(t0: float, t1: float, v0_kph: float, a_mps2: float, step_s: float = 1.0, *,
         noise_kph: float = 0.0, rng: random.Random | None = None) -> list[Reading]:
    out = []
    t = t0
    while t < t1 - 1e-9:
        v = max(0.0, v0_kph + a_mps2 * 3.6 * (t - t0))
        if noise_kph and rng:
            v = max(0.0, v + rng.gauss(0, noise_kph))
        out.append(reading(t, speed_kph=round(v, 3)))
        t += step_s
    return out


def detector() -> HarshDrivingDetector:
    return HarshDrivingDetector(DetectorSettings())


def test_harsh_braking_is_one_event_with_peak() -> None:
    readings = [*ramp(0, 10, 60, 0), *ramp(10, 13, 60, -6.0), *ramp(13, 20, 60 - 6 * 3.6 * 3, 0)]
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events)
    assert ev.event_type == "harsh_braking"
    assert ev.value is not None
    assert abs(ev.value - 6.0) < 1e-6
    assert ev.threshold == 4.5
    assert secs(ev.started_ms) == 10
    assert ev.duration_s is not None
    assert ev.duration_s >= 2


def test_harsh_acceleration() -> None:
    readings = [*ramp(0, 5, 0, 0), *ramp(5, 9, 0, 4.0), *ramp(9, 15, 4 * 3.6 * 4, 0)]
    _, events = run(detector(), readings)
    assert [e.event_type for e in vehicle_events(events)] == ["harsh_acceleration"]


def test_normal_driving_with_noise_at_10_hz_stays_quiet() -> None:
    rng = random.Random(4)
    readings = [*ramp(0, 20, 0, 2.0, 0.1, noise_kph=1.0, rng=rng),
                *ramp(20, 40, 144, 0, 0.1, noise_kph=1.0, rng=rng),
                *ramp(40, 60, 144, -2.5, 0.1, noise_kph=1.0, rng=rng)]
    _, events = run(detector(), readings)
    assert vehicle_events(events) == []


def test_boundary_value_counts_just_below_does_not() -> None:
    at = [*ramp(0, 3, 50, 0), reading(3, speed_kph=50 - 4.5 * 3.6), reading(4, speed_kph=33.8)]
    below = [*ramp(0, 3, 50, 0), reading(3, speed_kph=50 - 4.49 * 3.6), reading(4, speed_kph=33.8)]
    assert len(vehicle_events(run(detector(), at)[1])) == 1
    assert vehicle_events(run(detector(), below)[1]) == []


def test_gap_is_not_a_harsh_event() -> None:
    # 100 km/h, then 60 s of silence, then standing: a delta across the gap is not braking.
    readings = [*ramp(0, 10, 100, 0), *ramp(70, 80, 0, 0)]
    _, events = run(detector(), readings)
    assert vehicle_events(events) == []


def test_manoeuvre_interrupted_by_gap_is_still_reported() -> None:
    readings = [*ramp(0, 5, 80, 0), *ramp(5, 8, 80, -7.0), *ramp(60, 65, 0, 0)]
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events)
    assert ev.event_type == "harsh_braking"
    assert secs(ev.ended_ms) == 7


def test_pickled_state_gives_same_events() -> None:
    readings = [*ramp(0, 10, 60, 0), *ramp(10, 13, 60, -6.0), *ramp(13, 20, 0, 0),
                *ramp(20, 25, 0, 4.0), *ramp(25, 30, 72, 0)]
    plain = run(detector(), readings)[1]
    assert run(detector(), readings, pickle_every=1)[1] == plain
    assert [e.event_type for e in vehicle_events(plain)] == ["harsh_braking", "harsh_acceleration"]
