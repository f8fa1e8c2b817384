"""Device offline from processing time; device online when data resumes."""

from __future__ import annotations

import pickle

from stream.detectors.config import DetectorSettings
from stream.detectors.offline import OfflineDetector, OfflineState
from stream.model import Event

from .readings import T0_MS, reading, vehicle_events


class Clock:
    def __init__(self) -> None:
        self.now_ms = T0_MS

    def __call__(self) -> int:
        return self.now_ms


def drive(det: OfflineDetector, clock: Clock, plan: list[tuple[float, bool]],
          state: OfflineState | None = None) -> tuple[OfflineState, list[Event]]:
    """plan: (processing second, reading arrives?) ; a tick every second in between."""
    st = state or det.initial_state()
    events: list[Event] = []
    for t_s, has_data in plan:
        clock.now_ms = T0_MS + round(t_s * 1000)
        if has_data:
            st, out = det.on_reading(st, reading(t_s, speed_kph=10.0))
            events.extend(out)
        st, out = det.on_tick(st, clock.now_ms)
        events.extend(out)
    return st, events


def test_offline_after_silence_then_online() -> None:
    clock = Clock()
    det = OfflineDetector(DetectorSettings(offline_after_s=60.0), clock)
    plan = [(t, t < 10 or t >= 200) for t in range(0, 210)]
    _, events = drive(det, clock, plan)
    off, on = vehicle_events(events)
    assert off.event_type == "device_offline"
    assert off.t_ms == T0_MS + 69_000
    assert off.value == 60.0
    assert off.started_ms == T0_MS + 9_000
    assert on.event_type == "device_online"
    assert on.t_ms == T0_MS + 200_000
    assert on.duration_s == 191.0


def test_no_events_before_first_reading_and_while_data_flows() -> None:
    clock = Clock()
    det = OfflineDetector(DetectorSettings(offline_after_s=60.0), clock)
    _, events = drive(det, clock, [(t, False) for t in range(100)])
    assert events == []
    _, events = drive(det, clock, [(t, t % 30 == 0) for t in range(100, 400)])
    assert events == []


def test_restart_of_the_stream_does_not_mark_devices_offline() -> None:
    clock = Clock()
    det = OfflineDetector(DetectorSettings(offline_after_s=60.0, offline_stream_gap_s=30.0),
                          clock)
    st, events = drive(det, clock, [(t, True) for t in range(20)])
    snapshot = pickle.dumps(st)
    # The stream is down for 10 minutes, then resumes from the snapshot; data comes back
    # 20 s after the restart: no offline/online pair.
    restored = pickle.loads(snapshot)  # noqa: S301 - our own snapshot
    plan = [(t, t >= 640) for t in range(620, 700)]
    _, events = drive(det, clock, plan, restored)
    assert events == []


def test_offline_fires_once() -> None:
    clock = Clock()
    det = OfflineDetector(DetectorSettings(offline_after_s=10.0), clock)
    _, events = drive(det, clock, [(t, t == 0) for t in range(0, 100)])
    assert [e.event_type for e in vehicle_events(events)] == ["device_offline"]
