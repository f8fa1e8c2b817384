"""The MQTT side: connection, birth and Last Will, the spool sender, commands and status.

One aiomqtt client per connection attempt (MQTT v5, QoS 1, optional TLS and login). On
connect it publishes a retained `online` status (the birth message); the broker publishes the
retained `offline` Last Will if the gateway vanishes.

Sending policy (replay): the spool is one FIFO ordered by seq. The sender always publishes the
oldest unacknowledged samples first, in batches of up to `batch_max_samples`, with up to
`max_inflight_messages` batches awaiting PUBACK at once; a batch's samples are deleted from
the spool only after its PUBACK. A backlog therefore drains at full speed in seq order while
acquisition keeps writing new samples behind it, and live samples go out as soon as the
backlog ahead of them is gone (order per vehicle is kept; nothing is skipped). When the spool
holds less than a full batch, the sender waits until the oldest sample is
`batch_interval_s` old. On any connection error every unacknowledged batch stays in the spool
and is sent again after reconnecting, with the same seqs (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt_url import parse_mqtt_url
from core.protocol import (
    NO_MATCHING_SUBSCRIBERS,
    Channel,
    DeviceEvent,
    Sample,
    Source,
    Status,
    device_login,
    encode,
    telemetry_payloads,
    topic_for,
)
from edge_gateway import __version__
from edge_gateway.commands import CommandHandler
from edge_gateway.config import GatewayProcessSettings
from edge_gateway.errors import ConfigError
from edge_gateway.sources.base import Backoff
from edge_gateway.spool import SpoolRow, SpoolWorker

log = logging.getLogger("edge_gateway.uplink")

SESSION_EXPIRY_S = 3600
"""The broker keeps our `cmd` subscription (and queues commands) this long while we are away."""
MAX_PENDING_EVENTS = 100
STOP_DRAIN_S = 10.0
"""On a graceful stop, how long in-flight batches may take to be acknowledged (systemd's
TimeoutStopSec=30 must stay above it)."""


class _StopRequestedError(Exception):
    """Internal: ends a connection's task group once a clean shutdown has drained."""


class NoSubscriberError(aiomqtt.MqttError):
    """Telemetry reached the broker while nothing subscribed to it: not delivered. An MQTT
    error like a lost connection: the uplink reconnects after its back-off and sends again."""


class AckCheckingClient(aiomqtt.Client):
    """aiomqtt client that does not treat a negative PUBACK as delivered.

    aiomqtt 2.x completes `publish()` on any PUBACK, whatever its MQTT v5 reason code. A
    refused message (for example "not authorized") must stay in the spool, so we swallow the
    confirmation: `publish()` then times out and the batch is sent again after a reconnect.

    "No matching subscribers" (0x10) is a success code, but for telemetry it means the message
    is gone: Mosquitto does not restore shared subscriptions after a restart, so until the
    stream has subscribed again every telemetry message is acknowledged to nobody (issue #13:
    about 24 s of a fleet's data lost per broker restart). Such a PUBACK completes `publish()`
    and is counted in `unheard`; the uplink then keeps the batch in the spool and sends it
    again (`NoSubscriberError`). Status, events and acks are not held for that: nobody may be
    listening to them, and a retained status needs no subscriber.
    """

    refused = 0
    unheard_total = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unheard = 0
        """Telemetry messages this connection's broker acknowledged with 0x10."""

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            type(self).refused += 1
            log.error("broker refused message %s: %s", mid, reason_code)
            return
        if getattr(reason_code, "value", 0) == NO_MATCHING_SUBSCRIBERS:
            # paho removes the message from _out_messages only after this callback.
            message = getattr(client, "_out_messages", {}).get(mid)
            topic = str(getattr(message, "topic", ""))
            if topic.endswith("/" + Channel.TELEMETRY.value):
                self.unheard += 1
                type(self).unheard_total += 1
        super()._on_publish(client, userdata, mid, reason_code, properties)


