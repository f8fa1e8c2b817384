"""Typed values that travel between the dataflow's steps (beyond `stream.model`).

`InboxMessage` comes out of the source; the decode step turns it into a `VehicleBatch` or a
`RejectRow`; the per-vehicle step emits `StoredSample`, `EmittedEvent`, `RejectRow` and
`VehicleStateRow`, which the sink writes (`SinkItem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from edge_gateway.protocol import Sample, Source
from stream.model import Event, Reading, VehicleRef


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """One MQTT message as committed to the inbox, with its position there."""

    partition: str
    offset: int
    received_ms: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RejectRow:
    """A row of `ingest_rejects`: a message or sample the stream could not use."""

    time_ms: int
    """The inbox receive time, so a replay produces the same row (idempotency key)."""
    reason: str
    detail: str
    topic: str
    payload: bytes
    tenant_id: UUID | None = None
    vehicle_code: str | None = None
    partition: str | None = None
    offset: int | None = None
    sample_seq: int = -1
    """-1 when the whole message was rejected."""


@dataclass(frozen=True, slots=True)
class VehicleBatch:
    """A decoded telemetry message of a known, active vehicle of the topic's tenant."""

    ref: VehicleRef
    samples: tuple[Sample, ...]
    source: Source
    topic: str
    received_ms: int
    partition: str
    offset: int
    sent_ms: int | None = None
    fences: tuple[frozenset[UUID], ...] = ()
    """Per sample, the fences containing its position (filled by the geo step)."""


@dataclass(frozen=True, slots=True)
class StoredSample:
    """A sample to store in `telemetry` (after dedupe and GPS filters)."""

    reading: Reading


@dataclass(frozen=True, slots=True)
class EmittedEvent:
    """A detector's output, with the vehicle it concerns (for the live feed)."""

    ref: VehicleRef
    event: Event


@dataclass(frozen=True, slots=True)
class VehicleStateRow:
    """The newest state of a vehicle, upserted into `vehicle_state` and published live."""

    ref: VehicleRef
    sample: Sample
    moving: bool | None
    ignition: bool | None
    inside: frozenset[UUID]


SinkItem = StoredSample | EmittedEvent | RejectRow | VehicleStateRow
