"""The one interface every detector implements (Traccar's `analyzePosition`, made explicit).

A detector is a small object built from settings. Its per-vehicle state is an explicit,
picklable value (Bytewax recovery snapshots it) that the stream keeps per vehicle and passes
in and out: the detector itself holds no per-vehicle data, so it is easy to test with a list
of timestamped readings.
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
        """Processing-time tick (about once a second) for time-outs such as device offline."""
