"""Ignition on/off: an event whenever the engine state changes between two readings."""

from __future__ import annotations

from collections.abc import Sequence

from stream.detectors.common import engine_on, vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading


class IgnitionDetector:
    """Emits `ignition_on` / `ignition_off` on a change of the `ignition` signal (or of rpm).

    State: the last known engine state, or None before the first reading that carries one
    (the first state seen is a baseline, not a change).
    """

    name = "ignition"
    ticks = False

    def __init__(self, settings: DetectorSettings) -> None:
        self._rpm = settings.engine_on_rpm

    def initial_state(self) -> bool | None:
        """No engine state known yet."""
        return None

    def on_reading(self, state: bool | None,
                   reading: Reading) -> tuple[bool | None, Sequence[Event]]:
        """Compare the reading's engine state with the last known one."""
        on = engine_on(reading.sample, self._rpm)
        if on is None or on == state:
            return state, ()
        if state is None:
            return on, ()
        return on, (vehicle_event(reading, "ignition_on" if on else "ignition_off"),)

    def on_tick(self, state: bool | None, now_ms: int) -> tuple[bool | None, Sequence[Event]]:
        """Nothing happens on time alone."""
        return state, ()
