"""Idling episodes: engine on, standing, for at least idle_min_s."""

from __future__ import annotations

from stream.detectors.config import DetectorSettings
from stream.detectors.idling import IdlingDetector

from .readings import reading, run, secs, series, vehicle_events


def detector(**kw: float) -> IdlingDetector:
    return IdlingDetector(DetectorSettings(**{"idle_min_s": 300.0, **kw}))  # type: ignore[arg-type]


def test_long_idle_is_one_episode() -> None:
    readings = [*series(0, 60, speed_kph=40.0, ignition=True),
                *series(60, 500, speed_kph=0.0, ignition=True),
                *series(500, 520, speed_kph=30.0, ignition=True)]
    _, events = run(detector(), readings, pickle_every=13)
    [ev] = vehicle_events(events, "idling")
    assert (secs(ev.started_ms), secs(ev.ended_ms), ev.duration_s) == (60, 500, 440)
    assert ev.value == 440
    assert ev.threshold == 300


def test_short_stop_and_engine_off_are_not_idling() -> None:
    readings = [*series(0, 100, speed_kph=0.0, ignition=True),   # 100 s: too short
                *series(100, 800, speed_kph=0.0, ignition=False),  # parked, engine off
                reading(800, speed_kph=0.0, ignition=True)]
    _, events = run(detector(), readings)
    assert vehicle_events(events) == []


def test_creeping_below_idle_speed_and_rpm_fallback() -> None:
    # No ignition signal: rpm says the engine runs; 2 km/h is still idling.
    readings = [*series(0, 400, speed_kph=2.0, rpm=800.0), reading(400, speed_kph=20.0, rpm=1500.0)]
    [ev] = vehicle_events(run(detector(), readings)[1])
    assert ev.duration_s == 400


def test_exact_minimum_counts() -> None:
    readings = [*series(0, 300, speed_kph=0.0, ignition=True),
                reading(300, speed_kph=10.0, ignition=True)]
    assert len(vehicle_events(run(detector(), readings)[1])) == 1
    readings[-1] = reading(299.5, speed_kph=10.0, ignition=True)
    assert vehicle_events(run(detector(), readings[:-2] + readings[-1:])[1]) == []


def test_gap_ends_episode_at_last_idle_reading() -> None:
    readings = [*series(0, 400, speed_kph=0.0, ignition=True),
                *series(1000, 1010, speed_kph=50.0, ignition=True)]
    [ev] = vehicle_events(run(detector(), readings)[1])
    assert (secs(ev.started_ms), secs(ev.ended_ms)) == (0, 399)
