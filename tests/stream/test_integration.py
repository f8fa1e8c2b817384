"""Integration: MQTT (Mosquitto) -> `fleet stream` subprocess -> TimescaleDB.

One scenario, three ways: a clean run (rows, events, rejects, live feed), a run whose stream is
killed with SIGKILL in the middle and restarted, and a run on a cluster of two processes
sharing the subscription. All must end with exactly the same rows and geofence events.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.live import LivePosition, decode_live, live_channel
from core.protocol import Channel, Sample, topic_for
from tests.conftest import TestDatabase
from tests.stream.conftest import Fleet
from tests.stream.streamproc import StreamProcess, count, mqtt_client, publish, wait_for

pytestmark = pytest.mark.timeout(180)

VEHICLES = ("v1", "v2", "v3")
SAMPLES = 300
PER_MESSAGE = 10
FENCE = "POLYGON((13.39 52.495, 13.41 52.495, 13.41 52.515, 13.39 52.515, 13.39 52.495))"


def lat_at(seq: int) -> float:
    """Northbound at about 54 km/h: 1 Hz fixes 15 m apart, through the fence and out."""
    return 52.49 + seq * 0.000135


def inside(seq: int) -> bool:
    return 52.495 < lat_at(seq) < 52.515


FIRST_IN = next(s for s in range(1, SAMPLES + 1) if inside(s))
FIRST_OUT = next(s for s in range(FIRST_IN, SAMPLES + 1) if not inside(s))


def route(vehicle_index: int, t0_ms: int) -> list[Sample]:
    """1 Hz samples of one vehicle: one enter and one exit."""
    return [Sample(seq=seq, t_ms=t0_ms + seq * 1000, lat_deg=lat_at(seq),
                   lon_deg=13.40 + vehicle_index * 1e-4, speed_kph=54.0, ignition=True,
                   rpm=1500.0) for seq in range(1, SAMPLES + 1)]


def add_fence(db: TestDatabase, fleet: Fleet) -> None:
    with psycopg.connect(db.owner_url) as conn:
        conn.execute("INSERT INTO geofences (tenant_id, name, kind, geometry) "
                     "VALUES (%s, 'depot', 'polygon', ST_GeogFromText(%s))",
                     (fleet.tenant_id, FENCE))


def messages(fleet: Fleet) -> list[tuple[str, list[Sample]]]:
    """Interleaved messages of every vehicle, in order per vehicle."""
    t0 = (time.time_ns() // 1_000_000) - 3_600_000
    routes = {v: route(i, t0) for i, v in enumerate(VEHICLES)}
    out = []
    for k in range(0, SAMPLES, PER_MESSAGE):
        for v in VEHICLES:
            out.append((v, routes[v][k:k + PER_MESSAGE]))
    return out


def assert_exact_results(db: TestDatabase, fleet: Fleet, stream: StreamProcess) -> None:
    """Every sample once; one enter and one exit per vehicle; nothing else."""
    total = SAMPLES * len(VEHICLES)
    url = db.owner_url
    wait_for(lambda: stream.alive() and count(url, "SELECT count(*) FROM telemetry") >= total, 90,
             f"{total} telemetry rows\n{stream.log_text()}")
    wait_for(lambda: stream.alive() and count(url, "SELECT count(*) FROM geofence_events "
                                "WHERE event_type IN ('enter', 'exit')") >= 2 * len(VEHICLES),
             30, f"geofence events\n{stream.log_text()}")
    time.sleep(2.0)  # anything spurious would have arrived by now
    assert count(url, "SELECT count(*) FROM telemetry") == total
    assert count(url, "SELECT count(DISTINCT (vehicle_id, seq)) FROM telemetry") == total
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT v.code, e.event_type, count(*), min(e.seq) FROM geofence_events e "
            "JOIN vehicles v ON v.id = e.vehicle_id GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    # min_fixes = 2: the second fix inside (or outside) confirms the change.
    expected = []
    for v in VEHICLES:
        expected += [(v, "enter", 1, FIRST_IN + 1), (v, "exit", 1, FIRST_OUT + 1)]
    assert rows == expected


@pytest.fixture
def stream_factory(tmp_path: Path, database: TestDatabase, mqtt_url: str, redis_url: str,
                   fleet: Fleet):
    made: list[StreamProcess] = []

    def make(**kw: Any) -> StreamProcess:
        s = StreamProcess(tmp_path, ingest_url=database.ingest_url, mqtt_url=mqtt_url,
                          redis_url=redis_url, tenant=fleet.slug, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_rows_events_rejects_and_live_feed(database: TestDatabase, fleet: Fleet, mqtt_url: str,
                                           redis_url: str, stream_factory) -> None:
    add_fence(database, fleet)
    stream = stream_factory()
    stream.presubscribe()
    live = redis.Redis.from_url(redis_url).pubsub()
    live.subscribe(live_channel(fleet.tenant_id))
    client = mqtt_client(mqtt_url)
    for vehicle, samples in messages(fleet):
        publish(client, fleet.slug, vehicle, samples)
    client.publish(topic_for(fleet.slug, "v1", Channel.TELEMETRY), b"{oops", qos=1)
    client.publish(topic_for(fleet.slug, "ghost", Channel.TELEMETRY),
                   b'{"v":1,"source":"gps","samples":[{"seq":1,"t_ms":1780000000000}]}', qos=1)
    publish(client, fleet.slug, "old", [Sample(seq=1, t_ms=1780000000000)])
    client.disconnect()
    stream.start()
    assert_exact_results(database, fleet, stream)
    with psycopg.connect(database.owner_url) as conn:
        rejects = conn.execute("SELECT reason, vehicle_code, tenant_id = %s FROM ingest_rejects "
                               "ORDER BY reason", (fleet.tenant_id,)).fetchall()
        assert rejects == [("inactive_vehicle", "old", True), ("malformed", "v1", True),
                           ("unknown_vehicle", "ghost", True)]
        states = conn.execute("SELECT count(*), min(last_seq) FROM vehicle_state").fetchone()
        assert states == (3, SAMPLES)
    wait_for(lambda: count(database.owner_url, "SELECT sum(samples) FROM telemetry_1m")
             == SAMPLES * len(VEHICLES), 30, "rollups")
    positions = []

    def got_position() -> bool:
        msg = live.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            decoded = decode_live(msg["data"])
            if isinstance(decoded, LivePosition):
                positions.append(decoded)
        return bool(positions)

    wait_for(got_position, 20, "a live position on Redis")
    assert positions[0].code in VEHICLES


@pytest.mark.parametrize("processes", [1, 2])
def test_kill9_mid_run_loses_and_duplicates_nothing(database: TestDatabase, fleet: Fleet,
                                                     mqtt_url: str, stream_factory,
                                                     processes: int) -> None:
    add_fence(database, fleet)
    # Small polls, so the kill lands between commits rather than after one big batch.
    stream = stream_factory(processes=processes, partitions=processes,
                            env={"FLEET_SOURCE_MAX_BATCH_MESSAGES": "3"})
    stream.presubscribe()
    stream.start()
    msgs = messages(fleet)
    client = mqtt_client(mqtt_url)
    publish(client, fleet.slug, *msgs[0])
    wait_for(lambda: count(database.owner_url, "SELECT count(*) FROM telemetry") > 0, 60,
             f"the stream to start\n{stream.log_text()}")
    msgs = msgs[1:]

    bad_topic = topic_for(fleet.slug, "v1", Channel.TELEMETRY)

    def produce() -> None:
        client.publish(bad_topic, b"{broken-1", qos=1).wait_for_publish(10)
        for vehicle, samples in msgs:
            publish(client, fleet.slug, vehicle, samples)
            time.sleep(0.03)
        client.publish(bad_topic, b"{broken-2", qos=1).wait_for_publish(10)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    total = SAMPLES * len(VEHICLES)
    wait_for(lambda: count(database.owner_url, "SELECT count(*) FROM telemetry") > total // 3,
             60, f"a third of the rows before the kill\n{stream.log_text()}", interval_s=0.05)
    stream.kill9()
    producer.join(60)
    client.disconnect()
    assert count(database.owner_url, "SELECT count(*) FROM telemetry") < total
    stream.start()
    assert_exact_results(database, fleet, stream)
    # Dead letters are idempotent too: the replay re-derived them, the unique key kept one each.
    with psycopg.connect(database.owner_url) as conn:
        rejects = conn.execute("SELECT payload FROM ingest_rejects ORDER BY 1").fetchall()
    assert rejects == [(b"{broken-1",), (b"{broken-2",)]


def test_two_processes_on_a_shared_subscription_match_one(database: TestDatabase, fleet: Fleet,
                                                           mqtt_url: str, stream_factory) -> None:
    add_fence(database, fleet)
    stream = stream_factory(partitions=2, processes=2)
    stream.presubscribe()
    client = mqtt_client(mqtt_url)
    for vehicle, samples in messages(fleet):
        publish(client, fleet.slug, vehicle, samples)
    client.disconnect()
    stream.start()
    assert_exact_results(database, fleet, stream)
    with psycopg.connect(database.owner_url) as conn:
        parts = conn.execute("SELECT source_partition, count(*) FROM stream_inbox "
                             "GROUP BY 1 ORDER BY 1").fetchall()
    # The broker split the messages between both sessions (the inbox log is per client id).
    assert [p for p, _ in parts] == [f"{stream.prefix}-p0", f"{stream.prefix}-p1"]
