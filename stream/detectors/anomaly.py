"""Anomaly scoring: robust per-signal scores per vehicle (the last detector of the list).

Per vehicle and signal, the `AnomalyScorer` (a `Detector`, last in the detector list) keeps a
rolling window of recent values and scores every sample with a robust z-score,
``|x - median| / max(1.4826 * MAD, floor)``: the median and the median absolute deviation
ignore the outliers they are meant to expose, unlike a mean and a standard deviation. An
anomaly event (`is_event=True`) fires once a signal's score has stayed at or above its
threshold for `consecutive_samples` samples in a row, and once per run of such samples.

Its settings (`AnomalySettings`) also hold those of the fleet-relative fuel economy score,
which needs other vehicles' data and is therefore a step of its own (`stream/economy.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Annotated, Final

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from core.protocol import Sample
from stream.detectors.common import engine_on
from stream.model import AnomalyRecord, Event, Reading, snapshot_state

MAD_TO_SIGMA: Final = 1.4826
"""MAD times this estimates the standard deviation of normally distributed data."""



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


class AnomalySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of `AnomalyScorer`, `EconomyTracker` and `FleetEconomy`."""

    signals: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SIGNALS))
    """Signals to score, from `SIGNALS` above."""
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

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # The window as its bytes: numpy's own pickling of a 120-value array cost ~8 us, and
        # every vehicle holds one per signal at every snapshot (the stall at each epoch's
        # end, docs/stream.md). Snapshots written before read as before (the class is
        # called with the array).
        return _signal_state, (self.window.tobytes(), self.window.dtype.str, self.count,
                               self.pos, self.center, self.scale, self.since_refresh,
                               self.run, self.fired, self.seen, self.held)


def _signal_state(window: bytes, dtype: str, *rest: object) -> SignalState:
    """A `SignalState` from its snapshot (a writable copy of the window)."""
    return SignalState(np.frombuffer(window, dtype=np.dtype(dtype)).copy(), *rest)  # type: ignore[arg-type]


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
