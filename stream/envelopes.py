"""The dataflow's envelopes: what one step hands the next, and where it stands in the flow.

Each wraps the domain values of `stream.model` (a `Sample`, a `Reading`, an event) with what
the steps after it need to route, store or replay it: the inbox position, the vehicle, the
table it goes to. `InboxMessage` comes out of the source; the decode step turns it into a
`VehicleBatch` or a `RejectRow`; the per-vehicle step emits `StoredSample`, `EmittedEvent`,
`RejectRow` and `VehicleStateRow` (`SinkItem`s), bundled per activation in a `VehicleOutput`
with the `EconomyItem`s for the fleet economy step; the sink writes them.

Bytewax pickles what it routes between a cluster's processes (`VehicleBatch`, `EconomyItem`),
and those pickles name this module: `stream.items`, its name before 2026-12-07, re-exports it
so that pickles naming the old path still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from core.protocol import Sample, Source
from stream.model import Event, Reading, VehicleRef

if TYPE_CHECKING:
    from stream.economy import EconomySample


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

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the samples as one msgpack blob. Bytewax pickles every batch that crosses
        to another process (half of them with two); struct by struct that cost more than
        decoding the message had."""
        return (_unpack_batch, (self.ref, _SAMPLES_OUT.encode(self.samples), self.source,
                                self.topic, self.received_ms, self.partition, self.offset,
                                self.sent_ms, self.fences))


_SAMPLES_OUT = msgspec.msgpack.Encoder()
_SAMPLES_IN = msgspec.msgpack.Decoder(tuple[Sample, ...])


def _unpack_batch(ref: VehicleRef, samples: bytes, *rest: Any) -> VehicleBatch:
    """Inverse of `VehicleBatch.__reduce__`."""
    return VehicleBatch(ref, _SAMPLES_IN.decode(samples), *rest)


class StoredSample(msgspec.Struct, frozen=True, gc=False):
    """A sample to store in `telemetry` (after dedupe and GPS filters); a struct, as one is
    made per sample."""

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


@dataclass(frozen=True, slots=True)
class VehicleOutput:
    """Everything one activation of a vehicle's step produced, as one dataflow item.

    Bundling saves Bytewax's per-item cost on the way to the sink (one item per message
    instead of one per sample); the sink unpacks it.
    """

    items: tuple[SinkItem, ...]
    economy: tuple[EconomyItem, ...] = ()
    """Fuel-economy windows for the fleet-relative step (not written by the sink)."""


@dataclass(frozen=True, slots=True)
class EconomyItem:
    """A completed fuel-economy window of a vehicle, on its way to the peers of its model."""

    ref: VehicleRef
    sample: EconomySample


SinkInput = SinkItem | VehicleOutput
"""What the sink receives: dead letters from the decode step, bundles from the vehicles."""


def unbundle(items: list[SinkInput]) -> list[SinkItem]:
    """Flatten bundles (sinks and tests use it)."""
    out: list[SinkItem] = []
    for item in items:
        if isinstance(item, VehicleOutput):
            out.extend(item.items)
        else:
            out.append(item)
    return out
