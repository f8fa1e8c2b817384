"""Anomaly scoring: robust per-signal scores per vehicle, and fuel economy against peers.

Per vehicle and signal, the `AnomalyScorer` (a `Detector`, last in the detector list) keeps a
rolling window of recent values and scores every sample with a robust z-score,
``|x - median| / max(1.4826 * MAD, floor)``: the median and the median absolute deviation
ignore the outliers they are meant to expose, unlike a mean and a standard deviation. An
anomaly event (`is_event=True`) fires once a signal's score has stayed at or above its
threshold for `consecutive_samples` samples in a row, and once per run of such samples.

The fleet-relative score needs other vehicles' data, which a per-vehicle step never sees.
It is split in two steps the dataflow runs in different places:

1. `EconomyTracker`, keyed by vehicle (next to the detectors): accumulates distance and fuel
   used and, after every `economy_window_km`, emits an `EconomySample` (km per % of tank).
2. `FleetEconomy`, keyed by ``(tenant, model_key)``: keeps the latest sample of every vehicle
   of that model and scores each new sample against its peers (robust z-score over the
   peers' values), returning an `AnomalyRecord` of kind ``fleet_relative``.

Only the small per-window summaries cross the re-keying, never the raw readings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Annotated, Final
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from core.protocol import Sample
from stream.detectors.common import engine_on
from stream.model import AnomalyRecord, Event, Reading, snapshot_state

MAD_TO_SIGMA: Final = 1.4826
"""MAD times this estimates the standard deviation of normally distributed data."""

ECONOMY_SIGNAL: Final = "fuel_economy_km_per_pct"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One scored signal: its name (stored in `anomalies.signal`, unit in the name) and the
    smallest scale its score divides by, so a flat signal (MAD 0) does not turn sensor
    quantisation into infinite scores."""

    name: str
    scale_floor: float
    description: str
    per_engine_run: bool = False
    """The window restarts when the engine starts or stops (the level depends on it)."""
    score_threshold: float | None = None
    """This signal's default threshold when it differs from `AnomalySettings.score_threshold`."""
    hold_suspicious: bool = False
    """Keep suspicious samples out of the window (for signals whose normal value is steady,
    like a rate around zero); otherwise they enter winsorised, so a trend (engine warm-up)
    is followed."""


SIGNALS: Final[Mapping[str, SignalSpec]] = {s.name: s for s in (
    SignalSpec("coolant_c", 1.5, "engine coolant temperature, degC"),
    SignalSpec("battery_v", 0.15, "battery voltage, V (charging ~14 V, resting ~12.5 V)",
               per_engine_run=True),
    SignalSpec("fuel_rate_pct_per_min", 0.8,
               "slope of the smoothed fuel level over fuel_rate_lag_s, % of tank per minute",
               hold_suspicious=True),
    SignalSpec("rpm_roughness", 15.0,
               "at idle: median of the last 8 |second differences| of engine speed, rev/min "
               "(a misfiring engine idles rough; one bump is an outlier the median ignores)",
               score_threshold=4.0),
    SignalSpec("rpm", 150.0, "engine speed, rev/min", per_engine_run=True),
    SignalSpec("engine_load_pct", 8.0, "calculated engine load, %", per_engine_run=True),
    SignalSpec("accel_mps2", 0.6, "longitudinal acceleration from speed deltas, m/s^2"),
)}
"""Every signal the scorer knows; `AnomalySettings.signals` picks the ones in use."""

DEFAULT_SIGNALS: Final = ("coolant_c", "battery_v", "fuel_rate_pct_per_min", "rpm_roughness")
"""Signals scored by default: the ones whose normal driving is stationary within an engine
run. rpm, engine load and acceleration follow the driver's feet (every start from a light
is a level shift), so they are available but opt-in."""

