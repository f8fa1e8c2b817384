"""The MQTT source against the real broker and database: inbox, acks, resume, pruning."""

from __future__ import annotations

import time
import uuid

from core.protocol import Channel, topic_for
from core.settings import MqttSettings
from stream.config import SourceSettings
from stream.envelopes import InboxMessage
from stream.mqtt_source import MqttSource, _Inbox, _Received
from tests.conftest import TestDatabase
from tests.stream.streamproc import count, mqtt_client, wait_for


def poll(part, n: int, timeout_s: float = 20) -> list[InboxMessage]:
    got: list[InboxMessage] = []

    def more() -> bool:
        got.extend(part.next_batch())
        return len(got) >= n

    wait_for(more, timeout_s, f"{n} messages from the source", interval_s=0.02)
    return got


def source_for(database: TestDatabase, mqtt_url: str, tenant_slug: str,
               **settings: int) -> tuple[MqttSource, str]:
    """A one-partition source of its own (group, client ids) and the topic of vehicle v1."""
    cfg = SourceSettings(share_group=f"g{uuid.uuid4().hex[:8]}", tenant=tenant_slug,
                         client_id_prefix=f"s{uuid.uuid4().hex[:8]}", partitions=1,
                         session_expiry_s=60, **settings)
    source = MqttSource(mqtt=MqttSettings(url=mqtt_url), source=cfg,
                        database_url=database.ingest_url)
    return source, topic_for(tenant_slug, "v1", Channel.TELEMETRY)


def test_inbox_log_append_read_prune(database: TestDatabase) -> None:
    inbox = _Inbox(database.ingest_url, "s-p0", 10)
    assert inbox.last_offset() == 0
    inbox.append(1, [_Received(i, 1, "t", bytes([i]), 1_780_000_000_000 + i) for i in range(5)])
    assert (inbox.first_offset(), inbox.last_offset()) == (1, 5)
    rows = inbox.read(2, 10)
    assert [(m.offset, m.payload, m.received_ms) for m in rows] == [
        (3, b"\x02", 1_780_000_000_002), (4, b"\x03", 1_780_000_000_003),
        (5, b"\x04", 1_780_000_000_004)]
    inbox.prune(3)
    assert inbox.first_offset() == 4
    inbox.close()


def test_messages_are_committed_before_ack_and_replayed_on_resume(
        database: TestDatabase, mqtt_url: str, tenant_slug: str) -> None:
    source, topic = source_for(database, mqtt_url, tenant_slug)
    part = source.build_part("inbox", "p0", None)
    client = mqtt_client(mqtt_url)
    for i in range(3):
        client.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
    got = poll(part, 3)
    assert [m.payload for m in got] == [b"m0", b"m1", b"m2"]
    assert [m.offset for m in got] == [1, 2, 3]
    assert count(database.owner_url, "SELECT count(*) FROM stream_inbox") == 3
    snapshot = part.snapshot()
    assert snapshot == 3
    # Handed on after the snapshot, then "crash": the resumed partition replays offset 4.
    client.publish(topic, b"m3", qos=1).wait_for_publish(10)
    assert [m.payload for m in poll(part, 1)] == [b"m3"]
    part.close()
    resumed = source.build_part("inbox", "p0", snapshot)
    replayed = poll(resumed, 1)
    assert [(m.offset, m.payload) for m in replayed] == [(4, b"m3")]
    # Acknowledged messages are not redelivered by the broker: nothing more arrives.
    time.sleep(1.0)
    assert resumed.next_batch() == []
    # Received but never committed (the process dies before its intake commits it; here the
    # intake is stopped first): not acknowledged, so the broker delivers it again.
    resumed.halt.set()
    resumed.intake.join(10)
    client.publish(topic, b"m4", qos=1).wait_for_publish(10)
    wait_for(lambda: len(resumed.received) == 1, 20, "m4 to arrive")
    resumed.close()
    again = source.build_part("inbox", "p0", 4)
    assert [(m.offset, m.payload) for m in poll(again, 1)] == [(5, b"m4")]
    # Pruning: rows covered by a snapshot older than the retention time go, newer ones stay.
    again.snapshots.append((time.monotonic() - 10_000, 3))
    again.snapshots.append((time.monotonic(), 5))
    again.last_prune = 0.0
    again.next_batch()
    assert count(database.owner_url, "SELECT min(inbox_offset) FROM stream_inbox") == 4
    again.close()
    client.disconnect()


def test_a_partition_lets_messages_gather_for_linger_ms(
        database: TestDatabase, mqtt_url: str, tenant_slug: str) -> None:
    """Messages are committed (and handed on) together once the oldest has waited
    `linger_ms`, or at once when a batch is full: here `receive_maximum` (3) messages, all the
    broker sends before we acknowledge."""
    source, topic = source_for(database, mqtt_url, tenant_slug, linger_ms=3000, receive_maximum=3)
    part = source.build_part("inbox", "p0", None)
    client = mqtt_client(mqtt_url)
    try:
        for i in range(2):
            client.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
        wait_for(lambda: len(part.received) == 2, 20, "two messages to arrive")
        time.sleep(0.5)
        assert part.next_batch() == []  # still gathering: nothing committed yet
        assert count(database.owner_url, "SELECT count(*) FROM stream_inbox") == 0
        assert part.next_awake() is not None
        # A full batch goes at once.
        client.publish(topic, b"m2", qos=1).wait_for_publish(10)
        assert [m.payload for m in poll(part, 3, timeout_s=2)] == [b"m0", b"m1", b"m2"]
        # A lone message goes once it has waited linger_ms, not before.
        client.publish(topic, b"m3", qos=1).wait_for_publish(10)
        sent_ms = time.time_ns() // 1_000_000
        got = poll(part, 1)
        assert [m.payload for m in got] == [b"m3"]
        assert time.time_ns() // 1_000_000 - sent_ms >= 2900
    finally:
        part.close()
        client.disconnect()


def test_a_backlog_waits_in_the_inbox_not_in_the_broker(
        database: TestDatabase, mqtt_url: str, tenant_slug: str) -> None:
    """The intake commits and acknowledges what arrives whether or not the dataflow asks for
    it: with the worker not polling, every message is in the inbox (none left queued at the
    broker), only `max_ahead_messages` of them also in memory; handed on later, all come in
    offset order, from memory and read back from the inbox alike."""
    source, topic = source_for(database, mqtt_url, tenant_slug, linger_ms=0,
                               receive_maximum=5, max_batch_messages=5, max_ahead_messages=7)
    part = source.build_part("inbox", "p0", None)
    client = mqtt_client(mqtt_url)
    try:
        for i in range(40):
            client.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
        wait_for(lambda: count(database.owner_url, "SELECT count(*) FROM stream_inbox") == 40,
                 20, "the intake to commit all 40 messages without a poll")
        assert part.ready_messages <= 7
        got = poll(part, 40)
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(40)]
        assert [m.offset for m in got] == list(range(1, 41))
        assert part.next_batch() == []
    finally:
        part.close()
        client.disconnect()
