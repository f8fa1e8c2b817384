"""The exact semantics of the geofence detector (docs/geofencing.md, "Exact semantics").

One test per case the document states, each driving the real `GeofenceDetector` over a real
`FenceIndex` (readings' fences filled by `index.containing`, as the dataflow does); the debounce
fallback is checked with fences loaded from the real PostgreSQL.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geo.config import GeofenceSettings
from geo.fence import Fence
from geo.index import FenceIndex
from geo.store import load_fences
from stream.detectors.geofence import GeofenceDetector
from stream.model import GeofenceEvent, Reading
from tests.conftest import TestDatabase
from tests.geo.helpers import CITY, circle_fence, lonlat, polygon_fence, square_m
from tests.stream.detectors.readings import T0_MS, VEHICLE, reading, run
from tests.stream.detectors.test_geofence import detector, drive, kinds

TENANT = VEHICLE.tenant_id


def geofence_events(events: Any) -> list[GeofenceEvent]:
    return [e for e in events if isinstance(e, GeofenceEvent)]


def at(index: FenceIndex, t_ms: int, lon: float, lat: float) -> Reading:
    """One reading `t_ms` after T0 with its fences looked up in `index`."""
    fences = index.containing([TENANT], np.array([lon]), np.array([lat]))[0]
    return reading(t_ms / 1000, lon_deg=lon, lat_deg=lat, fences=fences)


# ---- dwell counts from the first inside fix ------------------------------------------------


def test_dwell_counts_from_the_first_inside_fix_not_from_the_enter() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0, dwell_s=30.0)
    index = FenceIndex.build([fence])
    # First inside fix at t=3; three fixes confirm the entry at t=5. The dwell comes 30 s after
    # t=3 (t=33), not 30 s after the enter (t=35).
    path = [(-200.0, 0.0)] * 3 + [(0.0, 0.0)] * 40
    _, events = run(detector(index, min_fixes=3), drive(index, path))
    assert kinds(events) == [("enter", 5.0), ("dwell", 33.0)]
    assert geofence_events(events)[1].details["entered_ms"] == T0_MS + 3000


def test_dwell_shorter_than_the_debounce_fires_with_the_enter() -> None:
    # The debounce (20 s) holds the enter back beyond the dwell threshold (10 s): by the time
    # the entry is confirmed the vehicle has been inside 20 s, so both fire on that fix, in
    # that order.
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=20.0, dwell_s=10.0)
    index = FenceIndex.build([fence])
    path = [(-200.0, 0.0)] * 2 + [(0.0, 0.0)] * 30
    _, events = run(detector(index), drive(index, path))
    assert kinds(events) == [("enter", 22.0), ("dwell", 22.0)]
    assert geofence_events(events)[1].details["entered_ms"] == T0_MS + 2000


# ---- the crossing check uses the state before this fix -------------------------------------


def test_crossing_is_judged_against_the_state_at_the_previous_fix() -> None:
    square = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0)
    index = FenceIndex.build([square])
    # Inside, then two fixes outside past the north-east corner: the second confirms the exit,
    # and the segment between them cuts the corner. That segment began during the stay, so it
    # is part of the stay, not a crossing. The next segment cuts the north-west corner after
    # the exit was confirmed: that one is a crossing.
    path = [(0.0, 0.0)] * 3 + [(150.0, 20.0), (20.0, 150.0), (-150.0, 20.0)]
    readings = drive(index, path, step_s=10.0)
    assert [bool(r.fences) for r in readings] == [True] * 3 + [False] * 3
    _, events = run(detector(index), readings)
    assert kinds(events) == [("enter", 10.0), ("exit", 40.0), ("crossing", 50.0)]
    assert geofence_events(events)[2].details["from_ms"] == T0_MS + 40_000


# ---- a vehicle whose first fix is already inside -------------------------------------------


def test_first_fix_already_inside_is_an_entry_at_that_fix() -> None:
    fence = polygon_fence(TENANT, square_m(0, 0, 100), debounce_s=0.0, dwell_s=5.0)
    index = FenceIndex.build([fence])
    readings = drive(index, [(0.0, 0.0)] * 10 + [(-300.0, 0.0)] * 3, t0_s=100.0)
    det = detector(index)
    _, events = run(det, readings)
    # Before its first fix a vehicle is outside every fence, so the debounce runs as for any
    # entry: confirmed by the second fix, dated from the first; the stay counts from there.
    assert kinds(events) == [("enter", 101.0), ("dwell", 105.0), ("exit", 111.0)]
    enter, _, exit_ = geofence_events(events)
    assert enter.details["first_fix_ms"] == T0_MS + 100_000
    assert exit_.dwell_s == 10.0
    # The batch path the dataflow takes gives the same events.
    _, batched = det.on_readings(det.initial_state(), readings)
    assert kinds(batched) == kinds(events)
    # With min_fixes=1 and no debounce the very first fix is the entry.
    _, events = run(detector(index, min_fixes=1), readings)
    assert kinds(events)[0] == ("enter", 100.0)


# ---- the segment between fixes is a great circle -------------------------------------------


def test_segment_between_sparse_fixes_follows_the_great_circle() -> None:
    # Two fixes 1 degree of longitude apart at 60 N (56 km). The great circle between them
    # bulges about 105 m north of the parallel at the middle: tan(lat_mid) =
    # tan(lat) / cos(dlon / 2). A small fence on the arc is crossed; one on the parallel (the
    # straight line in degrees) is not.
    lat = 60.0
    lat_mid = math.degrees(math.atan(math.tan(math.radians(lat)) / math.cos(math.radians(0.5))))
    on_arc = Fence.circle(id=uuid.uuid4(), tenant_id=TENANT, name="arc", lon_deg=10.5,
                          lat_deg=lat_mid, radius_m=30.0, debounce_s=0.0)
    on_chord = Fence.circle(id=uuid.uuid4(), tenant_id=TENANT, name="chord", lon_deg=10.5,
                            lat_deg=lat, radius_m=30.0, debounce_s=0.0)
    index = FenceIndex.build([on_arc, on_chord])
    readings = [at(index, 0, 10.0, lat), at(index, 1_200_000, 11.0, lat)]
    _, events = run(detector(index, crossing_max_gap_s=1800.0), readings)
    assert [(e.event_type, e.geofence_id) for e in geofence_events(events)] == [
        ("crossing", on_arc.id)]


# ---- a gap exactly crossing_max_gap_s ------------------------------------------------------


_SMALL = circle_fence(TENANT, 0, 0, 40.0, debounce_s=0.0)
_SMALL_INDEX = FenceIndex.build([_SMALL])
_WEST, _EAST = lonlat(-100.0, 0.0), lonlat(100.0, 0.0)


@settings(max_examples=150, deadline=None)
@given(max_gap_ms=st.integers(min_value=10, max_value=10_000_000),
       delta_ms=st.integers(min_value=-3, max_value=3))
# Values whose seconds * 1000 is not exactly the integer in floating point: 1.001 s is
# 1000.9999999999999 ms, 2.007 s is 2007.0000000000002 ms.
@example(max_gap_ms=1001, delta_ms=0)
@example(max_gap_ms=2007, delta_ms=0)
def test_gap_of_exactly_crossing_max_gap_still_crosses(max_gap_ms: int, delta_ms: int) -> None:
    readings = [at(_SMALL_INDEX, 0, *_WEST), at(_SMALL_INDEX, max_gap_ms + delta_ms, *_EAST)]
    assert not any(r.fences for r in readings)
    _, events = run(detector(_SMALL_INDEX, crossing_max_gap_s=max_gap_ms / 1000), readings)
    assert kinds(events) == ([("crossing", (max_gap_ms + delta_ms) / 1000)]
                             if delta_ms <= 0 else [])


_SQUARE = polygon_fence(TENANT, square_m(0, 0, 100))  # no debounce_s of its own
_SQUARE_INDEX = FenceIndex.build([_SQUARE])
_OUT, _IN = lonlat(-300.0, 0.0), lonlat(0.0, 0.0)


@settings(max_examples=100, deadline=None)
@given(threshold_ms=st.integers(min_value=1, max_value=10_000_000),
       delta_ms=st.integers(min_value=-3, max_value=3))
@example(threshold_ms=1001, delta_ms=0)
@example(threshold_ms=2007, delta_ms=0)
def test_debounce_and_dwell_thresholds_are_inclusive_to_the_millisecond(
        threshold_ms: int, delta_ms: int) -> None:
    # The same rule as the crossing gap, so that all three thresholds read alike.
    t1 = 1000 + threshold_ms + delta_ms
    readings = [at(_SQUARE_INDEX, 0, *_OUT), at(_SQUARE_INDEX, 1000, *_IN),
                at(_SQUARE_INDEX, t1, *_IN)]
    det = detector(_SQUARE_INDEX, min_fixes=1, debounce_s=threshold_ms / 1000)
    _, events = run(det, readings)
    assert kinds(events) == ([("enter", t1 / 1000)] if delta_ms >= 0 else [])

    dwell = Fence.polygon(id=uuid.uuid4(), tenant_id=TENANT, name="dwell",
                          geometry=_SQUARE.shape, debounce_s=0.0, dwell_s=threshold_ms / 1000)
    index = FenceIndex.build([dwell])
    readings = [at(index, 1000, *_IN), at(index, t1, *_IN)]
    _, events = run(detector(index, min_fixes=1), readings)
    assert kinds(events) == [("enter", 1.0)] + ([("dwell", t1 / 1000)] if delta_ms >= 0 else [])


# ---- debounce_s: NULL in the database means the setting ------------------------------------


@pytest.mark.services
def test_fence_without_debounce_follows_the_setting(database: TestDatabase) -> None:
    zone = shapely.to_wkt(CITY.geometry_to_lonlat(shapely.Polygon(square_m(0, 0, 100))))
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'sem', 'S') "
                           "RETURNING id", (TENANT,)).fetchone()
        assert row is not None
        ids = {}
        for name, value in (("unset", None), ("zero", 0), ("fifteen", 15)):
            # "unset" leaves the column out, as a client that does not know it would.
            cols, vals = ("", "") if value is None else (", debounce_s", ", %s")
            params: tuple[Any, ...] = (TENANT, name, f"SRID=4326;{zone}")
            found = conn.execute(
                f"INSERT INTO geofences (tenant_id, name, kind, geometry{cols}) "
                f"VALUES (%s, %s, 'polygon', ST_GeogFromText(%s){vals}) RETURNING id",
                params if value is None else (*params, value)).fetchone()
            assert found is not None
            ids[found[0]] = name
    snapshot = load_fences(database.ingest_url)
    assert {ids[f.id]: f.debounce_s for f in snapshot.fences} == {
        "unset": None, "zero": 0.0, "fifteen": 15.0}
    index = FenceIndex.build(snapshot.fences)
    path = [(-300.0, 0.0)] * 2 + [(0.0, 0.0)] * 30
    det = GeofenceDetector(lambda: index, GeofenceSettings(debounce_s=10.0))
    _, events = run(det, drive(index, path))
    enters = {ids[e.geofence_id]: (e.t_ms - T0_MS) / 1000 for e in geofence_events(events)
              if e.event_type == "enter"}
    # Inside from t=2: the column's own 0 and 15 s win; the unset fence takes the 10 s setting.
    assert enters == {"zero": 3.0, "unset": 12.0, "fifteen": 17.0}
