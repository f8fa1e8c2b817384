"""Fuel economy against peers: the fleet-relative anomaly score.

It needs other vehicles' data, which a per-vehicle step never sees, so it is split in two
steps the dataflow runs in different places:

1. `EconomyTracker`, keyed by vehicle (next to the detectors): accumulates distance and fuel
   used and, after every `economy_window_km`, emits an `EconomySample` (km per % of tank).
2. `FleetEconomy`, keyed by ``(tenant, model_key)``: keeps the latest sample of every vehicle
   of that model and scores each new sample against its peers (robust z-score over the
   peers' values), returning an `AnomalyRecord` of kind ``fleet_relative``.

Only the small per-window summaries cross the re-keying, never the raw readings. The
settings are `AnomalySettings` (its `economy_*` fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Final
from uuid import UUID

import msgspec
import numpy as np

from stream.detectors.anomaly import (
    MAD_TO_SIGMA,
    AnomalySettings,
)
from stream.model import AnomalyRecord, Reading

ECONOMY_SIGNAL: Final = "fuel_economy_km_per_pct"
"""The signal name of a fleet-relative fuel economy anomaly."""
SETTLE_TIME_CONSTANTS: Final = 4
"""Exponential smoothing has forgotten its starting value to 2 % after four time constants."""
SETTLE_RISE_PCT: Final = 0.5
"""A smoothed fuel level still rising by more than this (% of tank) is still being filled."""


@dataclass(frozen=True, slots=True)
class EconomySample:
    """One vehicle's fuel economy over one window: the unit that crosses to the model step."""

    t_ms: int
    """Event time of the window's end."""
    tenant_id: UUID
    vehicle_id: UUID
    model_key: str
    distance_km: float
    fuel_used_pct: float
    km_per_pct: float


class EconomyAccumulator(msgspec.Struct, frozen=True, gc=False):
    """Per-vehicle state of `EconomyTracker`: the open window (a struct: one is made per
    reading with a fuel level)."""

    start_ms: int | None = None
    last_ms: int | None = None
    distance_km: float = 0.0
    odometer_km: float | None = None
    fuel_start_pct: float | None = None
    fuel_smooth_pct: float | None = None
    fuel_low_pct: float | None = None
    """Lowest smoothed level of the window (a rise above it by `economy_refuel_pct` = refuel)."""
    settled_ms: int | None = None
    """Until this event time the smoothed level is still settling (start, refuel): the
    window keeps restarting so it begins from a trustworthy level."""


class EconomyTracker:
    """Keyed by vehicle: turns readings into `EconomySample`s for `FleetEconomy`.

    Distance comes from odometer deltas when the sample has an odometer, otherwise from
    speed integrated over gaps up to `economy_max_gap_s`. Fuel used is the fall of the
    exponentially smoothed fuel level over the window; a refuel restarts the window.
    Vehicles without a `model_key` have no peers and are skipped.
    """

    name = "fleet_economy"

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self._s = settings or AnomalySettings()

    def initial_state(self) -> EconomyAccumulator:
        """No window open."""
        return EconomyAccumulator()

    def on_reading(self, state: EconomyAccumulator,
                   reading: Reading) -> tuple[EconomyAccumulator, list[EconomySample]]:
        """Advance the window; return a sample when it is complete."""
        sample = reading.sample
        model = reading.vehicle.model_key
        if model is None or sample.fuel_pct is None:
            return state, []
        t = sample.t_ms
        s = self._s
        settle_ms = round(SETTLE_TIME_CONSTANTS * s.fuel_smoothing_s * 1000)
        if state.last_ms is None or state.fuel_smooth_pct is None:
            level = float(sample.fuel_pct)
            return EconomyAccumulator(t, t, 0.0, sample.odometer_km, level, level, level,
                                      t + settle_ms), []
        dt_s = (t - state.last_ms) / 1000
        if dt_s <= 0:
            return state, []
        distance = state.distance_km
        odometer = state.odometer_km
        if sample.odometer_km is not None and odometer is not None:
            distance += max(0.0, sample.odometer_km - odometer)
        elif sample.speed_kph is not None and dt_s <= s.economy_max_gap_s:
            distance += sample.speed_kph * dt_s / 3600
        if sample.odometer_km is not None:
            odometer = sample.odometer_km
        alpha = 1 - math.exp(-dt_s / s.fuel_smoothing_s)
        smooth = state.fuel_smooth_pct + alpha * (sample.fuel_pct - state.fuel_smooth_pct)
        low = min(state.fuel_low_pct if state.fuel_low_pct is not None else smooth, smooth)
        restarted = self._restart(state, t, odometer, smooth=smooth, low=low,
                                  settle_ms=settle_ms)
        if restarted is not None:
            return restarted, []
        state = EconomyAccumulator(state.start_ms, t, distance, odometer, state.fuel_start_pct,
                                   smooth, low)
        used = (state.fuel_start_pct or smooth) - smooth
        if distance < s.economy_window_km or used < s.economy_min_fuel_pct:
            return state, []
        out = EconomySample(t, reading.vehicle.tenant_id, reading.vehicle.vehicle_id, model,
                            round(distance, 3), round(used, 3), distance / used)
        return EconomyAccumulator(t, t, 0.0, odometer, smooth, smooth, smooth), [out]

    def _restart(self, state: EconomyAccumulator, t: int, odometer: float | None, *,
                 smooth: float, low: float, settle_ms: int) -> EconomyAccumulator | None:
        """The restarted window while the level is not usable (refuel, settling), else None.

        While settling, `fuel_start_pct` holds the level when settling began. A level still
        rising (a refuel in progress) starts settling over; once it has held for the settle
        time, the window opens at the current level.
        """
        if smooth - low >= self._s.economy_refuel_pct:
            # Refuelled mid-window: what was used before cannot be measured from levels.
            return EconomyAccumulator(t, t, 0.0, odometer, smooth, smooth, smooth,
                                      t + settle_ms)
        if state.settled_ms is None:
            return None
        anchor = state.fuel_start_pct if state.fuel_start_pct is not None else smooth
        if smooth > anchor + SETTLE_RISE_PCT:
            return EconomyAccumulator(t, t, 0.0, odometer, smooth, smooth, smooth,
                                      t + settle_ms)
        if t < state.settled_ms:
            return EconomyAccumulator(t, t, 0.0, odometer, anchor, smooth, smooth,
                                      state.settled_ms)
        return EconomyAccumulator(t, t, 0.0, odometer, smooth, smooth, smooth, None)


