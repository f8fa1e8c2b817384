"""Property tests: any in-order sequence of readings (gaps, missing signals, odd values) never
breaks a detector, and a state pickled at any point continues exactly like the original."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.detectors import build_detectors
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading

from .readings import reading


class NoLimits:
    def speed_limit_kph(self, fence_ids: frozenset[Any]) -> float | None:
        return None


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


step = st.fixed_dictionaries({
    "dt_s": st.one_of(st.sampled_from([0.0, 0.1, 1.0, 1.0, 1.0, 2.5, 30.0, 400.0]),
                      st.floats(0.05, 900.0)),
    "speed_kph": opt(st.floats(0, 250)),
    "ignition": opt(st.booleans()),
    "rpm": opt(st.floats(0, 7000)),
    "coolant_c": opt(st.floats(-40, 140)),
    "battery_v": opt(st.floats(0, 16)),
    "fuel_pct": opt(st.floats(0, 100)),
    "dtcs": opt(st.lists(st.sampled_from(["P0301", "P0217", "U0100"]), max_size=3)),
})


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