class Uplink:
    """Keeps the broker connection and moves the spool to it."""

    def __init__(self, settings: GatewayProcessSettings, spool: SpoolWorker,
                 commands: CommandHandler, status: Callable[[], Status]) -> None:
        self.settings = settings
        self.gw = settings.gateway
        self.spool = spool
        self.commands = commands
        self.status = status
        self.target = parse_mqtt_url(settings.mqtt.url)
        t, v = self.gw.tenant, self.gw.vehicle
        self.topics = {ch: topic_for(t, v, ch) for ch in Channel}
        self.connected = False
        self.state = "not connected yet"
        self.published_samples = 0
        self.published_messages = 0
        self._status_now = asyncio.Event()
        # Device events are informative: bounded, and the oldest is dropped when full.
        self._events: deque[DeviceEvent] = deque(maxlen=MAX_PENDING_EVENTS)
        self._events_ready = asyncio.Event()
        self._decoder = msgspec.json.Decoder(Sample)
        self._stopping = asyncio.Event()
        self._inflight = 0
        self._next_send = 0.0
        self._idle = asyncio.Event()
        """Set while no telemetry batch awaits its PUBACK."""
        self._idle.set()

    # ---- called by the gateway ------------------------------------------------------------------

    def request_status(self) -> None:
        """Publish a status message soon (power-mode change, report_status command)."""
        self._status_now.set()

    def stop(self) -> None:
        """Shut down cleanly: start no new batch, wait (up to `STOP_DRAIN_S`) for the
        PUBACKs of those in flight, publish a retained `offline` status, disconnect."""
        self._stopping.set()

    def add_event(self, event: DeviceEvent) -> None:
        """Queue a device event for the `events` channel."""
        self._events.append(event)
        self._events_ready.set()

    # ---- connection -----------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        mqtt = self.settings.mqtt
        tls_params = None
        if self.target.tls or mqtt.ca_file:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=mqtt.ca_file or None, certfile=mqtt.cert_file or None,
                keyfile=mqtt.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        elif mqtt.cert_file:
            raise ConfigError("mqtt.cert_file needs an mqtts:// URL")
        offline = Status(state="offline", t_ms=_now_ms(), software=software())
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        client = AckCheckingClient(
            self.target.host, self.target.port,
            username=self.target.username, password=self.target.password,
            identifier=device_login(self.gw.tenant, self.gw.vehicle),
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.topics[Channel.STATUS], encode(offline), qos=1, retain=True),
            clean_start=False, properties=props,
            # The default timeout is the connect's and the subscription's; every publish
            # passes publish_timeout_s.
            keepalive=mqtt.keepalive_s, timeout=self.gw.connect_timeout_s,
            tls_params=tls_params, max_inflight_messages=self.gw.max_inflight_messages + 8,
        )
        # A full replay window is normal here, not the leak aiomqtt warns about by default.
        client.pending_calls_threshold = self.gw.max_inflight_messages + 8
        return client

    async def run(self) -> None:
        """Connect, serve, and reconnect with back-off until `stop()`."""
        backoff = Backoff(self.gw.reconnect_min_s, self.gw.reconnect_max_s)
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                async with self._client() as client:
                    self.connected = True
                    self.state = "connected"
                    log.info("connected to %s:%s", self.target.host, self.target.port)
                    await self._serve(client)
            except* _StopRequestedError:
                self.state = "stopped"
            except* (aiomqtt.MqttError, OSError) as group:
                reason = "; ".join(str(e) for e in group.exceptions)[:150]
                self.state = f"disconnected: {reason}"
                log.warning("MQTT: %s", reason)
            finally:
                self.connected = False
            if time.monotonic() - started > 30:
                backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay_s())

    async def _serve(self, client: aiomqtt.Client) -> None:
        await self._publish_status(client)
        await client.subscribe(self.topics[Channel.CMD], qos=1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(client, tg))
            tg.create_task(self._command_loop(client))
            tg.create_task(self._status_loop(client))
            tg.create_task(self._event_loop(client))
            tg.create_task(self._stopper(client))

    async def _stopper(self, client: aiomqtt.Client) -> None:
        await self._stopping.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), STOP_DRAIN_S)
        # A clean DISCONNECT suppresses the Last Will, so say goodbye ourselves.
        offline = Status(state="offline", t_ms=_now_ms(), software=software())
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topics[Channel.STATUS], encode(offline), qos=1,
                                 retain=True, timeout=2.0)
        raise _StopRequestedError

    # ---- telemetry ----------------------------------------------------------------------------

    async def _sender(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        window = asyncio.Semaphore(self.gw.max_inflight_messages)
        cursor = -1
        interval_ms = int(self.gw.batch_interval_s * 1000)
        while True:
            await window.acquire()
            self.spool.appended.clear()
            rows = await self.spool.run(self.spool.spool.read_after, cursor,
                                        self.gw.batch_max_samples)
            samples = [self._decoder.decode(r.body) for r in rows]
            if len(rows) < self.gw.batch_max_samples:
                wait_ms = interval_ms - (_now_ms() - samples[0].t_ms) if samples else None
                if wait_ms is None or wait_ms > 0:
                    window.release()
                    timeout = None if wait_ms is None else wait_ms / 1000.0
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.spool.appended.wait(), timeout)
                    continue
            if self._stopping.is_set():
                window.release()
                return
            cursor = rows[-1].seq
            await self._pace()
            self._inflight += 1
            self._idle.clear()
            tg.create_task(self._publish_batch(client, rows, samples, window))

    async def _pace(self) -> None:
        """Space telemetry messages at least 1/`replay_messages_per_s` apart."""
        rate = self.gw.replay_messages_per_s
        if not rate:
            return
        now = time.monotonic()
        wait_s = self._next_send - now
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        self._next_send = max(now, self._next_send) + 1.0 / rate

    async def _publish_batch(self, client: aiomqtt.Client, rows: list[SpoolRow],
                             samples: list[Sample], window: asyncio.Semaphore) -> None:
        try:
            unheard = getattr(client, "unheard", 0)
            for payload in self._payloads(samples):
                await client.publish(self.topics[Channel.TELEMETRY], payload, qos=1,
                                     timeout=self.gw.publish_timeout_s)
                self.published_messages += 1
            if getattr(client, "unheard", 0) != unheard:
                # Counted per connection, not per message: a concurrent batch's unheard
                # message sends this one again too, which the stream's dedupe absorbs.
                log.warning("MQTT: telemetry acknowledged with no subscriber (the stream is "
                            "not subscribed, e.g. just after a broker restart); kept in the "
                            "spool and sent again")
                raise NoSubscriberError("telemetry had no subscriber")
            await self.spool.run(self.spool.spool.ack, rows[0].seq, rows[-1].seq)
            self.published_samples += len(rows)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
            window.release()

    def _payloads(self, samples: list[Sample]) -> list[bytes]:
        """Encoded telemetry messages for a batch, within the stream's limits."""
        return [payload for _, payload in telemetry_payloads(
            samples, source=Source.GATEWAY, device=self.gw.device, sent_ms=_now_ms())]

    # ---- status, events, commands -------------------------------------------------------------

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics[Channel.STATUS], encode(self.status()), qos=1,
                             retain=True, timeout=self.gw.publish_timeout_s)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_now.wait(), self.gw.status_interval_s)
            self._status_now.clear()
            await self._publish_status(client)

    async def _event_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._events_ready.wait()
            self._events_ready.clear()
            while self._events:
                event = self._events[0]
                await client.publish(self.topics[Channel.EVENTS], encode(event), qos=1,
                                     timeout=self.gw.publish_timeout_s)
                self._events.popleft()

    async def _command_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if str(message.topic) != self.topics[Channel.CMD]:
                continue
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            ack = await self.commands.handle(raw)
            await client.publish(self.topics[Channel.CMD_ACK], encode(ack), qos=1,
                                 timeout=self.gw.publish_timeout_s)


def software() -> str:
    """The software id reported in status messages."""
    return f"fleet-gateway {__version__}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