@dataclass(frozen=True, slots=True)
class FleetEconomyState:
    """Per-model state of `FleetEconomy`: per vehicle, the time of its latest sample and its
    last `economy_history_windows` km-per-% values."""

    latest: dict[UUID, tuple[int, tuple[float, ...]]] = field(default_factory=dict)


class FleetEconomy:
    """Keyed by ``(tenant_id, model_key)``: scores a vehicle's fuel economy against its peers.

    `on_sample(state, sample)` returns the new state and one `AnomalyRecord` (kind
    ``fleet_relative``, signal ``fuel_economy_km_per_pct``) once at least
    `economy_min_peers` other vehicles of the same model have a recent sample. The score is
    the absolute robust z-score of the vehicle's economy against the peers' median and MAD,
    where every vehicle (this one and each peer) counts with the median of its last
    `economy_history_windows` samples: a persistent difference (a failing injector, a heavy
    foot) is what this score is for; one odd window (a detour, a theft, which the fuel
    detector reports) is not. `value` is that median; `details` carries the signed z
    (negative: worse than peers), the peer median and count, and this window's own value.
    """

    name = "fleet_economy_model"

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self._s = settings or AnomalySettings()

    def initial_state(self) -> FleetEconomyState:
        """No vehicles yet."""
        return FleetEconomyState()

    def on_sample(self, state: FleetEconomyState,
                  sample: EconomySample) -> tuple[FleetEconomyState, list[AnomalyRecord]]:
        """Record the vehicle's economy and score it against the other vehicles of the model."""
        s = self._s
        oldest_ms = sample.t_ms - s.economy_peer_max_age_s * 1000
        latest = {vid: v for vid, v in state.latest.items() if v[0] >= oldest_ms}
        peers = np.array([median(v[1]) for vid, v in latest.items()
                          if vid != sample.vehicle_id and len(v[1]) >= s.economy_min_windows])
        own = (*latest.get(sample.vehicle_id, (0, ()))[1],
               sample.km_per_pct)[-s.economy_history_windows:]
        latest[sample.vehicle_id] = (sample.t_ms, own)
        if len(latest) > s.economy_max_vehicles:
            stalest = min(latest, key=lambda vid: latest[vid][0])
            del latest[stalest]
        new_state = FleetEconomyState(latest)
        if len(peers) < s.economy_min_peers or len(own) < s.economy_min_windows:
            return new_state, []
        value = float(median(own))
        center = float(np.median(peers))
        scale = max(MAD_TO_SIGMA * float(np.median(np.abs(peers - center))),
                    s.economy_scale_floor_frac * abs(center), 1e-9)
        z = (value - center) / scale
        score = abs(z)
        return new_state, [AnomalyRecord(
            t_ms=sample.t_ms, tenant_id=sample.tenant_id, vehicle_id=sample.vehicle_id,
            signal=ECONOMY_SIGNAL, score=round(score, 3), threshold=s.economy_score_threshold,
            value=round(value, 4), kind="fleet_relative",
            is_event=score >= s.economy_score_threshold,
            details={"z": round(z, 3), "peer_median": round(center, 4), "peers": len(peers),
                     "windows": len(own), "window_km_per_pct": round(sample.km_per_pct, 4),
                     "model_key": sample.model_key, "distance_km": sample.distance_km,
                     "fuel_used_pct": sample.fuel_used_pct})]
