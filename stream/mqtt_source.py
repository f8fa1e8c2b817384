"""The stream's own Bytewax source for MQTT, with a durable inbox in PostgreSQL.

`MqttSource` (public) validates its settings; `_MqttPartition` (private) does the I/O. Each
partition is one MQTT v5 client with a stable client id and a persistent session
(clean_start false + session expiry), subscribed at QoS 1 to the shared subscription
``$share/{group}/fleet/v1/+/+/telemetry``, so the broker splits messages across every
partition of every stream process.

Delivery guarantee (docs/stream.md): messages are acknowledged with manual PUBACKs only
after they are committed to `stream_inbox` (by the partition's intake thread, at the
database's pace, not the dataflow's); the dataflow reads from that log by offset and Bytewax
snapshots the offset each partition has handed on. So:

- killed before the inbox commit: the message is not acknowledged; the broker redelivers it
  to the session when the partition reconnects (or keeps it queued while it is away);
- killed after the commit: Bytewax resumes from its last snapshot and the partition replays
  the inbox from the offset in that snapshot, so the message is processed again, against
  the per-vehicle state of that same snapshot;
- a message committed but not yet acknowledged when killed is redelivered as well: the
  inbox then holds it twice and the per-vehicle dedupe (seq) drops the second copy.

The sinks are idempotent, so replays never leave duplicate rows.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import SettingsError
from core.mqtt_url import MqttTarget, parse_mqtt_url
from core.protocol import Channel, RejectReason, subscription
from core.settings import MqttSettings
from stream.config import LimitSettings, SourceSettings
from stream.database import RetryingConnection
from stream.envelopes import InboxMessage, RejectRow
from stream.errors import StreamConfigError, StreamSourceError
from stream.limits import Limiter, Verdict
from stream.sink import REJECTS

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 30.0
PARTITION_SHARE_HEADROOM = 1.5
"""A partition enforces 1.5 / partitions of each limit: the broker's turn-taking among a
share group's members is not exact (measured: a device held to 50/s by the broker still
crossed a partition's exact half a few times a minute), and the limits are a safety net
for a flood, not a meter."""
_STATS_EVERY_S = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class _Received:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class _OverLimit:
    """A dead letter the intake writes itself (a message over a limit, or a count of those
    dropped unread); `message` is acknowledged once it is committed."""

    topic: str
    detail: str
    payload: bytes
    received_ms: int
    message: _Received | None = None


class MqttSource(FixedPartitionedSource[InboxMessage, int]):
    """Bytewax source: MQTT shared subscription -> durable inbox -> `InboxMessage`s.

    The resume state of a partition is the inbox offset it last handed on.
    """

    def __init__(self, *, mqtt: MqttSettings, source: SourceSettings, database_url: str,
                 connect_timeout_s: float = 10.0, recovery: bool = True,
                 limits: LimitSettings | None = None, reject_payload_max_bytes: int = 65_536
                 ) -> None:
        """`recovery` says whether Bytewax snapshots this source (it decides inbox pruning);
        `limits` None turns the intake limits off (tests and benchmarks that play one device
        at a rate no vehicle has)."""
        try:
            self.target = parse_mqtt_url(mqtt.url)
        except SettingsError as exc:
            raise StreamConfigError(str(exc)) from exc
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise StreamConfigError("the MQTT source needs a postgresql:// URL for its inbox")
        if source.receive_maximum < 1:
            raise StreamConfigError("source.receive_maximum must be at least 1")
        self.mqtt = mqtt
        self.settings = source
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s
        self.recovery = recovery
        self.limits = limits
        self.reject_payload_max_bytes = reject_payload_max_bytes
        self.topic_filter = subscription(Channel.TELEMETRY, tenant=source.tenant,
                                         share_group=source.share_group)

    def list_parts(self) -> list[str]:
        """Every partition; Bytewax assigns each to exactly one worker of the cluster."""
        return [f"p{i}" for i in range(self.settings.partitions)]

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> _MqttPartition:
        """Open the partition's inbox and MQTT session."""
        return _MqttPartition(self, for_part, resume_state)


def _vehicle_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 else None


