"""Idling: engine on and (almost) standing still for at least `idle_min_s`, one episode event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream.detectors.base import fold
from stream.detectors.common import engine_on, vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading, snapshot_state


@snapshot_state
@dataclass(frozen=True, slots=True)
class IdleState:
    """Per-vehicle idling state."""

    last_ms: int | None = None
    """Event time of the last reading with speed and engine state."""
    since_ms: int | None = None
    """Start of the current idle stretch, None when not idling."""
    last_idle_ms: int | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None


class IdlingDetector:
    """Emits one `idling` event per idle stretch of at least `idle_min_s`, when it ends.

    The stretch ends at the first reading that moves or has the engine off, or, after a gap
    longer than `idle_max_gap_s`, at the last idle reading before the gap. `value` is the
    duration in seconds, `threshold` is `idle_min_s`.
    """

    name = "idling"
    ticks = False

    def __init__(self, settings: DetectorSettings) -> None:
        self._s = settings

    def initial_state(self) -> IdleState:
        """Not idling."""
        return IdleState()

    def on_reading(self, state: IdleState, reading: Reading) -> tuple[IdleState, Sequence[Event]]:
        """Open, extend or close an idle stretch."""
        speed = reading.sample.speed_kph
        on = engine_on(reading.sample, self._s.engine_on_rpm)
        if speed is None or on is None:
            return state, ()
        t = reading.t_ms
        events: list[Event] = []
        if (state.since_ms is not None and state.last_ms is not None
                and state.last_idle_ms is not None
                and t - state.last_ms > self._s.idle_max_gap_s * 1000):
            events.extend(self._close(state, state.since_ms, state.last_idle_ms, reading))
            state = IdleState()
        if on and speed <= self._s.idle_speed_kph:
            if state.since_ms is None:
                return IdleState(t, t, t, reading.sample.lat_deg, reading.sample.lon_deg), events
            return IdleState(t, state.since_ms, t, state.lat_deg, state.lon_deg), events
        if state.since_ms is not None:
            events.extend(self._close(state, state.since_ms, t, reading))
        return IdleState(last_ms=t), events

    def on_readings(self, state: IdleState,
                    readings: Sequence[Reading]) -> tuple[IdleState, Sequence[Event]]:
        """A batch. Not idling and no reading idle (moving, or the engine off): nothing opens
        or closes, only the time of the last usable reading moves."""
        if state.since_ms is not None:
            return fold(self, state, readings)
        idle_kph, on_rpm = self._s.idle_speed_kph, self._s.engine_on_rpm
        last_ms = None
        for reading in readings:
            speed = reading.sample.speed_kph
            on = engine_on(reading.sample, on_rpm)
            if speed is None or on is None:
                continue
            if on and speed <= idle_kph:
                return fold(self, state, readings)
            last_ms = reading.t_ms
        if last_ms is None:
            return state, ()
        return IdleState(last_ms=last_ms), ()

    def _close(self, state: IdleState, since_ms: int, ended_ms: int,
               reading: Reading) -> Sequence[Event]:
        duration_s = (ended_ms - since_ms) / 1000
        if duration_s < self._s.idle_min_s:
            return ()
        return (vehicle_event(
            reading, "idling", t_ms=since_ms, started_ms=since_ms, ended_ms=ended_ms,
            duration_s=duration_s, value=duration_s, threshold=self._s.idle_min_s,
            lat_deg=state.lat_deg, lon_deg=state.lon_deg),)

    def on_tick(self, state: IdleState, now_ms: int) -> tuple[IdleState, Sequence[Event]]:
        """Stretches end on event time only."""
        return state, ()