ROUGHNESS_SPAN: Final = 8
IDLE_SPEED_KPH: Final = 2.0
"""rpm roughness is measured at idle only: while driving, gear changes and the driver's
throttle move rpm far more than a misfire does."""
FUEL_HIST_POINTS: Final = 6
BASELINE_GUARD: Final = 0.5
"""Samples scoring at least this fraction of the threshold stay out of the baseline window."""
SETTLE_TIME_CONSTANTS: Final = 4
SETTLE_RISE_PCT: Final = 0.5
"""A smoothed fuel level still rising by more than this (% of tank) is still being filled."""
"""Exponential smoothing has forgotten its starting value to 2 % after four time constants."""


class AnomalySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of `AnomalyScorer`, `EconomyTracker` and `FleetEconomy`."""

    signals: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SIGNALS))
    """Signals to score, from `stream.anomaly.SIGNALS`."""
    engine_on_rpm: Annotated[float, Meta(gt=0)] = 300.0
    """Without an `ignition` signal, rpm at or above this means the engine runs. Windows of
    engine-dependent signals (`SignalSpec.per_engine_run`) restart when the engine starts or
    stops: battery voltage jumps from ~12.5 V to ~14 V when the alternator charges."""
    window_samples: Annotated[int, Meta(ge=8, le=4096)] = 120
    """Rolling window per signal, in samples (2 minutes at 1 Hz)."""
    min_samples: Annotated[int, Meta(ge=4)] = 30
    """No scores until a window holds this many samples."""
    refresh_every_samples: Annotated[int, Meta(ge=1)] = 5
    """Median and MAD are recomputed every this many samples (cost; they move slowly)."""
    score_threshold: Annotated[float, Meta(gt=0)] = 6.0
    """Robust z-score at or above which a sample is anomalous (unitless)."""
    signal_score_thresholds: dict[str, Annotated[float, Meta(gt=0)]] = msgspec.field(
        default_factory=dict)
    """Per-signal overrides of `score_threshold` (rpm_roughness defaults to 4.0: its median
    of 8 differences is already smooth, and normal idle stays below 3)."""
    consecutive_samples: Annotated[int, Meta(ge=1)] = 5
    """An anomaly event fires when this many samples in a row are anomalous."""
    emit_every_samples: Annotated[int, Meta(ge=1)] = 60
    """Below-threshold scores are emitted for one sample in this many per signal (rows);
    anomalous samples are always emitted."""
    reset_gap_s: Annotated[float, Meta(gt=0)] = 120.0
    """After a data gap longer than this, windows start afresh (the old baseline is stale:
    an engine cools while parked)."""
    rate_max_dt_s: Annotated[float, Meta(gt=0)] = 5.0
    """Rate signals (acceleration, fuel rate) skip sample pairs further apart than this."""
    fuel_smoothing_s: Annotated[float, Meta(gt=0)] = 30.0
    """Time constant, s, of the exponential smoothing of fuel level before its rate is taken
    (fuel sloshes)."""
    fuel_rate_lag_s: Annotated[float, Meta(gt=0)] = 60.0
    """The fuel rate is the change of the smoothed level over this long, per minute."""

    economy_window_km: Annotated[float, Meta(gt=0)] = 50.0
    """Distance per fuel-economy sample, km."""
    economy_min_fuel_pct: Annotated[float, Meta(gt=0)] = 2.0
    """A window that used less fuel than this (% of tank) is too noisy to score; it is merged
    into the next."""
    economy_refuel_pct: Annotated[float, Meta(gt=0)] = 5.0
    """A rise of the smoothed level by this much (% of tank) is a refuel: the window restarts."""
    economy_max_gap_s: Annotated[float, Meta(gt=0)] = 60.0
    """Speed is integrated only across gaps up to this long (without an odometer)."""
    economy_history_windows: Annotated[int, Meta(ge=1, le=100)] = 5
    """A vehicle's economy is the median of its last this many samples."""
    economy_min_windows: Annotated[int, Meta(ge=1)] = 5
    """Vehicles (scored or peers) need this many samples first; with 5, two odd windows
    (a theft, a detour) cannot move the median."""
    economy_min_peers: Annotated[int, Meta(ge=2)] = 3
    """Fewer peers of the same model than this: no fleet-relative score."""
    economy_peer_max_age_s: Annotated[float, Meta(gt=0)] = 7 * 86400.0
    """Peers' samples older than this (event time) are ignored."""
    economy_max_vehicles: Annotated[int, Meta(ge=2)] = 10_000
    """Vehicles kept per model; the stalest is dropped beyond this (bounded state)."""
    economy_score_threshold: Annotated[float, Meta(gt=0)] = 3.5
    """Robust z-score against peers at or above which a fleet-relative anomaly fires."""
    economy_scale_floor_frac: Annotated[float, Meta(gt=0)] = 0.05
    """Smallest scale of the peer comparison, as a fraction of the peer median."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.signals) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown anomaly signals {unknown}; known: {sorted(SIGNALS)}")
        if self.min_samples > self.window_samples:
            raise ValueError("min_samples must not exceed window_samples")
        if self.economy_min_windows > self.economy_history_windows:
            raise ValueError("economy_min_windows must not exceed economy_history_windows")

    def threshold_for(self, signal: str) -> float:
        """The score threshold of one signal: the override here, else the signal's own
        default from `SIGNALS`, else `score_threshold`."""
        if signal in self.signal_score_thresholds:
            return self.signal_score_thresholds[signal]
        spec = SIGNALS.get(signal)
        if spec is not None and spec.score_threshold is not None:
            return spec.score_threshold
        return self.score_threshold


FloatArray = npt.NDArray[np.float32]


@snapshot_state
@dataclass(slots=True)
class SignalState:
    """Rolling window and run bookkeeping of one signal of one vehicle (mutable, see
    `AnomalyState`)."""

    window: FloatArray
    """Ring buffer of the last `window_samples` values (float32 keeps snapshots small)."""
    count: int = 0
    pos: int = 0
    center: float = math.nan
    scale: float = math.nan
    since_refresh: int = 0
    run: int = 0
    """Consecutive anomalous samples so far."""
    fired: bool = False
    """An event fired for the current run."""
    seen: int = 0
    held: int = 0
    """Suspicious samples in a row kept out of the window."""


@snapshot_state
@dataclass(slots=True)
class AnomalyState:
    """Per-vehicle scorer state: one `SignalState` per signal plus memory for rate signals.

    Unlike the other detectors' frozen states, this one is updated in place and returned:
    rebuilding a numpy window per signal per sample cost more than all other detectors
    together. It is still a plain picklable value; the dataflow copies it for snapshots.
    """

    signals: dict[str, SignalState] = field(default_factory=dict)
    last_ms: int | None = None
    speed_mps: float | None = None
    speed_ms: int | None = None
    fuel_smooth_pct: float | None = None
    fuel_ms: int | None = None
    fuel_hist: tuple[tuple[int, float], ...] = ()
    """(t_ms, smoothed level) about every `fuel_rate_lag_s / FUEL_HIST_POINTS`."""
    engine: bool | None = None
    rpm_recent: tuple[tuple[int, float], ...] = ()
    """Last two (t_ms, rpm) for second differences."""
    rpm_d2: tuple[float, ...] = ()
    """Last `ROUGHNESS_SPAN` |second differences| of rpm."""


class AnomalyScorer:
    """Robust per-signal anomaly scores (a `Detector`)."""

    name = "anomaly"
    ticks = False

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self._s = s = settings or AnomalySettings()
        self._specs = tuple(SIGNALS[name] for name in s.signals)
        self._thresholds = {name: s.threshold_for(name) for name in s.signals}
        # Only the rates in use are derived (each keeps its own memory in the state).
        self._want_accel = "accel_mps2" in s.signals
        self._want_fuel_rate = "fuel_rate_pct_per_min" in s.signals
        self._want_roughness = "rpm_roughness" in s.signals
        self._plain = tuple(n for n in ("coolant_c", "battery_v", "rpm", "engine_load_pct")
                            if n in s.signals)

    def initial_state(self) -> AnomalyState:
        """No history."""
        return AnomalyState()

    def on_reading(self, state: AnomalyState,
                   reading: Reading) -> tuple[AnomalyState, Sequence[Event]]:
        """Score every signal the reading carries (updates `state` in place)."""
        t = reading.t_ms
        if state.last_ms is not None and t - state.last_ms > self._s.reset_gap_s * 1000:
            state = AnomalyState()
        engine = engine_on(reading.sample, self._s.engine_on_rpm)
        if engine is not None and state.engine is not None and engine != state.engine:
            # A new engine run is a new regime for some signals: forget their windows.
            state.signals = {k: v for k, v in state.signals.items()
                             if not SIGNALS[k].per_engine_run}
            state.rpm_recent, state.rpm_d2 = (), ()
        if engine is not None:
            state.engine = engine
        values = self._values(state, reading.sample)
        out: list[Event] = []
        for spec in self._specs:
            value = values.get(spec.name)
            if value is None or not math.isfinite(value):
                continue
            sig = state.signals.get(spec.name)
            if sig is None:
                sig = state.signals[spec.name] = SignalState(
                    np.zeros(self._s.window_samples, dtype=np.float32))
            record = self._score(spec, sig, value, reading)
            if record is not None:
                out.append(record)
        state.last_ms = t
        return state, out

    def _values(self, state: AnomalyState, sample: Sample) -> dict[str, float]:
        """The values of the signals in use, including the derived rates (updates their
        memory)."""
        values: dict[str, float] = {}
        for name in self._plain:
            v = getattr(sample, name)
            if v is not None:
                values[name] = float(v)
        t = sample.t_ms
        max_dt_ms = self._s.rate_max_dt_s * 1000
        if self._want_accel and sample.speed_kph is not None:
            v_mps = sample.speed_kph / 3.6
            if state.speed_ms is not None and state.speed_mps is not None \
                    and 0 < t - state.speed_ms <= max_dt_ms:
                values["accel_mps2"] = (v_mps - state.speed_mps) / ((t - state.speed_ms) / 1000)
            state.speed_mps, state.speed_ms = v_mps, t
        if self._want_fuel_rate and sample.fuel_pct is not None:
            rate = self._fuel_rate(state, t, float(sample.fuel_pct))
            if rate is not None:
                values["fuel_rate_pct_per_min"] = rate
        if not self._want_roughness or sample.rpm is None:
            return values
        idle = sample.speed_kph is not None and sample.speed_kph <= IDLE_SPEED_KPH
        if state.engine and idle:
            recent = tuple(p for p in state.rpm_recent if 0 < t - p[0] <= max_dt_ms)
            d2 = state.rpm_d2 if len(recent) == len(state.rpm_recent) else ()
            if len(recent) == 2:
                d2 = (*d2, abs(sample.rpm - 2 * recent[1][1] + recent[0][1]))[-ROUGHNESS_SPAN:]
                if len(d2) == ROUGHNESS_SPAN:
                    values["rpm_roughness"] = float(median(d2))
            state.rpm_recent = (*recent, (t, float(sample.rpm)))[-2:]
            state.rpm_d2 = d2
        else:
            state.rpm_recent, state.rpm_d2 = (), ()
        return values

    def _fuel_rate(self, state: AnomalyState, t: int, fuel_pct: float) -> float | None:
        """Slope of the smoothed fuel level over `fuel_rate_lag_s`, % of tank per minute.

        Slosh is averaged out first (exponential smoothing), then the slope is taken over a
        long lag, so the noise of the slope is small next to a theft or a refuel.
        """
        s = self._s
        if state.fuel_ms is None or state.fuel_smooth_pct is None \
                or not 0 < t - state.fuel_ms <= s.rate_max_dt_s * 1000:
            state.fuel_smooth_pct, state.fuel_ms, state.fuel_hist = fuel_pct, t, ((t, fuel_pct),)
            return None
        dt_s = (t - state.fuel_ms) / 1000
        alpha = 1 - math.exp(-dt_s / s.fuel_smoothing_s)
        smooth = state.fuel_smooth_pct + alpha * (fuel_pct - state.fuel_smooth_pct)
        lag_ms = s.fuel_rate_lag_s * 1000
        hist = state.fuel_hist
        if not hist or t - hist[-1][0] >= lag_ms / FUEL_HIST_POINTS:
            hist = (*hist, (t, smooth))
        # Keep the newest entry at least `lag` old as the reference, drop older ones.
        while len(hist) > 1 and t - hist[1][0] >= lag_ms:
            hist = hist[1:]
        state.fuel_smooth_pct, state.fuel_ms, state.fuel_hist = smooth, t, hist
        ref_t, ref_level = hist[0]
        if t - ref_t < lag_ms:
            return None
        return (smooth - ref_level) / ((t - ref_t) / 60_000)

    def _score(self, spec: SignalSpec, sig: SignalState, value: float,
               reading: Reading) -> AnomalyRecord | None:
        """Score one value against the window, then add it to the window (in place)."""
        s = self._s
        threshold = self._thresholds[spec.name]
        scored = sig.count >= s.min_samples
        score = 0.0
        insert: float | None = value
        if scored:
            if sig.since_refresh >= s.refresh_every_samples or math.isnan(sig.center):
                sig.center, sig.scale = _robust_center_scale(sig.window[:sig.count],
                                                             spec.scale_floor)
                sig.since_refresh = 0
            score = abs(value - sig.center) / sig.scale
            insert = self._baseline_value(spec, sig, value, score, threshold)
        if insert is not None:
            sig.window[sig.pos] = insert
            sig.count = min(sig.count + 1, s.window_samples)
            sig.pos = (sig.pos + 1) % s.window_samples
            sig.since_refresh += 1
        anomalous = scored and score >= threshold
        sig.run = sig.run + 1 if anomalous else 0
        fire = anomalous and sig.run >= s.consecutive_samples and not sig.fired
        sig.fired = (sig.fired or fire) if anomalous else False
        seen = sig.seen
        sig.seen += 1
        if not scored or not (anomalous or seen % s.emit_every_samples == 0):
            return None
        return AnomalyRecord(
            t_ms=reading.t_ms, tenant_id=reading.vehicle.tenant_id,
            vehicle_id=reading.vehicle.vehicle_id, signal=spec.name, score=round(score, 3),
            threshold=threshold, value=value, is_event=fire,
            details={"median": round(sig.center, 4), "scale": round(sig.scale, 4),
                     "run": sig.run})

    def _baseline_value(self, spec: SignalSpec, sig: SignalState, value: float, score: float,
                        threshold: float) -> float | None:
        """What a scored value adds to the window. Winsorised to median ± threshold·scale,
        so a long anomaly only slowly becomes normal. For `hold_suspicious` signals nothing
        while the value is suspicious, so a slow anomaly (a fuel theft ramps up over a
        minute) cannot drag the median along; after `window_samples` suspicious samples in a
        row the new level is taken in all the same, so a lasting change is learned."""
        if score < BASELINE_GUARD * threshold:
            sig.held = 0
            return value
        if spec.hold_suspicious and sig.held < self._s.window_samples:
            sig.held += 1
            return None
        bound = threshold * sig.scale
        return min(max(value, sig.center - bound), sig.center + bound)

    def on_tick(self, state: AnomalyState, now_ms: int) -> tuple[AnomalyState, Sequence[Event]]:
        """Scores move with data only."""
        return state, ()


def _middle(ordered: FloatArray) -> float:
    """Median of an already sorted window."""
    n = ordered.size
    k = n // 2
    if n % 2:
        return float(ordered[k])
    return float(ordered[k - 1] + ordered[k]) / 2


def _robust_center_scale(values: FloatArray, floor: float) -> tuple[float, float]:
    """Median and MAD-based scale (never below `floor`) of a window. A full sort of these
    short windows costs less than two `np.partition` calls (numpy's kth handling dominated)."""
    center = _middle(np.sort(values))
    deviations = np.abs(values - np.float32(center))
    deviations.sort()
    return center, max(MAD_TO_SIGMA * _middle(deviations), floor)


# -- fleet-relative fuel economy -----------------------------------------------------------------


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
