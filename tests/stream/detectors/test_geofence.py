"""GeofenceDetector: enter/exit/dwell/crossing with debounce, restarts and fence reloads."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.config import GeofenceSettings
from geo.fence import Fence
from geo.index import FenceIndex
from stream.detectors.geofence import GeofenceDetector, GeofenceState
from stream.model import Event, GeofenceEvent, Reading
from tests.geo.helpers import circle_fence, lonlat, polygon_fence, square_m
from tests.stream.detectors.readings import T0_MS, VEHICLE, reading, run

TENANT = VEHICLE.tenant_id


def drive(index: FenceIndex, path_m: Sequence[tuple[float, float]], *, t0_s: float = 0.0,
          step_s: float = 1.0, speed_kph: float = 30.0) -> list[Reading]:
    """Readings along `path_m` (metres from the city origin), fences filled like the dataflow."""
    pts = [lonlat(x, y) for x, y in path_m]
    lon = np.array([p[0] for p in pts])
    lat = np.array([p[1] for p in pts])
    fences = index.containing([TENANT] * len(pts), lon, lat)
    return [reading(t0_s + i * step_s, lon_deg=p[0], lat_deg=p[1], speed_kph=speed_kph,
                    fences=f) for i, (p, f) in enumerate(zip(pts, fences, strict=True))]


def kinds(events: Sequence[Event]) -> list[tuple[str, float]]:
    """(event type, seconds after T0) of the geofence events."""
    return [(e.event_type, (e.t_ms - T0_MS) / 1000) for e in events
            if isinstance(e, GeofenceEvent)]


def detector(index: FenceIndex, **overrides: object) -> GeofenceDetector:
    return GeofenceDetector(lambda: index, GeofenceSettings(**overrides))  # type: ignore[arg-type]


def test_enter_and_exit_confirmed_by_two_fixes() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0)
    index = FenceIndex.build([fence])
    path = [(-275 + 50 * i, 0) for i in range(13)]  # crosses x = -100 .. 100
    _, events = run(detector(index), drive(index, path))
    assert kinds(events) == [("enter", 5.0), ("exit", 9.0)]
    enter, exit_ = (e for e in events if isinstance(e, GeofenceEvent))
    assert enter.details["first_fix_ms"] == T0_MS + 4000
    assert exit_.dwell_s == 4.0  # first inside fix (4 s) to first outside fix (8 s)
    assert enter.seq == 50
    assert enter.speed_kph == 30.0
    assert enter.geofence_id == fence.id


def test_boundary_jitter_does_not_flap() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0)
    index = FenceIndex.build([fence])
    # Parked on the edge: fixes alternate 3 m inside and 3 m outside for two minutes.
    path = [(97.0 if i % 2 else 103.0, 0.0) for i in range(120)]
    _, events = run(detector(index), drive(index, path))
    assert kinds(events) == []


def test_per_fence_debounce_time() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=10.0)
    index = FenceIndex.build([fence])
    jitter = [(95.0 if i % 3 == 0 else 105.0, 0.0) for i in range(30)]
    stay = [(50.0, 0.0)] * 20
    readings = drive(index, jitter + stay)
    _, events = run(detector(index, min_fixes=1), readings)
    # Inside from t=30 onwards; confirmed once 10 s have passed, at the fix of t=40.
    assert kinds(events) == [("enter", 40.0)]


def test_dwell_once_per_stay_and_exit_carries_the_stay() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0, dwell_s=30.0)
    index = FenceIndex.build([fence])
    path = [(-200.0, 0.0)] * 3 + [(0.0, 0.0)] * 60 + [(-200.0, 0.0)] * 3
    _, events = run(detector(index), drive(index, path))
    assert kinds(events) == [("enter", 4.0), ("dwell", 33.0), ("exit", 64.0)]
    dwell = [e for e in events if isinstance(e, GeofenceEvent)][1]
    assert dwell.dwell_s == 30.0
    assert [e for e in events if isinstance(e, GeofenceEvent)][2].dwell_s == 60.0


def test_no_dwell_when_leaving_just_before_the_threshold() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0, dwell_s=30.0)
    index = FenceIndex.build([fence])
    # Inside from t=3 to t=31 (28 s), outside from t=32: the dwell threshold (t=33) falls
    # on an outside fix while the exit is pending.
    path = [(-200.0, 0.0)] * 3 + [(0.0, 0.0)] * 29 + [(-200.0, 0.0)] * 5
    _, events = run(detector(index, min_fixes=3), drive(index, path))
    assert kinds(events) == [("enter", 5.0), ("exit", 34.0)]


def test_hole_exit_and_reentry() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 500), [square_m(0, 0, 200)], debounce_s=0.0)
    index = FenceIndex.build([fence])
    path = [(-400.0, 0.0)] * 3 + [(0.0, 0.0)] * 3 + [(400.0, 0.0)] * 3
    _, events = run(detector(index), drive(index, path))
    assert kinds(events) == [("enter", 1.0), ("exit", 4.0), ("enter", 7.0)]


def test_crossing_when_sparse_fixes_skip_a_small_fence() -> None:
    small = circle_fence(TENANT, 0, 0, 40.0, debounce_s=0.0)
    aside = circle_fence(TENANT, 0, 400, 40.0, debounce_s=0.0)
    index = FenceIndex.build([small, aside])
    # One fix every 10 s at 36 km/h: 100 m apart, so no fix lands in the 80 m circle.
    path = [(-250.0 + 100 * i, 0.0) for i in range(6)]
    _, events = run(detector(index), drive(index, path, step_s=10.0))
    crossings = [e for e in events if isinstance(e, GeofenceEvent)]
    assert [(e.event_type, e.geofence_id) for e in crossings] == [("crossing", small.id)]
    assert crossings[0].details["from_ms"] == T0_MS + 20_000
    # The same jump after a gap longer than crossing_max_gap_s proves nothing.
    _, events = run(detector(index, crossing_max_gap_s=5.0), drive(index, path, step_s=10.0))
    assert kinds(events) == []


def test_no_crossing_for_a_fence_the_vehicle_is_in() -> None:
    big = polygon_fence(TENANT, square_m(0, 0, 1000), debounce_s=0.0)
    index = FenceIndex.build([big])
    path = [(-900.0 + 300 * i, 0.0) for i in range(7)]
    _, events = run(detector(index), drive(index, path, step_s=10.0))
    assert kinds(events) == [("enter", 10.0)]


def test_restart_from_pickled_state_gives_no_spurious_or_lost_events() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0, dwell_s=20.0)
    index = FenceIndex.build([fence])
    path = ([(-300.0, 0.0)] * 5 + [(0.0, 0.0)] * 40 + [(-300.0, 0.0)] * 5
            + [(0.0, 0.0)] * 5 + [(97.0 if i % 2 else 103.0, 0.0) for i in range(20)])
    readings = drive(index, path)
    _, straight = run(detector(index), readings)
    # The jitter at the end keeps the second stay open: it reaches its dwell too.
    assert kinds(straight) == [("enter", 6.0), ("dwell", 25.0), ("exit", 46.0), ("enter", 51.0),
                               ("dwell", 70.0)]
    # Snapshot after every reading, and restart a fresh detector from it each time.
    state: GeofenceState | None = None
    restarted: list[Event] = []
    for r in readings:
        det = detector(index)
        st = det.initial_state() if state is None else state
        st, out = det.on_reading(st, r)
        restarted.extend(out)
        state = pickle.loads(pickle.dumps(st))  # noqa: S301 - our own snapshot
    assert kinds(restarted) == kinds(straight)
    assert len(pickle.dumps(state)) < 1000


def test_fence_removed_by_reload_closes_the_stay() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0)
    current = {"index": FenceIndex.build([fence])}
    det = GeofenceDetector(lambda: current["index"], GeofenceSettings())
    readings = drive(current["index"], [(0.0, 0.0)] * 5)
    state, events = run(det, readings[:3])
    assert kinds(events) == [("enter", 1.0)]
    current["index"] = FenceIndex.build([])
    state, events = run(det, readings[3:], state=state)
    assert kinds(events) == [("exit", 3.0)]
    assert isinstance(events[0], GeofenceEvent)
    assert events[0].details == {"reason": "fence_removed"}
    assert state.tracks == {}


def test_readings_without_fix_and_ticks_change_nothing() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0)
    index = FenceIndex.build([fence])
    det = detector(index)
    state, _ = run(det, drive(index, [(0.0, 0.0)] * 3))
    after, out = det.on_reading(state, reading(10.0, rpm=900.0))
    assert after is state
    assert out == ()
    assert det.on_tick(state, T0_MS + 10**7) == (state, ())
    assert isinstance(next(iter(state.tracks)), uuid.UUID)
    assert isinstance(fence, Fence)


@settings(max_examples=60, deadline=None)
@given(inside=st.lists(st.booleans(), min_size=1, max_size=60),
       steps=st.lists(st.integers(min_value=1, max_value=20), min_size=60, max_size=60),
       min_fixes=st.integers(min_value=1, max_value=3),
       debounce_s=st.sampled_from([0.0, 5.0, 15.0]))
def test_properties_alternation_debounce_and_restart(inside: list[bool], steps: list[int],
                                                     min_fixes: int, debounce_s: float) -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=debounce_s, dwell_s=30.0)
    index = FenceIndex.build([fence])
    times = np.cumsum([0, *steps[: len(inside) - 1]]).tolist()
    pts = [(0.0, 0.0) if i else (-300.0, 0.0) for i in inside]
    readings = [drive(index, [p], t0_s=t)[0] for p, t in zip(pts, times, strict=True)]
    det = detector(index, min_fixes=min_fixes)
    _, events = run(det, readings)
    _, restarted = run(det, readings, pickle_every=1)
    assert kinds(restarted) == kinds(events)
    changes = [e for e in events if isinstance(e, GeofenceEvent) and e.event_type != "dwell"]
    assert [e.event_type for e in changes] == ["enter", "exit"] * (len(changes) // 2) + (
        ["enter"] if len(changes) % 2 else [])
    for e in changes:
        # The confirming fix and the min_fixes - 1 before it all saw the new state, and the
        # new state had lasted debounce_s.
        k = next(i for i, r in enumerate(readings) if r.t_ms == e.t_ms)
        window = inside[k - min_fixes + 1 : k + 1]
        assert len(window) == min_fixes
        assert all(w == (e.event_type == "enter") for w in window)
        assert (e.t_ms - int(e.details["first_fix_ms"])) >= debounce_s * 1000
