"""The one interface every detector implements (Traccar's `analyzePosition`, made explicit).

A detector is a small object built from settings. Its per-vehicle state is an explicit,
picklable value (Bytewax recovery snapshots it) that the stream keeps per vehicle and passes
in and out: the detector itself holds no per-vehicle data, so it is easy to test with a list
of timestamped readings.

A detector may also offer ``on_readings(state, readings)``: the same as `on_reading` applied to
each reading in turn, for a vehicle's run of readings at once. The per-vehicle step uses it
when present, so a detector can settle a whole batch in which nothing can happen without
building a state per reading (the common case: most samples change nothing). It must give
exactly what `fold` gives, and must not change `state` in place (if it raises, the step
replays the batch reading by reading from that state).

A detector whose `on_tick` never does anything sets the class attribute ``ticks = False``: the
step then skips it on the per-vehicle tick (every `stream.tick_interval_s` for every vehicle,
so the no-op calls added up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stream.model import Event, Reading


class Detector(Protocol):
    """State + reading in, new state + events out."""

    name: str
    """Stable identifier; also the key of this detector's state in the per-vehicle snapshot."""

    def initial_state(self) -> Any:
        """State of a vehicle never seen before."""

    def on_reading(self, state: Any, reading: Reading) -> tuple[Any, Sequence[Event]]:
        """Process one reading (event-time order per vehicle, no duplicates)."""

    def on_tick(self, state: Any, now_ms: int) -> tuple[Any, Sequence[Event]]:
        """Processing-time tick (every `stream.tick_interval_s`, 5 s by default) for time-outs
        such as device offline."""


def fold(detector: Detector, state: Any, readings: Sequence[Reading]) -> tuple[Any, list[Event]]:
    """`on_reading` for each reading in order: the meaning of ``on_readings``."""
    events: list[Event] = []
    for reading in readings:
        state, out = detector.on_reading(state, reading)
        if out:
            events.extend(out)
    return state, events
