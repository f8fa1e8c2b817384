"""Small pieces every detector shares: event construction, engine state, sustained thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_gateway.protocol import Sample
from stream.model import Reading, Severity, VehicleEvent, VehicleEventType


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
