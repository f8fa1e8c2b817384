"""Decode and validate: an inbox message becomes a `VehicleBatch` or a dead letter.

Uses the wire contract (`core.protocol`) and the vehicle directory. Never raises:
whatever goes wrong with one message becomes a `RejectRow` with a reason.
"""

from __future__ import annotations

import logging
from uuid import UUID

from core.protocol import Channel, Reject, RejectReason, Telemetry, decode, parse_topic
from stream.directory import VehicleDirectory
from stream.envelopes import InboxMessage, RejectRow, VehicleBatch

log = logging.getLogger(__name__)


class Decoder:
    """Callable step: `InboxMessage` -> `VehicleBatch | RejectRow`."""

    def __init__(self, directory: VehicleDirectory, *, payload_max_bytes: int = 65_536) -> None:
        self.directory = directory
        self.payload_max_bytes = payload_max_bytes

    def __call__(self, msg: InboxMessage) -> VehicleBatch | RejectRow:
        """Decode one message; every failure is a reject row, never an exception."""
        try:
            return self._decode(msg)
        except Exception as exc:
            log.exception("unexpected failure decoding %s offset %d", msg.partition, msg.offset)
            return self._reject(msg, Reject(RejectReason.INVALID, f"internal error: {exc!r}"),
                                None, None)

    def _decode(self, msg: InboxMessage) -> VehicleBatch | RejectRow:
        topic = parse_topic(msg.topic)
        if isinstance(topic, Reject):
            return self._reject(msg, topic, None, None)
        tenant_id = self.directory.tenant_id(topic.tenant)
        if topic.channel is not Channel.TELEMETRY:
            return self._reject(msg, Reject(RejectReason.BAD_TOPIC,
                                            f"channel {topic.channel.value!r} is not telemetry"),
                                tenant_id, topic.vehicle)
        message = decode(msg.payload, Telemetry)
        if isinstance(message, Reject):
            return self._reject(msg, message, tenant_id, topic.vehicle)
        ref = self.directory.resolve(topic.tenant, topic.vehicle)
        if isinstance(ref, Reject):
            return self._reject(msg, ref, self.directory.tenant_id(topic.tenant), topic.vehicle)
        return VehicleBatch(ref=ref, samples=tuple(message.samples), source=message.source,
                            topic=msg.topic, received_ms=msg.received_ms,
                            partition=msg.partition, offset=msg.offset, sent_ms=message.sent_ms)

    def _reject(self, msg: InboxMessage, reject: Reject, tenant_id: object,
                vehicle_code: str | None) -> RejectRow:
        return RejectRow(
            time_ms=msg.received_ms, reason=reject.reason.value, detail=reject.detail[:2000],
            topic=msg.topic[:1000], payload=msg.payload[: self.payload_max_bytes],
            tenant_id=tenant_id if isinstance(tenant_id, UUID) else None,
            vehicle_code=vehicle_code, partition=msg.partition, offset=msg.offset)
