"""Anomaly scoring: robust per-signal scores, k-in-a-row events, and fleet-relative economy."""

from __future__ import annotations

import math
import pickle
import random
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.detectors.anomaly import (
    MAD_TO_SIGMA,
    AnomalyScorer,
    AnomalySettings,
    _robust_center_scale,
)
from stream.economy import ECONOMY_SIGNAL, EconomySample, EconomyTracker, FleetEconomy
from stream.model import AnomalyRecord, Event
from tests.stream.detectors.readings import VEHICLE, reading, run

SETTINGS = AnomalySettings(signals=["coolant_c", "battery_v", "fuel_rate_pct_per_min"],
                           emit_every_samples=10)


def records(events: Sequence[Event], signal: str | None = None) -> list[AnomalyRecord]:
    return [e for e in events if isinstance(e, AnomalyRecord)
            and (signal is None or e.signal == signal)]


def coolant(values: Sequence[float], t0: int = 0, **extra: Any) -> list[Any]:
    return [reading(t0 + i, coolant_c=v, ignition=True, **extra) for i, v in enumerate(values)]


def noisy(n: int, level: float, sd: float, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [round(level + rng.gauss(0, sd)) for _ in range(n)]


def test_steady_noisy_signal_has_scores_but_no_events() -> None:
    _, events = run(AnomalyScorer(SETTINGS), coolant(noisy(600, 90, 0.6)))
    recs = records(events, "coolant_c")
    assert recs  # scores are stored ...
    assert not [r for r in recs if r.is_event]  # ... but nothing fires
    # Rate limit: one row per emit_every_samples once scoring started (after min_samples).
    assert len(recs) == math.ceil((600 - 30) / 10)
    assert all(r.threshold == 6.0 for r in recs)


def test_flat_signal_uses_scale_floor_not_zero_mad() -> None:
    values = [90.0] * 100 + [91.0] * 5
    _, events = run(AnomalyScorer(SETTINGS), coolant(values))
    assert all(math.isfinite(r.score) and r.score < 1 for r in records(events))


def test_overheat_fires_once_after_k_samples_and_all_anomalous_rows_are_kept() -> None:
    values = [*noisy(200, 90, 0.4), *[90 + 1.0 * i for i in range(1, 40)], *[130.0] * 100]
    _, events = run(AnomalyScorer(SETTINGS), coolant(values), pickle_every=9)
    recs = records(events, "coolant_c")
    fired = [r for r in recs if r.is_event]
    assert len(fired) == 1
    above = [r for r in recs if r.score >= r.threshold]
    first_above = above[0]
    assert fired[0].t_ms - first_above.t_ms == 4000  # the 5th anomalous sample in a row
    assert fired[0].details["run"] == 5
    # Every anomalous sample is emitted (none dropped by the rate limit).
    assert len(above) >= 5
    assert all(r.value is not None for r in above)


def test_short_spikes_do_not_fire() -> None:
    values = noisy(300, 90, 0.4)
    for i in range(60, 300, 37):
        values[i:i + 3] = [120, 121, 119]  # 3 < consecutive_samples
    _, events = run(AnomalyScorer(SETTINGS), coolant(values))
    assert [r for r in records(events) if r.is_event] == []


def test_engine_start_is_a_new_battery_regime_not_an_anomaly() -> None:
    rng = random.Random(5)
    parked = [reading(t, battery_v=round(12.55 + rng.gauss(0, 0.02), 2), ignition=False)
              for t in range(300)]
    crank = [reading(300, battery_v=10.8, ignition=True), reading(301, battery_v=11.9,
                                                                ignition=True)]
    running = [reading(t, battery_v=round(14.1 + rng.gauss(0, 0.02), 2), ignition=True)
               for t in range(302, 900)]
    _, events = run(AnomalyScorer(SETTINGS), [*parked, *crank, *running])
    assert [r for r in records(events) if r.is_event] == []


def test_gap_restarts_the_baseline() -> None:
    # Parked for an hour with no data: the cold engine is not compared with the warm one.
    values = [*coolant(noisy(300, 90, 0.4)), *coolant(noisy(300, 20, 0.4, seed=4), t0=3900)]
    _, events = run(AnomalyScorer(SETTINGS), values)
    assert [r for r in records(events) if r.is_event] == []


def fuel_readings(levels: Sequence[float], seed: int = 2) -> list[Any]:
    rng = random.Random(seed)
    return [reading(t, fuel_pct=round(min(100, max(0, lvl + rng.uniform(-2, 2))), 1),
                    speed_kph=40.0, ignition=True) for t, lvl in enumerate(levels)]


def test_fuel_theft_fires_despite_sloshing() -> None:
    consumption = [70 - 0.002 * t for t in range(900)]
    theft = [consumption[-1] - 20 * (t / 120) for t in range(1, 121)]
    after = [theft[-1] - 0.002 * t for t in range(600)]
    _, events = run(AnomalyScorer(SETTINGS), fuel_readings([*consumption, *theft, *after]))
    fired = [r for r in records(events, "fuel_rate_pct_per_min") if r.is_event]
    assert len(fired) == 1
    assert fired[0].value is not None
    assert fired[0].value < -5  # % of tank per minute, falling
    assert 900 <= (fired[0].t_ms - reading(0).t_ms) / 1000 <= 900 + 180
    _, quiet = run(AnomalyScorer(SETTINGS), fuel_readings(consumption * 2))
    assert [r for r in records(quiet) if r.is_event] == []


def test_state_pickles_mid_sequence_without_changing_results() -> None:
    values = [*noisy(200, 90, 0.4), *[125.0] * 30, *noisy(100, 90, 0.4)]
    plain = run(AnomalyScorer(SETTINGS), coolant(values))[1]
    snap = run(AnomalyScorer(SETTINGS), coolant(values), pickle_every=1)[1]
    assert plain == snap
    state, _ = run(AnomalyScorer(SETTINGS), coolant(values[:150]))
    assert len(pickle.dumps(state)) < 4096  # a small snapshot per vehicle


def test_per_signal_threshold_override() -> None:
    settings = AnomalySettings(signals=["coolant_c"], signal_score_thresholds={"coolant_c": 2.0})
    assert settings.threshold_for("coolant_c") == 2.0
    assert AnomalySettings().threshold_for("rpm_roughness") == 4.0
    assert AnomalySettings().threshold_for("battery_v") == 6.0


# -- fleet-relative economy ----------------------------------------------------------------------


def economy_sample(vehicle: int, km_per_pct: float, t_s: int = 0) -> EconomySample:
    return EconomySample(t_ms=reading(t_s).t_ms, tenant_id=VEHICLE.tenant_id,
                         vehicle_id=uuid.UUID(int=500 + vehicle), model_key="Ford Transit",
                         distance_km=50.0, fuel_used_pct=50.0 / km_per_pct, km_per_pct=km_per_pct)


def test_fleet_economy_flags_the_vehicle_far_from_its_peers() -> None:
    fleet = FleetEconomy(AnomalySettings())
    state = fleet.initial_state()
    out: list[AnomalyRecord] = []
    rng = random.Random(6)
    for window in range(5):
        for v, value in enumerate([8.0, 8.3, 7.9, 8.1, 8.2, 7.8]):
            state, recs = fleet.on_sample(
                state, economy_sample(v, value * rng.uniform(0.9, 1.1), t_s=window * 10 + v))
            out += recs
    # Scores only once a vehicle has economy_min_windows samples and 3 peers have too.
    assert len(out) == 3
    assert not any(r.is_event for r in out)
    assert all(r.details["windows"] == 5 for r in out)
    for window in range(4):
        state, recs = fleet.on_sample(state, economy_sample(9, 5.0, t_s=100 + window))
        assert recs == []
    # One odd window (a theft) does not move a vehicle's median.
    state, _ = fleet.on_sample(state, economy_sample(0, 0.4, t_s=110))
    state, [thirsty] = fleet.on_sample(state, economy_sample(9, 5.2, t_s=120))
    assert thirsty.is_event
    assert thirsty.kind == "fleet_relative"
    assert thirsty.signal == ECONOMY_SIGNAL
    assert thirsty.value == 5.0
    assert thirsty.details["z"] < -3.5
    assert thirsty.details["peers"] == 6
    assert 7.8 < thirsty.details["peer_median"] < 8.3
    state = pickle.loads(pickle.dumps(state))  # noqa: S301 - our own snapshot
    _, [normal] = fleet.on_sample(state, economy_sample(2, 8.05, t_s=130))
    assert not normal.is_event


def test_fleet_economy_forgets_stale_peers_and_is_bounded() -> None:
    fleet = FleetEconomy(AnomalySettings(economy_peer_max_age_s=100.0, economy_max_vehicles=4,
                                         economy_min_windows=1))
    state = fleet.initial_state()
    for v in range(4):
        state, _ = fleet.on_sample(state, economy_sample(v, 8.0, t_s=v))
    state, recs = fleet.on_sample(state, economy_sample(10, 8.0, t_s=1000))
    assert recs == []  # every peer is older than 100 s
    assert len(state.latest) == 1
    for v in range(20, 30):
        state, _ = fleet.on_sample(state, economy_sample(v, 8.0, t_s=1000 + v))
    assert len(state.latest) == 4


def test_economy_tracker_emits_per_window_and_restarts_on_refuel() -> None:
    tracker = EconomyTracker(AnomalySettings(economy_window_km=10.0))
    rng = random.Random(9)
    readings = []
    odometer, fuel = 1000.0, 60.0
    for t in range(0, 3000):
        odometer += 72 / 3600   # 72 km/h
        fuel -= 0.004           # 1% of tank per 5 km
        if t == 1500:
            fuel += 30           # refuel
        readings.append(reading(t, odometer_km=odometer, speed_kph=72.0,
                                fuel_pct=round(fuel + rng.uniform(-1.5, 1.5), 1)))
    state = tracker.initial_state()
    samples = []
    for i, r in enumerate(readings):
        state, out = tracker.on_reading(state, r)
        samples += out
        if i % 100 == 0:
            state = pickle.loads(pickle.dumps(state))  # noqa: S301
    assert 4 <= len(samples) <= 6  # 60 km in two 30 km halves, 10 km windows
    for s in samples:
        assert s.model_key == VEHICLE.model_key
        assert s.km_per_pct == pytest.approx(5.0, rel=0.25)


def test_steady_signal_learns_a_lasting_change_after_a_full_window() -> None:
    # A leak of 3 %/min (fast smoothing so the rate steps): suspicious (over half the
    # threshold of 4.8 %/min) but below it. The fuel rate holds suspicious values out of its
    # baseline, then takes the new level in after window_samples of them, so the score falls
    # back instead of staying high forever.
    settings = AnomalySettings(signals=["fuel_rate_pct_per_min"], emit_every_samples=1,
                               fuel_smoothing_s=0.5, fuel_rate_lag_s=1.0)
    levels = [80.0] * 300 + [80.0 - 0.05 * t for t in range(1, 901)]
    readings = [reading(t, fuel_pct=round(v, 2), ignition=True) for t, v in enumerate(levels)]
    _, events = run(AnomalyScorer(settings), readings)
    recs = records(events, "fuel_rate_pct_per_min")
    t0 = reading(0).t_ms
    during = [r.score for r in recs if 310_000 <= r.t_ms - t0 <= 400_000]
    late = [r.score for r in recs if r.t_ms - t0 >= 700_000]
    assert min(during) > 2.4  # held out of the baseline: still suspicious
    assert max(late) < 1.0    # learned
    assert not any(r.is_event for r in recs)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=130),
       floor=st.floats(0, 10))
def test_robust_center_scale_is_the_median_and_scaled_mad(values: list[float],
                                                          floor: float) -> None:
    window = np.asarray(values, dtype=np.float32)
    center, scale = _robust_center_scale(window, floor)
    assert center == pytest.approx(float(np.median(window)), rel=1e-6, abs=1e-6)
    mad = float(np.median(np.abs(window - np.float32(center))))
    assert scale == pytest.approx(max(MAD_TO_SIGMA * mad, floor), rel=1e-6, abs=1e-6)