class _Inbox:
    """One partition's log in `stream_inbox` (single writer: the partition itself)."""

    def __init__(self, url: str, partition: str, connect_timeout_s: float,
                 halt: threading.Event | None = None) -> None:
        """`halt`, when set, ends a wait for an unreachable database with StreamSourceError.
        While the database is down nothing is acknowledged, so the broker keeps the messages."""
        self.partition = partition
        self.db = RetryingConnection(url, name=f"inbox {partition}", error=StreamSourceError,
                                     connect_timeout_s=connect_timeout_s, autocommit=True,
                                     stop=halt)
        self.tenant_ids: dict[str, UUID] = {}

    def last_offset(self) -> int:
        """Highest offset stored (0 when empty)."""
        def q(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT coalesce(max(inbox_offset), 0) FROM stream_inbox "
                               "WHERE source_partition = %s", (self.partition,)).fetchone()
            return int(row[0]) if row else 0
        return self.db.run("read", q)

    def first_offset(self) -> int:
        """Lowest offset still stored (0 when empty)."""
        def q(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT coalesce(min(inbox_offset), 0) FROM stream_inbox "
                               "WHERE source_partition = %s", (self.partition,)).fetchone()
            return int(row[0]) if row else 0
        return self.db.run("read", q)

    def append(self, first_offset: int, messages: list[_Received],
               rejects: list[RejectRow] | None = None) -> None:
        """Commit messages at offsets first_offset, first_offset + 1, ... and the intake's
        own dead letters in one transaction."""
        def q(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                if messages:
                    with cur.copy("COPY stream_inbox (source_partition, inbox_offset, "
                                  "received_at, topic, payload) FROM STDIN (FORMAT BINARY)"
                                  ) as copy:
                        copy.set_types(["text", "int8", "timestamptz", "text", "bytea"])
                        for i, m in enumerate(messages):
                            copy.write_row((self.partition, first_offset + i,
                                            _EPOCH + timedelta(milliseconds=m.received_ms),
                                            m.topic, m.payload))
                if rejects:
                    self._write_rejects(cur, rejects)
        self.db.run("append", q)

    def _write_rejects(self, cur: psycopg.Cursor[Any], rejects: list[RejectRow]) -> None:
        slugs = {r.topic.split("/")[2] for r in rejects if r.topic.count("/") >= 3}
        missing = [slug for slug in slugs if slug not in self.tenant_ids]
        if missing:
            for slug, tenant_id in cur.execute(
                    "SELECT slug, id FROM tenants WHERE slug = ANY(%s)", (missing,)):
                self.tenant_ids[slug] = tenant_id
        cols = ", ".join(REJECTS.columns)
        with cur.copy(f"COPY ingest_rejects ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(REJECTS.types))
            for r in rejects:
                parts = r.topic.split("/")
                tenant_id = self.tenant_ids.get(parts[2]) if len(parts) > 3 else None
                copy.write_row(REJECTS.row(replace(r, tenant_id=tenant_id)))

    def read(self, after: int, limit: int) -> list[InboxMessage]:
        """Stored messages with offsets > after, in order."""
        def q(conn: psycopg.Connection[Any]) -> list[InboxMessage]:
            rows = conn.execute(
                "SELECT inbox_offset, received_at, topic, payload FROM stream_inbox "
                "WHERE source_partition = %s AND inbox_offset > %s "
                "ORDER BY inbox_offset LIMIT %s", (self.partition, after, limit)).fetchall()
            # Integer arithmetic: the receive time is part of dead letters' idempotency key,
            # so a replay must reproduce the very millisecond the live run used.
            return [InboxMessage(self.partition, int(off), (at - _EPOCH) // _ONE_MS, topic,
                                 bytes(payload)) for off, at, topic, payload in rows]
        return self.db.run("read", q)

    def prune(self, upto: int) -> None:
        """Delete offsets <= upto."""
        def q(conn: psycopg.Connection[Any]) -> None:
            conn.execute("DELETE FROM stream_inbox WHERE source_partition = %s "
                         "AND inbox_offset <= %s", (self.partition, upto))
        self.db.run("prune", q)

    def close(self) -> None:
        """Drop the connection."""
        self.db.close()


class _MqttPartition(StatefulSourcePartition[InboxMessage, int]):
    """One MQTT session and its inbox log.

    Two threads share it. The *intake* (a thread of its own) takes what the broker sends,
    commits it to the inbox in batches and acknowledges it, as fast as the database takes
    it, whatever the dataflow's pace; the Bytewax worker hands on what is committed, in offset
    order, from memory while it is near (up to `source.max_ahead_messages`) and from the inbox
    beyond. So when the stream is slower than the load, the backlog waits on disk in
    `stream_inbox`, not in the broker's per-session queue, whose limit (Mosquitto's
    `max_queued_messages`) would drop messages silently, nor in the broker's memory.
    """

    def __init__(self, source: MqttSource, partition: str, resume_state: int | None) -> None:
        self.src = source
        self.cfg = source.settings
        self.partition = partition
        # The MQTT client id names the inbox log too: it is unique per deployment (two stream
        # clusters on one database must not share "p0"), and stable across restarts.
        self.client_id = f"{self.cfg.client_id_prefix}-{partition}"
        self.halt = threading.Event()
        self.wake = threading.Event()
        """Set when a full batch has arrived (or on close): the intake stops lingering."""
        self.inbox = _Inbox(source.database_url, self.client_id, source.connect_timeout_s,
                            self.halt)
        # The intake's own connection: it commits while the worker reads and prunes.
        self.writer = _Inbox(source.database_url, self.client_id, source.connect_timeout_s,
                             self.halt)
        self.last_written = self.inbox.last_offset()
        if resume_state is None:
            # No snapshot yet: replay whatever the inbox still holds, so nothing committed
            # (and acknowledged) before a crash that beat the first snapshot is lost.
            first = self.inbox.first_offset()
            self.emitted = max(first - 1, 0)
        else:
            self.emitted = resume_state
        # Bounded by MQTT flow control: the broker never has more than `receive_maximum`
        # unacknowledged messages in flight to this session, and we acknowledge only what we
        # have committed, so this queue cannot grow past that.
        self.received: collections.deque[_Received] = collections.deque()
        # Intake limits (`[limits]`): checked in the MQTT thread, summarised by the intake.
        self.limiter = (Limiter(source.limits, min(1.0, PARTITION_SHARE_HEADROOM
                                                   / self.cfg.partitions))
                        if source.limits is not None else None)
        self.limit_lock = threading.Lock()
        self.over: collections.deque[_OverLimit] = collections.deque()
        self.stat_over_kept = self.stat_over_dropped = 0
        self._full = min(self.cfg.max_batch_messages, self.cfg.receive_maximum)
        # Committed batches not yet handed on, kept for the worker (`lock` guards them and
        # `last_written`, which only the intake advances).
        self.lock = threading.Lock()
        self.ready: collections.deque[list[InboxMessage]] = collections.deque()
        self.ready_messages = 0
        self.failure: StreamSourceError | None = None
        self.snapshots: collections.deque[tuple[float, int]] = collections.deque()
        self.last_prune = time.monotonic()
        self.stat_messages, self.stat_commit_s = 0, 0.0
        self.stat_started = time.monotonic()
        self.connected = threading.Event()
        self.closing = False
        self.client = self._connect()
        self.intake = threading.Thread(target=self._intake, name=f"intake-{self.client_id}",
                                       daemon=True)
        self.intake.start()

    # -- MQTT ------------------------------------------------------------------------------
    def _connect(self) -> Client:
        target: MqttTarget = self.src.target
        client = Client(CallbackAPIVersion.VERSION2,
                        client_id=self.client_id,
                        protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            mq = self.src.mqtt
            client.tls_set(ca_certs=mq.ca_file or None, certfile=mq.cert_file or None,
                           keyfile=mq.key_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=self.cfg.reconnect_max_delay_s)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        try:
            client.connect(target.host, target.port, keepalive=self.src.mqtt.keepalive_s,
                           clean_start=False, properties=props)
        except OSError as exc:
            raise StreamSourceError(
                f"cannot connect to the MQTT broker {target.host}:{target.port}: {exc}") from exc
        client.loop_start()
        if not self.connected.wait(self.src.connect_timeout_s):
            client.loop_stop()
            raise StreamSourceError(f"MQTT broker {target.host}:{target.port} did not accept "
                              f"partition {self.partition} within {self.src.connect_timeout_s} s")
        return client

    def _on_connect(self, client: Client, _userdata: Any, flags: ConnectFlags,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT partition %s refused: %s", self.partition, reason)
            return
        # Subscribing again on every connect is harmless with a persistent session and
        # repairs a session that lost its subscription (expired, or never completed).
        client.subscribe(self.src.topic_filter, qos=1)
        log.info("MQTT partition %s connected as %s (session present: %s)", self.partition,
                 self.client_id, flags.session_present)
        self.connected.set()

    def _on_disconnect(self, _client: Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _props: Properties | None) -> None:
        if self.closing:  # our own disconnect on a clean stop
            log.info("MQTT partition %s disconnected", self.partition)
            return
        # paho reconnects by itself; unacknowledged messages come again on the new connection.
        log.warning("MQTT partition %s disconnected: %s", self.partition, reason)

    def _on_message(self, client: Client, _userdata: Any, msg: MQTTMessage) -> None:
        m = _Received(msg.mid, msg.qos, msg.topic, bytes(msg.payload),
                      time.time_ns() // 1_000_000)
        if self.limiter is not None:
            with self.limit_lock:
                verdict = self.limiter.check(m.topic, len(m.payload), time.monotonic())
            if verdict is not None:
                self._over_limit(client, m, verdict)
                return
        self.received.append(m)
        if len(self.received) >= self._full:
            self.wake.set()

    def _over_limit(self, client: Client, m: _Received, verdict: Verdict) -> None:
        """Keep the message as a dead letter (acknowledged once committed), or, beyond the
        kept share, acknowledge it unread: a flood costs no inbox row and no disk."""
        if verdict.keep:
            self.stat_over_kept += 1
            self.over.append(_OverLimit(
                m.topic, f"over the limit of {verdict.limit}; not processed",
                m.payload[:self.src.reject_payload_max_bytes], m.received_ms, m))
        else:
            self.stat_over_dropped += 1
            if m.qos > 0:
                client.ack(m.mid, m.qos)

    def _summarise_dropped(self) -> None:
        """One dead letter per device that had messages dropped unread: how many, since."""
        if self.limiter is None:
            return
        now, now_ms = time.monotonic(), time.time_ns() // 1_000_000
        with self.limit_lock:
            dropped = self.limiter.take_dropped(now)
        for d in dropped:
            self.over.append(_OverLimit(
                d.topic, f"{d.count} more messages over the limit in the last "
                f"{now - d.since:.0f} s were dropped unread (beyond "
                f"limits.over_limit_kept_per_s)", b"", now_ms))

    # -- the intake thread -----------------------------------------------------------------
    def _intake(self) -> None:
        """Commit and acknowledge batches until the partition closes; a failure is kept for
        the worker to raise (the stream stops, its supervisor restarts it)."""
        try:
            while not self.halt.is_set():
                self._summarise_dropped()
                if self._ripe():
                    self._commit_received()
                else:
                    self.wake.wait(self._wait_s())
                    self.wake.clear()
        except StreamSourceError as exc:
            if not self.halt.is_set():
                self.failure = exc
        except Exception as exc:  # noqa: BLE001 - anything else would stall the partition silently
            self.failure = StreamSourceError(f"inbox {self.client_id}: intake failed: {exc!r}")

    def _commit_received(self) -> None:
        taken: list[_Received] = []
        while self.received and len(taken) < self.cfg.max_batch_messages:
            taken.append(self.received.popleft())
        over: list[_OverLimit] = []
        while self.over and len(over) < self.cfg.max_batch_messages:
            over.append(self.over.popleft())
        first = self.last_written + 1
        t0 = time.perf_counter()
        self.writer.append(first, taken, [
            RejectRow(o.received_ms, RejectReason.OVER_LIMIT.value, o.detail, o.topic,
                      o.payload, vehicle_code=_vehicle_of(o.topic), partition=self.client_id)
            for o in over])
        self._count(len(taken), time.perf_counter() - t0)
        for m in [*taken, *(o.message for o in over if o.message is not None)]:
            if m.qos > 0:
                rc = self.client.ack(m.mid, m.qos)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # Not fatal: the message is in the inbox; the broker will redeliver it
                    # and dedupe drops the copy.
                    log.debug("PUBACK of mid %d failed: %s", m.mid, rc)
        if not taken:
            return
        batch = [InboxMessage(self.client_id, first + i, m.received_ms, m.topic, m.payload)
                 for i, m in enumerate(taken)]
        with self.lock:
            self.last_written = first + len(taken) - 1
            if self.ready_messages + len(batch) <= self.cfg.max_ahead_messages:
                self.ready.append(batch)
                self.ready_messages += len(batch)
            # else: the worker is far behind; it reads this batch back from the inbox

    def _wait_s(self) -> float:
        """How long the intake sleeps before looking again: until the gathering batch is
        due, or a poll interval when nothing has arrived."""
        if self.received:
            due_ms = self.received[0].received_ms + self.cfg.linger_ms
            return max(0.001, (due_ms - time.time_ns() // 1_000_000) / 1000)
        return self.cfg.poll_interval_ms / 1000

    def _count(self, messages: int, commit_s: float) -> None:
        """Log the inbox's share of the time every 30 s (to find the bottleneck)."""
        self.stat_messages += messages
        self.stat_commit_s += commit_s
        elapsed = time.monotonic() - self.stat_started
        if elapsed >= _STATS_EVERY_S:
            with self.lock:
                behind = self.last_written - self.emitted
            log.info("source %s: %d messages over %.0f s; inbox commits %.1f s; "
                     "%d committed messages not yet handed on; over the limits: %d kept as "
                     "dead letters, %d dropped unread", self.partition,
                     self.stat_messages, elapsed, self.stat_commit_s, behind,
                     self.stat_over_kept, self.stat_over_dropped)
            self.stat_messages, self.stat_commit_s = 0, 0.0
            self.stat_over_kept = self.stat_over_dropped = 0
            self.stat_started = time.monotonic()

    def _ripe(self) -> bool:
        """Whether the received messages make a batch now: a full one, or the oldest has
        waited `linger_ms`. Full is `max_batch_messages`, or `receive_maximum` if smaller:
        the broker sends no more than that before we acknowledge, so waiting for more
        would only stall it."""
        received = self.received
        if not received:
            return bool(self.over)
        if len(received) >= self._full or not self.cfg.linger_ms:
            return True
        return time.time_ns() // 1_000_000 - received[0].received_ms >= self.cfg.linger_ms

    # -- Bytewax ---------------------------------------------------------------------------
    def next_batch(self) -> list[InboxMessage]:
        """Hand on the next committed messages in offset order: the intake's batch in memory
        when it is the next one, else from the inbox (a replay after a restart, or a backlog
        beyond `max_ahead_messages`)."""
        if self.failure is not None:
            raise self.failure
        self._maybe_prune()  # on every poll: a busy partition is never idle
        with self.lock:
            written = self.last_written
            while self.ready and self.ready[0][-1].offset <= self.emitted:
                self.ready_messages -= len(self.ready.popleft())
            head = self.ready[0] if self.ready else None
            if head is not None and head[0].offset == self.emitted + 1:
                # Every contiguous batch the intake has committed, up to a full batch: a
                # batch costs the dataflow a sink transaction whatever its size, so under
                # load the worker must take what gathered while it was busy in one go.
                out: list[InboxMessage] = []
                while (self.ready and self.ready[0][0].offset == self.emitted + 1
                       and (not out or len(out) + len(self.ready[0])
                            <= self.cfg.max_batch_messages)):
                    batch = self.ready.popleft()
                    self.ready_messages -= len(batch)
                    out.extend(batch)
                    self.emitted = batch[-1].offset
                return out
        if self.emitted >= written:
            return []
        upto = head[0].offset - 1 if head is not None else written
        backlog = self.inbox.read(self.emitted, min(self.cfg.max_batch_messages,
                                                    upto - self.emitted))
        if backlog:
            self.emitted = backlog[-1].offset
            return backlog
        self.emitted = upto  # pruned meanwhile: nothing left to replay before `upto`
        return []

    def next_awake(self) -> datetime | None:
        """Poll again at once while committed messages wait, else after a poll interval
        (never block the worker)."""
        with self.lock:
            waiting = self.emitted < self.last_written
        if waiting or self.failure is not None:
            return None
        return datetime.now(UTC) + timedelta(milliseconds=self.cfg.poll_interval_ms)

    def snapshot(self) -> int:
        """The offset handed on last; remembered to know what may be pruned later."""
        self.snapshots.append((time.monotonic(), self.emitted))
        return self.emitted

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self.last_prune < _PRUNE_EVERY_S:
            return
        self.last_prune = now
        if not self.src.recovery:
            # Without snapshots a restart never rewinds: handed-on rows age out directly.
            self.snapshots.append((now, self.emitted))
        # A snapshot older than the retention time is certainly committed by now: the
        # dataflow will never rewind before it, so the rows it covers can go.
        upto = None
        while self.snapshots and now - self.snapshots[0][0] >= self.cfg.inbox_retention_s:
            upto = self.snapshots.popleft()[1]
        if upto:
            self.inbox.prune(upto)

    def close(self) -> None:
        """Stop the intake, disconnect without ending the broker session (it is persistent):
        what was received and not committed is unacknowledged, so the broker sends it again."""
        self.halt.set()
        self.wake.set()
        self.intake.join(10)
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()
        self.inbox.close()
        self.writer.close()
