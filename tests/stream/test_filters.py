"""GPS sanity filters: pure functions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.protocol import Sample
from stream.config import FilterSettings
from stream.filters import (
    Fix,
    check_position,
    check_time,
    haversine_m,
    is_duplicate,
    strip_position,
)

T0 = 1_780_000_000_000
CFG = FilterSettings()


def test_haversine_one_degree_of_latitude() -> None:
    assert abs(haversine_m(52.0, 13.0, 53.0, 13.0) - 111_195) < 50


def test_time_filters_relative_to_receive_time() -> None:
    s = Sample(seq=1, t_ms=T0)
    assert check_time(s, T0, CFG) is None
    assert (check_time(s, T0 - 301_000, CFG) or "").startswith("future")
    assert (check_time(s, T0 + 31 * 86_400_000, CFG) or "").startswith("past")
    assert check_time(s, T0 - 10**9, FilterSettings(max_future_s=0)) is None


def test_position_filters() -> None:
    ok = Sample(seq=1, t_ms=T0, lat_deg=52.5, lon_deg=13.4, hdop=1.0, sats=8, gps_fix=1)
    assert check_position(ok, None, CFG) is None
    assert check_position(Sample(seq=1, t_ms=T0), None, CFG) is None  # no position, nothing to do
    last = Fix(T0 - 10_000, 52.5, 13.4)
    near = Sample(seq=2, t_ms=T0, lat_deg=52.501, lon_deg=13.4)  # 111 m in 10 s
    far = Sample(seq=2, t_ms=T0, lat_deg=52.6, lon_deg=13.4)  # 11 km in 10 s
    assert check_position(near, last, CFG) is None
    assert (check_position(far, last, CFG) or "").startswith("implied_speed")
    assert check_position(far, last, FilterSettings(max_implied_speed_kph=0)) is None
    few = Sample(seq=1, t_ms=T0, lat_deg=52.5, lon_deg=13.4, sats=2)
    assert (check_position(few, None, FilterSettings(min_satellites=4)) or "").startswith("sat")


def test_strip_keeps_engine_signals_and_duplicate_needs_a_position() -> None:
    s = Sample(seq=1, t_ms=T0, lat_deg=52.5, lon_deg=13.4, alt_m=30.0, heading_deg=90.0,
               speed_kph=50.0, rpm=2000.0, gps_fix=1)
    stripped = strip_position(s)
    assert stripped.lat_deg is None
    assert stripped.alt_m is None
    assert stripped.heading_deg is None
    assert stripped.rpm == 2000.0
    assert stripped.speed_kph == 50.0
    assert is_duplicate(Sample(seq=2, t_ms=T0, lat_deg=52.5, lon_deg=13.4), s)
    assert not is_duplicate(Sample(seq=2, t_ms=T0), Sample(seq=1, t_ms=T0))
    assert not is_duplicate(Sample(seq=2, t_ms=T0 + 1, lat_deg=52.5, lon_deg=13.4), s)


@settings(max_examples=500, deadline=None)
@given(start=st.tuples(st.floats(-89.9, 89.9), st.floats(-180, 180)),
       step=st.tuples(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05)),
       dt_s=st.floats(0, 30), limit=st.floats(1, 400))
def test_implied_speed_shortcut_decides_as_the_great_circle_does(
        start: tuple[float, float], step: tuple[float, float], dt_s: float,
        limit: float) -> None:
    """The bound check only skips the trigonometry: the verdict is the great circle's."""
    (lat, lon), (dlat, dlon) = start, step
    last = Fix(1_780_000_000_000, lat, lon)
    lat2, lon2 = max(-90.0, min(90.0, lat + dlat)), max(-180.0, min(180.0, lon + dlon))
    sample = Sample(seq=2, t_ms=last.t_ms + int(dt_s * 1000), lat_deg=lat2, lon_deg=lon2)
    cfg = FilterSettings(max_implied_speed_kph=limit, zero_position=False)
    kph = haversine_m(lat, lon, lat2, lon2) / max(int(dt_s * 1000) / 1000, 1.0) * 3.6
    rejected = check_position(sample, last, cfg) is not None
    assert rejected == (kph > limit)
