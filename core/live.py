"""The live fan-out contract on Redis pub/sub, between its publishers and the API's fan-out.

One channel per tenant, ``fleet:live:{tenant_id}``; each message is one JSON object, a
`LivePosition` or a `LiveEvent` (published by the stream) or a `LiveAck` (published by the
API when a dispatcher acknowledges an event), tagged by ``type``. Messages are compact because
the API fans them out to every dispatcher of the tenant.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import msgspec

LIVE_CHANNEL_PREFIX = "fleet:live:"
EventKind = Literal["geofence", "vehicle", "anomaly"]
"""Which table an event is in: geofence_events, vehicle_events or anomalies."""


def live_channel(tenant_id: UUID | str) -> str:
    """Redis pub/sub channel of one tenant."""
    return f"{LIVE_CHANNEL_PREFIX}{tenant_id}"


class LivePosition(msgspec.Struct, tag_field="type", tag="position", omit_defaults=True,
                   frozen=True, kw_only=True):
    """The newest position and key signals of one vehicle."""

    vehicle_id: str
    code: str
    t_ms: int
    lat: float | None = None
    lon: float | None = None
    speed_kph: float | None = None
    heading_deg: float | None = None
    ignition: bool | None = None
    moving: bool | None = None
    fuel_pct: float | None = None
    coolant_c: float | None = None
    battery_v: float | None = None
    sent_ms: int | None = None
    """When the stream published it (for staleness measurement)."""


class LiveEvent(msgspec.Struct, tag_field="type", tag="event", omit_defaults=True,
                frozen=True, kw_only=True):
    """A geofence, vehicle or anomaly event as the dispatcher's feed shows it."""

    vehicle_id: str
    code: str
    t_ms: int
    kind: EventKind
    event_type: str
    """enter/exit/dwell/crossing, overspeed, harsh_braking, ..., or the anomalous signal."""
    severity: str = "info"
    lat: float | None = None
    lon: float | None = None
    geofence_id: str | None = None
    geofence_name: str | None = None
    value: float | None = None
    details: dict[str, Any] | None = None


class LiveAck(msgspec.Struct, tag_field="type", tag="ack", omit_defaults=True,
              frozen=True, kw_only=True):
    """A dispatcher acknowledged an event: the event as `LiveEvent` names it, who and when.

    `vehicle_id`, `t_ms`, `kind`, `event_type` and `geofence_id` match the `LiveEvent` of
    the acknowledged event (for a vehicle event `geofence_id` is always absent).
    """

    vehicle_id: str
    code: str
    t_ms: int
    """The event's time, ms since the epoch."""
    kind: EventKind
    event_type: str
    geofence_id: str | None = None
    acked_by_email: str
    acked_at_ms: int
    comment: str | None = None


LiveMessage = LivePosition | LiveEvent | LiveAck
_decoder: msgspec.json.Decoder[LiveMessage] = msgspec.json.Decoder(LiveMessage)
_encoder = msgspec.json.Encoder()


def encode_live(message: LiveMessage) -> bytes:
    """Serialise one live message."""
    return _encoder.encode(message)


def decode_live(payload: bytes) -> LiveMessage:
    """Parse one live message; raises msgspec.ValidationError on a foreign payload."""
    return _decoder.decode(payload)
