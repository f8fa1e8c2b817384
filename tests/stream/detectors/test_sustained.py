"""Low battery and coolant overheat: sustained thresholds with hysteresis."""

from __future__ import annotations

import random

from stream.detectors.battery import LowBatteryDetector
from stream.detectors.config import DetectorSettings
from stream.detectors.coolant import CoolantOverheatDetector

from .readings import reading, run, secs, series, vehicle_events


def test_cranking_dip_is_not_low_battery() -> None:
    readings = [*series(0, 10, battery_v=12.5), *series(10, 13, battery_v=10.5),
                *series(13, 100, battery_v=14.1)]
    _, events = run(LowBatteryDetector(DetectorSettings()), readings)
    assert events == []


def test_sustained_low_battery_fires_once_until_recovered() -> None:
    rng = random.Random(1)
    low = [reading(t, battery_v=11.5 + rng.uniform(-0.1, 0.1)) for t in range(0, 300)]
    readings = [*low, *series(300, 310, battery_v=11.9),  # above threshold, within hysteresis
                *series(310, 400, battery_v=11.5), *series(400, 410, battery_v=12.6),
                *series(410, 480, battery_v=11.0)]
    _, events = run(LowBatteryDetector(DetectorSettings()), readings, pickle_every=17)
    first, second = vehicle_events(events, "low_battery")
    assert (secs(first.started_ms), secs(first.t_ms), first.duration_s) == (0, 60, 60)
    assert first.value is not None
    assert first.value < 11.6
    assert first.threshold == 11.8
    assert (secs(second.started_ms), secs(second.t_ms)) == (410, 470)


def test_gap_restarts_the_duration_count() -> None:
    readings = [*series(0, 50, battery_v=11.0), *series(500, 540, battery_v=11.0)]
    assert run(LowBatteryDetector(DetectorSettings()), readings)[1] == []


def test_coolant_overheat_sustained_and_boundary() -> None:
    settings = DetectorSettings(coolant_overheat_c=110.0, coolant_overheat_min_s=20.0)
    at = [*series(0, 30, coolant_c=90.0), *series(30, 60, coolant_c=110.0)]
    [ev] = vehicle_events(run(CoolantOverheatDetector(settings), at)[1])
    assert ev.event_type == "coolant_overheat"
    assert ev.severity == "critical"
    assert (secs(ev.started_ms), secs(ev.t_ms)) == (30, 50)
    below = [*series(0, 30, coolant_c=90.0), *series(30, 60, coolant_c=109.9)]
    assert run(CoolantOverheatDetector(settings), below)[1] == []


def test_coolant_flapping_around_threshold_gives_one_event() -> None:
    temps = [111, 109, 112, 108, 113, 111, 109.5] * 10
    readings = [reading(t, coolant_c=c) for t, c in enumerate(temps)]
    events = run(CoolantOverheatDetector(DetectorSettings(coolant_overheat_min_s=0.0)),
                 readings)[1]
    assert len(events) == 1
