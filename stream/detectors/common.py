"""Small pieces every detector shares: event construction, engine state, sustained thresholds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.protocol import Sample
from stream.detectors.base import fold
from stream.model import Event, Reading, Severity, VehicleEvent, VehicleEventType, snapshot_state


def engine_on(sample: Sample, engine_on_rpm: float) -> bool | None:
    """Engine state of a sample: the `ignition` signal, else rpm against a threshold, else None."""
    if sample.ignition is not None:
        return sample.ignition
    if sample.rpm is not None:
        return sample.rpm >= engine_on_rpm
    return None


def vehicle_event(reading: Reading, event_type: VehicleEventType, *, t_ms: int | None = None,
                  severity: Severity = "info", **fields: Any) -> VehicleEvent:
    """A `VehicleEvent` of the reading's vehicle, located at the reading's position unless
    `lat_deg`/`lon_deg` are given (episodes are located where they started)."""
    fields.setdefault("lat_deg", reading.sample.lat_deg)
    fields.setdefault("lon_deg", reading.sample.lon_deg)
    return VehicleEvent(
        t_ms=reading.t_ms if t_ms is None else t_ms,
        tenant_id=reading.vehicle.tenant_id,
        vehicle_id=reading.vehicle.vehicle_id,
        event_type=event_type,
        severity=severity,
        **fields,
    )


@snapshot_state
@dataclass(frozen=True, slots=True)
class SustainedState:
    """Progress of one 'value beyond a threshold for at least N seconds' condition."""

    armed: bool = True
    """False after an event until the value has recovered past the hysteresis margin."""
    since_ms: int | None = None
    """Event time the current run beyond the threshold started."""
    last_ms: int | None = None
    """Event time of the last reading that carried the signal."""
    worst: float | None = None
    """Most extreme value of the current run."""


@dataclass(frozen=True, slots=True)
class SustainedRule:
    """A threshold held for a minimum time, re-armed after recovering by a margin."""

    threshold: float
    above: bool
    """True: the condition is value >= threshold; False: value < threshold."""
    min_s: float
    rearm_margin: float
    max_gap_s: float

    def step(self, state: SustainedState, t_ms: int,
             value: float) -> tuple[SustainedState, SustainedState | None]:
        """Advance by one reading; the second item is the completed run when an event fires."""
        # Built with the constructor, not dataclasses.replace: this runs for every sample.
        since, worst = state.since_ms, state.worst
        if state.last_ms is not None and t_ms - state.last_ms > self.max_gap_s * 1000:
            # Unknown what happened during the gap: the duration count starts again.
            since = worst = None
        beyond = value >= self.threshold if self.above else value < self.threshold
        if not beyond:
            recovered = (value < self.threshold - self.rearm_margin if self.above
                         else value > self.threshold + self.rearm_margin)
            return SustainedState(state.armed or recovered, None, t_ms, None), None
        if not state.armed:
            return SustainedState(False, since, t_ms, worst), None
        since = t_ms if since is None else since
        worst = value if worst is None else (max(worst, value) if self.above
                                             else min(worst, value))
        run = SustainedState(True, since, t_ms, worst)
        if (t_ms - since) >= self.min_s * 1000:
            return SustainedState(False, None, t_ms, None), run
        return run, None


class SustainedThresholdDetector:
    """One signal held beyond a threshold for a minimum time: one event per episode.

    Subclasses set `name`, `event_type` and `severity`, and pass the rule and the signal; the
    event is emitted as soon as the condition is sustained (an alert, not a post-mortem),
    with `started_ms` when the run began and `value` its worst reading so far.
    """

    name: str
    event_type: VehicleEventType
    severity: Severity
    ticks = False

    def __init__(self, rule: SustainedRule, signal: Callable[[Sample], float | None]) -> None:
        self._rule = rule
        self._signal = signal

    def initial_state(self) -> SustainedState:
        """Armed, no run in progress."""
        return SustainedState()

    def on_reading(self, state: SustainedState,
                   reading: Reading) -> tuple[SustainedState, Sequence[Event]]:
        """Advance the sustained rule with the reading's value of the signal."""
        value = self._signal(reading.sample)
        if value is None:
            return state, ()
        state, run = self._rule.step(state, reading.t_ms, value)
        if run is None or run.since_ms is None:
            return state, ()
        return state, (vehicle_event(
            reading, self.event_type, severity=self.severity, started_ms=run.since_ms,
            duration_s=(reading.t_ms - run.since_ms) / 1000, value=run.worst,
            threshold=self._rule.threshold),)

    def on_readings(self, state: SustainedState,
                    readings: Sequence[Reading]) -> tuple[SustainedState, Sequence[Event]]:
        """A batch. While no value is beyond the threshold nothing can fire: the run is
        cleared, the rule re-arms if a value recovered, and only the time moves on."""
        rule, signal = self._rule, self._signal
        threshold, above, margin = rule.threshold, rule.above, rule.rearm_margin
        armed, last_ms = state.armed, None
        for reading in readings:
            value = signal(reading.sample)
            if value is None:
                continue
            if value >= threshold if above else value < threshold:
                return fold(self, state, readings)
            if not armed:
                armed = value < threshold - margin if above else value > threshold + margin
            last_ms = reading.t_ms
        if last_ms is None:
            return state, ()
        return SustainedState(armed, None, last_ms, None), ()

    def on_tick(self, state: SustainedState, now_ms: int) -> tuple[SustainedState, Sequence[Event]]:
        """Nothing happens on time alone."""
        return state, ()
