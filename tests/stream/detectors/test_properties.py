"""Property tests: any in-order sequence of readings (gaps, missing signals, odd values) never
breaks a detector, and a state pickled at any point continues exactly like the original."""

from __future__ import annotations

import itertools
import pickle
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.config import GeofenceSettings
from stream.detectors import build_detectors
from stream.detectors.base import fold
from stream.detectors.config import DetectorSettings
from stream.detectors.geofence import GeofenceDetector
from stream.model import Event, Reading

from .readings import reading


class NoLimits:
    def speed_limit_kph(self, fence_ids: frozenset[Any]) -> float | None:
        return None


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


STEP_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "dt_s": st.one_of(st.sampled_from([0.0, 0.1, 1.0, 1.0, 1.0, 2.5, 30.0, 400.0]),
                      st.floats(0.05, 900.0)),
    "speed_kph": opt(st.floats(0, 250)),
    "ignition": opt(st.booleans()),
    "rpm": opt(st.floats(0, 7000)),
    "coolant_c": opt(st.floats(-40, 140)),
    "battery_v": opt(st.floats(0, 16)),
    "fuel_pct": opt(st.floats(0, 100)),
    "dtcs": opt(st.lists(st.sampled_from(["P0301", "P0217", "U0100"]), max_size=3)),
}
step = st.fixed_dictionaries(STEP_FIELDS)


def to_readings(steps: list[dict[str, Any]]) -> list[Reading]:
    out, t = [], 0.0
    for s in steps:
        t += s["dt_s"]
        signals = {k: v for k, v in s.items() if k != "dt_s" and v is not None}
        out.append(reading(t, **signals))
    return out


class Clock:
    now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


def drive(readings: list[Reading], cut: int | None) -> list[Event]:
    clock = Clock()
    dets = [d for d in build_detectors(DetectorSettings(), NoLimits, clock=clock)
            if d.name != "geofence"]
    states = {d.name: d.initial_state() for d in dets}
    events: list[Event] = []
    for i, r in enumerate(readings):
        if i == cut:
            states = pickle.loads(pickle.dumps(states))  # noqa: S301 - our own snapshot
        clock.now_ms = r.t_ms
        for d in dets:
            states[d.name], out = d.on_reading(states[d.name], r)
            events.extend(out)
            states[d.name], out = d.on_tick(states[d.name], r.t_ms + 500)
            events.extend(out)
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=120), cut_frac=st.floats(0, 1))
def test_any_sequence_runs_and_snapshots_are_transparent(steps: list[dict[str, Any]],
                                                         cut_frac: float) -> None:
    readings = to_readings(steps)
    straight = drive(readings, None)
    resumed = drive(readings, int(cut_frac * len(readings)))
    assert list(map(repr, straight)) == list(map(repr, resumed))
    for e in straight:
        assert e.tenant_id == readings[0].vehicle.tenant_id


class Fences:
    """A geo index for the batch property: no fence contains a reading, the tenant has fences
    or not, and no speed limits."""

    def __init__(self, own_tenant_has_fences: bool) -> None:
        self.own = own_tenant_has_fences

    def has_fences(self, tenant_id: Any) -> bool:
        return self.own

    def get(self, fence_id: Any) -> None:
        return None

    def crossed(self, *_args: Any, **_kw: Any) -> frozenset[Any]:
        # Every segment crosses a fence when the tenant has one: crossings must not be lost.
        return frozenset({uuid.UUID(int=77)}) if self.own else frozenset()

    def speed_limit_kph(self, fence_ids: frozenset[Any]) -> float | None:
        return None


def _phases_to_steps(phases: list[tuple[dict[str, Any], int]]) -> list[dict[str, Any]]:
    """Each phase is one step repeated: sustained stretches make episodes actually happen."""
    out = []
    for fields, times in phases:
        position = fields.pop("position")
        lat, lon = position if position is not None else (None, None)
        out.extend([{**fields, "lat_deg": lat, "lon_deg": lon}] * times)
    return out


phase = st.tuples(st.fixed_dictionaries({
    **STEP_FIELDS,
    "dt_s": st.sampled_from([0.5, 1.0, 5.0, 10.0, 30.0, 150.0, 400.0]),
    "speed_kph": opt(st.sampled_from([0.0, 3.0, 30.0, 118.0, 120.0, 121.0, 123.0, 130.0])),
    "battery_v": opt(st.sampled_from([11.0, 11.7, 11.8, 11.9, 12.2, 12.3, 13.0])),
    "coolant_c": opt(st.sampled_from([90.0, 104.0, 105.0, 106.0, 110.0, 111.0, 115.0])),
    "position": opt(st.tuples(st.floats(52.0, 52.01), st.floats(13.0, 13.01))),
}), st.integers(1, 40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(phases=st.lists(phase, min_size=1, max_size=12),
       cuts=st.lists(st.integers(0, 300), max_size=8), fenced=st.booleans())
def test_on_readings_equals_reading_by_reading(phases: list[tuple[dict[str, Any], int]],
                                               cuts: list[int], fenced: bool) -> None:
    """Every detector's ``on_readings`` over any split into batches gives exactly the state
    and events of `on_reading` one by one (the meaning the per-vehicle step relies on)."""
    readings = to_readings(_phases_to_steps(phases))
    index = Fences(fenced)
    clock = Clock()
    clock.now_ms = readings[-1].t_ms
    dets = [*build_detectors(DetectorSettings(), lambda: index, clock=clock),
            GeofenceDetector(lambda: index, GeofenceSettings())]  # type: ignore[arg-type]
    bounds = sorted({0, len(readings), *(c for c in cuts if c < len(readings))})
    batches = [readings[a:b] for a, b in itertools.pairwise(bounds)]
    checked = 0
    for det in dets:
        on_readings = getattr(det, "on_readings", None)
        if on_readings is None:
            continue
        checked += 1
        # Start from a state that has seen a reading and a tick (as in the stream).
        start, _ = fold(det, det.initial_state(), readings[:1])
        start, _ = det.on_tick(start, readings[0].t_ms + 500)
        one, events_one = fold(det, start, readings)
        state, events = start, []
        for batch in batches:
            state, out = on_readings(state, batch)
            events.extend(out)
        assert state == one, det.name
        assert list(map(repr, events)) == list(map(repr, events_one)), det.name
    assert checked >= 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=60), later_s=st.floats(0, 3600))
def test_detectors_that_skip_ticks_do_nothing_on_a_tick(steps: list[dict[str, Any]],
                                                        later_s: float) -> None:
    """The step skips the tick of a detector with ``ticks = False``: that must lose nothing,
    whatever the detector has seen and however late the tick comes."""
    readings = to_readings(steps)
    clock = Clock()
    skipped = 0
    for det in build_detectors(DetectorSettings(), lambda: Fences(True), clock=clock):
        if getattr(det, "ticks", True):
            continue
        skipped += 1
        state, _ = fold(det, det.initial_state(), readings)
        clock.now_ms = readings[-1].t_ms + int(later_s * 1000)
        before = pickle.dumps(state)
        after, events = det.on_tick(state, clock.now_ms)
        assert events == (), det.name
        assert pickle.dumps(after) == before, det.name
    assert skipped >= 8
