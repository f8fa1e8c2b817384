"""Publishing converted vendor samples to MQTT in the wire contract (`core.protocol`).

Sequence numbers of pulled samples are derived from the vendor's timestamp, not counted: a
re-published page (after a crash between publishing and saving the cursor) carries the same
``(vehicle, seq)`` again and the stream's idempotency key absorbs it, and the numbers keep
increasing across restarts without any stored counter. See `vendor_seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import aiomqtt
import msgspec

from api.integrations.errors import IntegrationError
from core.mqtt_url import parse_mqtt_url
from core.protocol import (
    Channel,
    Sample,
    Source,
    telemetry_payloads,
    topic_for,
)
from core.settings import MqttSettings

SEQ_SLOTS = 8
"""Sub-millisecond slots of a vendor sequence number: one per kind of vendor record."""


def vendor_seq(t_ms: int, slot: int) -> int:
    """Sequence number of a pulled sample: its time in ms, times 8, plus the record kind.

    Two stat types reported at the same millisecond (gps and fuel, say) get distinct numbers;
    the order of numbers is the order of sample times.
    """
    if not 0 <= slot < SEQ_SLOTS:
        raise ValueError(f"slot {slot} outside 0..{SEQ_SLOTS - 1}")
    return t_ms * SEQ_SLOTS + slot


def make_sample(fields: dict[str, Any]) -> Sample:
    """Build a Sample with the wire contract's range checks (raises msgspec.ValidationError)."""
    return msgspec.convert(fields, Sample)


class Publisher(Protocol):
    """Where pullers put converted samples."""

    async def publish(self, tenant: str, vehicle: str, source: Source,
                      samples: Sequence[Sample]) -> int:
        """Publish samples of one vehicle; returns the number of messages sent."""


class MqttPublisher:
    """Publishes Telemetry batches at QoS 1; an async context manager owning the connection."""

    def __init__(self, settings: MqttSettings, *, client_id_prefix: str = "fleet-puller") -> None:
        target = parse_mqtt_url(settings.url)
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = ssl.create_default_context(cafile=settings.ca_file or None)
            if settings.cert_file:
                tls.load_cert_chain(settings.cert_file, settings.key_file or None)
        self._client = aiomqtt.Client(
            target.host, target.port, username=target.username, password=target.password,
            identifier=f"{client_id_prefix}-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5, keepalive=settings.keepalive_s,
            tls_context=tls)
        self.messages = 0
        self.reconnects = 0
        self._reconnect_lock = asyncio.Lock()
        self._generation = 0

    async def __aenter__(self) -> MqttPublisher:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise IntegrationError(f"cannot connect to the MQTT broker: {exc}") from exc
        return self

    async def __aexit__(self, *exc: Any) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(*exc)

    async def _reconnect(self, seen_generation: int) -> None:
        # Several pullers share one publisher: the first to notice the lost connection
        # reconnects, the others wait for it and retry on the new connection.
        async with self._reconnect_lock:
            if self._generation != seen_generation:
                return
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            try:
                await self._client.__aenter__()
            except aiomqtt.MqttError as exc:
                raise IntegrationError(f"cannot reconnect to the MQTT broker: {exc}") from exc
            self._generation += 1
            self.reconnects += 1

    async def _publish_one(self, topic: str, payload: bytes) -> None:
        generation = self._generation
        try:
            await self._client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError:
            await self._reconnect(generation)
        else:
            return
        try:
            await self._client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise IntegrationError(f"publishing to {topic} failed: {exc}") from exc

    async def publish(self, tenant: str, vehicle: str, source: Source,
                      samples: Sequence[Sample]) -> int:
        """Publish `samples` in messages within the stream's limits (count and bytes), in
        sequence order, each waiting for its PUBACK."""
        ordered = sorted(samples, key=lambda s: s.seq)
        topic = topic_for(tenant, vehicle, Channel.TELEMETRY)
        sent = 0
        for _, payload in telemetry_payloads(ordered, source=source):
            await self._publish_one(topic, payload)
            sent += 1
        self.messages += sent
        return sent
