"""Builders for detector tests: timestamped readings of one vehicle, and a runner."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from core.protocol import Sample, Source
from stream.detectors.base import Detector
from stream.model import Event, Reading, VehicleEvent, VehicleRef

T0_MS = 1_780_000_000_000
VEHICLE = VehicleRef(tenant_id=uuid.UUID(int=1), vehicle_id=uuid.UUID(int=2),
                     tenant_slug="acme", vehicle_code="v1", model_key="Ford Transit")


def reading(t_s: float, *, seq: int | None = None, fences: Iterable[uuid.UUID] = (),
            vehicle: VehicleRef = VEHICLE, **signals: Any) -> Reading:
    """A reading at T0 + t_s seconds carrying the given signals (Sample field names)."""
    t_ms = T0_MS + round(t_s * 1000)
    return Reading(vehicle=vehicle,
                   sample=Sample(seq=seq if seq is not None else round(t_s * 10), t_ms=t_ms,
                                 **signals),
                   source=Source.SIMULATOR, fences=frozenset(fences))


def series(t0_s: float, t1_s: float, step_s: float = 1.0, **signals: Any) -> list[Reading]:
    """Readings every `step_s` from t0_s (inclusive) to t1_s (exclusive), same signals."""
    out = []
    t = t0_s
    while t < t1_s - 1e-9:
        out.append(reading(t, **signals))
        t += step_s
    return out


def run(detector: Detector, readings: Sequence[Reading], *, state: Any = None,
        pickle_every: int = 0) -> tuple[Any, list[Event]]:
    """Feed readings in order; with `pickle_every`, round-trip the state through pickle
    every that many readings, as Bytewax recovery would."""
    st = detector.initial_state() if state is None else state
    events: list[Event] = []
    for i, r in enumerate(readings, 1):
        st, out = detector.on_reading(st, r)
        events.extend(out)
        if pickle_every and i % pickle_every == 0:
            st = pickle.loads(pickle.dumps(st))  # noqa: S301 - our own snapshot
    return st, events


def vehicle_events(events: Iterable[Event], event_type: str | None = None) -> list[VehicleEvent]:
    """The VehicleEvents among events, optionally of one type."""
    return [e for e in events if isinstance(e, VehicleEvent)
            and (event_type is None or e.event_type == event_type)]


def secs(t_ms: int | None) -> float | None:
    """Event time back to seconds after T0 (for readable assertions)."""
    return None if t_ms is None else (t_ms - T0_MS) / 1000
