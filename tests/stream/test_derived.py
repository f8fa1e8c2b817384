"""What each sample accounts for in the rollups (stream.derived)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from core.protocol import Sample
from stream.config import RollupSettings
from stream.derived import derive
from stream.filters import Fix, haversine_m

CFG = RollupSettings(overspeed_kph=90.0, high_rpm=3000.0, max_gap_s=60.0)
T0 = 1_780_000_000_000


def test_first_sample_has_only_its_own_flags() -> None:
    d = derive(Sample(seq=1, t_ms=T0, speed_kph=95.0, rpm=2000.0), None, None, CFG)
    assert (d.interval_s, d.distance_m, d.fuel_used_pct) == (None, None, None)
    assert (d.over_speed, d.over_rpm) == (True, False)


def test_odometer_wins_over_gps_and_a_refuel_is_not_use() -> None:
    prev = Sample(seq=1, t_ms=T0, odometer_km=100.0, fuel_pct=50.0, lat_deg=52.5, lon_deg=13.4)
    cur = Sample(seq=2, t_ms=T0 + 10_000, odometer_km=100.25, fuel_pct=49.5, lat_deg=52.6,
                 lon_deg=13.4)
    d = derive(cur, prev, Fix(T0, 52.5, 13.4), CFG)
    assert d.interval_s == 10.0
    assert d.distance_m is not None
    assert math.isclose(d.distance_m, 250.0, abs_tol=1e-6)
    assert d.fuel_used_pct == 0.5
    refuel = derive(Sample(seq=3, t_ms=T0 + 20_000, fuel_pct=90.0), cur, None, CFG)
    assert refuel.fuel_used_pct == 0.0


def test_gps_distance_without_an_odometer_and_not_across_a_long_gap() -> None:
    prev = Sample(seq=1, t_ms=T0, lat_deg=52.5, lon_deg=13.4)
    cur = Sample(seq=2, t_ms=T0 + 5_000, lat_deg=52.5001, lon_deg=13.4)
    d = derive(cur, prev, Fix(T0, 52.5, 13.4), CFG)
    assert d.distance_m == haversine_m(52.5, 13.4, 52.5001, 13.4)
    late = Sample(seq=3, t_ms=T0 + 3_600_000, lat_deg=52.6, lon_deg=13.4)
    gap = derive(late, cur, Fix(cur.t_ms, 52.5001, 13.4), CFG)
    assert (gap.interval_s, gap.distance_m) == (None, None)  # not observed: not counted


def test_an_odometer_reset_is_not_distance() -> None:
    prev = Sample(seq=1, t_ms=T0, odometer_km=120_000.0)
    assert derive(Sample(seq=2, t_ms=T0 + 1000, odometer_km=0.5), prev, None, CFG
                  ).distance_m is None
    assert derive(Sample(seq=2, t_ms=T0 + 1000, odometer_km=120_050.0), prev, None, CFG
                  ).distance_m is None  # 50 km in a second


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(dt_ms=st.integers(min_value=-10**9, max_value=10**9), odo=st.none() | finite,
       odo2=st.none() | finite, fuel=st.none() | finite, fuel2=st.none() | finite)
def test_derived_values_are_never_negative_or_nan(dt_ms: int, odo: float | None,
                                                  odo2: float | None, fuel: float | None,
                                                  fuel2: float | None) -> None:
    prev = Sample(seq=1, t_ms=T0, odometer_km=odo, fuel_pct=fuel)
    d = derive(Sample(seq=2, t_ms=T0 + dt_ms, odometer_km=odo2, fuel_pct=fuel2), prev, None, CFG)
    for value in (d.interval_s, d.distance_m, d.fuel_used_pct):
        assert value is None or (value >= 0 and not math.isnan(value))
    assert d.interval_s is None or d.interval_s <= CFG.max_gap_s
