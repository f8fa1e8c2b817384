"""Low battery voltage, sustained: cranking dips and single bad readings do not count."""

from __future__ import annotations

from collections.abc import Sequence

from stream.detectors.common import SustainedRule, SustainedState, vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading


class LowBatteryDetector:
    """Emits `low_battery` once the voltage has stayed below `low_battery_v` for
    `low_battery_min_s`; re-armed when it rises above threshold + `low_battery_recover_v`.

    The event is emitted as soon as the condition is sustained (an alert, not a post-mortem):
    `started_ms` is when the voltage went low, `value` the lowest voltage so far.
    """

    name = "low_battery"

    def __init__(self, settings: DetectorSettings) -> None:
        self._rule = SustainedRule(
            threshold=settings.low_battery_v, above=False, min_s=settings.low_battery_min_s,
            rearm_margin=settings.low_battery_recover_v, max_gap_s=settings.sustain_max_gap_s)

    def initial_state(self) -> SustainedState:
        """Armed, no low run in progress."""
        return SustainedState()

    def on_reading(self, state: SustainedState,
                   reading: Reading) -> tuple[SustainedState, Sequence[Event]]:
        """Advance the sustained-low rule with the reading's voltage."""
        volts = reading.sample.battery_v
        if volts is None:
            return state, ()
        state, run = self._rule.step(state, reading.t_ms, volts)
        if run is None or run.since_ms is None:
            return state, ()
        return state, (vehicle_event(
            reading, "low_battery", severity="warning", started_ms=run.since_ms,
            duration_s=(reading.t_ms - run.since_ms) / 1000, value=run.worst,
            threshold=self._rule.threshold),)

    def on_tick(self, state: SustainedState, now_ms: int) -> tuple[SustainedState, Sequence[Event]]:
        """Nothing happens on time alone."""
        return state, ()
