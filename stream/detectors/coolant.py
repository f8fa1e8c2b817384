"""Coolant overheat, sustained: one event per overheating episode."""

from __future__ import annotations

from collections.abc import Sequence

from stream.detectors.common import SustainedRule, SustainedState, vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading


class CoolantOverheatDetector:
    """Emits `coolant_overheat` (critical) once coolant has stayed at or above
    `coolant_overheat_c` for `coolant_overheat_min_s`; re-armed after cooling below
    threshold - `coolant_recover_c`. `value` is the hottest reading so far.
    """

    name = "coolant_overheat"

    def __init__(self, settings: DetectorSettings) -> None:
        self._rule = SustainedRule(
            threshold=settings.coolant_overheat_c, above=True,
            min_s=settings.coolant_overheat_min_s, rearm_margin=settings.coolant_recover_c,
            max_gap_s=settings.sustain_max_gap_s)

    def initial_state(self) -> SustainedState:
        """Armed, no hot run in progress."""
        return SustainedState()

    def on_reading(self, state: SustainedState,
                   reading: Reading) -> tuple[SustainedState, Sequence[Event]]:
        """Advance the sustained-high rule with the reading's coolant temperature."""
        temp = reading.sample.coolant_c
        if temp is None:
            return state, ()
        state, run = self._rule.step(state, reading.t_ms, temp)
        if run is None or run.since_ms is None:
            return state, ()
        return state, (vehicle_event(
            reading, "coolant_overheat", severity="critical", started_ms=run.since_ms,
            duration_s=(reading.t_ms - run.since_ms) / 1000, value=run.worst,
            threshold=self._rule.threshold),)

    def on_tick(self, state: SustainedState, now_ms: int) -> tuple[SustainedState, Sequence[Event]]:
        """Nothing happens on time alone."""
        return state, ()
