"""Overspeed: one episode event with start, end, max speed and duration."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import pytest

from stream.detectors.config import DetectorSettings
from stream.detectors.overspeed import OverspeedDetector

from .readings import Reading, reading, run, secs, series, vehicle_events

SCHOOL = uuid.UUID(int=100)
PARK = uuid.UUID(int=101)


class FakeIndex:
    """Speed limits per fence; the lowest applies where fences overlap (like geo.index)."""

    def __init__(self, limits: dict[uuid.UUID, float]) -> None:
        self.limits = limits

    def speed_limit_kph(self, fence_ids: Iterable[uuid.UUID]) -> float | None:
        values = [self.limits[f] for f in fence_ids if f in self.limits]
        return min(values) if values else None


def detector(**kw: float) -> OverspeedDetector:
    settings = DetectorSettings(**{"overspeed_limit_kph": 100.0, **kw})  # type: ignore[arg-type]
    index = FakeIndex({SCHOOL: 30.0})
    return OverspeedDetector(settings, lambda: index)


def calm(t0: float, seconds: float = 40.0) -> list[Reading]:
    """Below the limit for longer than the merge window: pending episodes are reported."""
    return series(t0, t0 + seconds, speed_kph=50.0)


def test_one_episode_per_stretch_not_per_point() -> None:
    readings = [*series(0, 10, speed_kph=90.0), *series(10, 40, speed_kph=110.0),
                reading(40, speed_kph=125.0), *series(41, 60, speed_kph=105.0),
                *series(60, 70, speed_kph=80.0), *calm(70)]
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events, "overspeed")
    assert (secs(ev.started_ms), secs(ev.ended_ms), ev.duration_s) == (10, 60, 50)
    assert ev.value == 125.0
    assert ev.threshold == 100.0
    assert ev.t_ms == ev.started_ms
    assert ev.geofence_id is None
    assert ev.details["limit_source"] == "global"


def test_short_spike_below_min_duration_is_ignored() -> None:
    readings = [*series(0, 10, speed_kph=90.0), *series(10, 15, speed_kph=130.0),
                *series(15, 30, speed_kph=90.0)]
    _, events = run(detector(), readings)
    assert vehicle_events(events) == []


def test_hysteresis_keeps_one_episode_while_jittering_at_the_limit() -> None:
    speeds = [101, 99, 102, 98.5, 101, 99.5, 100.5, 98, 101, 99, 101, 99, 101, 100.1, 99]
    readings = [reading(i, speed_kph=v) for i, v in enumerate(speeds)]
    readings.extend(calm(len(speeds)))
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events, "overspeed")
    assert (secs(ev.started_ms), secs(ev.ended_ms)) == (0, len(speeds))


def test_geofence_limit_overrides_the_global_limit() -> None:
    readings = [*series(0, 5, speed_kph=45.0),
                *[reading(t, speed_kph=45.0, fences=[SCHOOL, PARK]) for t in range(5, 30)],
                *[reading(t, speed_kph=45.0) for t in range(30, 35)], *calm(35)]
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events, "overspeed")
    assert ev.threshold == 30.0
    assert ev.geofence_id == SCHOOL
    assert ev.details["limit_source"] == "geofence"
    assert (secs(ev.started_ms), secs(ev.ended_ms)) == (5, 30)


def test_global_limit_zero_disables_global_check() -> None:
    _, events = run(detector(overspeed_limit_kph=0.0), series(0, 60, speed_kph=200.0))
    assert vehicle_events(events) == []


def test_gap_ends_episode_at_last_reading_before_it() -> None:
    readings = [*series(0, 20, speed_kph=120.0), *series(200, 230, speed_kph=120.0),
                *calm(230)]
    _, events = run(detector(), readings)
    first, second = vehicle_events(events, "overspeed")
    assert (secs(first.started_ms), secs(first.ended_ms)) == (0, 19)
    assert (secs(second.started_ms), secs(second.ended_ms)) == (200, 230)


def test_readings_without_speed_are_ignored() -> None:
    readings = [*series(0, 30, speed_kph=120.0), reading(30, coolant_c=90.0), *calm(31)]
    _, events = run(detector(), readings)
    [ev] = vehicle_events(events, "overspeed")
    assert secs(ev.ended_ms) == 31


@pytest.mark.parametrize("pickle_every", [1, 7])
def test_state_survives_pickling_mid_episode(pickle_every: int) -> None:
    readings = [*series(0, 10, speed_kph=90.0), *series(10, 40, speed_kph=110.0),
                *series(40, 50, speed_kph=80.0), *calm(50)]
    _, plain = run(detector(), readings)
    _, pickled = run(detector(), readings, pickle_every=pickle_every)
    assert plain == pickled
    assert len(plain) == 1


def test_stretches_close_together_are_one_episode() -> None:
    # Slowing for a corner for 15 s between two stretches: one episode of two stretches.
    readings = [*series(0, 30, speed_kph=115.0), *series(30, 45, speed_kph=40.0),
                *series(45, 80, speed_kph=118.0), *series(80, 100, speed_kph=60.0)]
    _, events = run(detector(), readings)
    assert events == []  # still inside the merge window after the last stretch
    _, events = run(detector(), [*readings, *calm(100)])
    [ev] = vehicle_events(events)
    assert (secs(ev.started_ms), secs(ev.ended_ms), ev.value) == (0, 80, 118.0)
    assert ev.details["stretches"] == 2


def test_exactly_at_limit_is_not_over() -> None:
    _, events = run(detector(), [*series(0, 60, speed_kph=100.0), reading(60, speed_kph=0.0)])
    assert events == []



def test_without_a_loaded_index_the_global_limit_applies() -> None:
    det = OverspeedDetector(DetectorSettings(overspeed_limit_kph=100.0), lambda: None)
    readings = [*[reading(t, speed_kph=110.0, fences=[SCHOOL]) for t in range(30)], *calm(30)]
    [ev] = vehicle_events(run(det, readings)[1])
    assert ev.threshold == 100.0
    assert ev.geofence_id is None
