"""Issue #23, fairness: a device over its limit is dead-lettered and does not cost the others
their data (the real broker, `fleet stream` and database)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.protocol import Channel, Sample, Source, Telemetry, encode, topic_for
from deploy.services import LocalServices
from stream.config import LimitSettings
from stream.limits import Limiter
from stream.mqtt_source import PARTITION_SHARE_HEADROOM
from tests.conftest import TestDatabase
from tests.stream.conftest import make_fleet
from tests.stream.streamproc import StreamProcess, count, mqtt_client, wait_for

NORMAL = 50
SECONDS = 12
LIMIT_PER_S = 20.0
BURST_S = 2.0


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(1, 1000), burst_s=st.floats(1, 30), share=st.sampled_from((1, .5, .25)),
       gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=400))
def test_a_device_never_gets_more_than_its_rate_and_burst(
        rate: float, burst_s: float, share: float, gaps: list[float]) -> None:
    """Over any run of arrivals, what one device gets through is at most its bucket plus its
    rate over the elapsed time, and a device within its rate loses nothing."""
    cfg = LimitSettings(device_messages_per_s=rate, device_kib_per_s=0,
                        tenant_messages_per_s=0, tenant_kib_per_s=0, burst_s=burst_s)
    limiter = Limiter(cfg, share)
    now, admitted = 1000.0, 0
    for gap in gaps:
        now += gap
        admitted += limiter.check("fleet/v1/t/v/telemetry", 100, now) is None
    elapsed = now - 1000.0
    assert admitted <= max(rate * share * burst_s, 1) + rate * share * elapsed + 1e-6
    calm = Limiter(cfg, share)
    spacing = 1.0001 / (rate * share)  # just within the rate (floats)
    assert all(calm.check("fleet/v1/t/v/telemetry", 100, 2000.0 + i * spacing) is None
               for i in range(len(gaps)))


def test_limits_refuse_a_bucket_smaller_than_one_message() -> None:
    with pytest.raises(ValueError, match="device_kib_per_s"):
        LimitSettings(device_kib_per_s=10, burst_s=2)


def _flood(client: object, topic: str, stop: threading.Event, sent: list[int]) -> None:
    """Publish as fast as the client can until told to stop."""
    seq = 0
    payload_of = encode
    while not stop.is_set():
        seq += 1
        client.publish(topic, payload_of(Telemetry(  # type: ignore[attr-defined]
            source=Source.SIMULATOR, samples=[Sample(seq=seq, t_ms=time.time_ns() // 1_000_000,
                                                     speed_kph=50.0)])), qos=1)
        if seq % 200 == 0:
            time.sleep(0.001)  # let paho's network thread drain its queue
    sent.append(seq)


def test_a_flooding_device_is_dead_lettered_and_the_others_lose_nothing(
        tmp_path: Path, services: LocalServices, database: TestDatabase) -> None:
    codes = [f"n{i:02d}" for i in range(NORMAL)]
    fleet = make_fleet(database, f"f{uuid.uuid4().hex[:10]}", [*codes, "flood"])
    proc = StreamProcess(tmp_path, ingest_url=database.ingest_url, mqtt_url=services.mqtt_url(),
                         redis_url=services.redis_url(), tenant=fleet.slug, partitions=2,
                         env={"FLEET_LIMITS_DEVICE_MESSAGES_PER_S": str(LIMIT_PER_S),
                              "FLEET_LIMITS_BURST_S": str(BURST_S),
                              "FLEET_LIMITS_OVER_LIMIT_KEPT_PER_S": "5",
                              "FLEET_LIMITS_SUMMARY_INTERVAL_S": "2"})
    proc.presubscribe()
    proc.start()
    normal, flooder = mqtt_client(services.mqtt_url()), mqtt_client(services.mqtt_url())
    stop, sent = threading.Event(), []
    flood = threading.Thread(target=_flood, args=(
        flooder, topic_for(fleet.slug, "flood", Channel.TELEMETRY), stop, sent))
    try:
        flood.start()
        started = time.monotonic()
        for second in range(SECONDS):
            t_ms = time.time_ns() // 1_000_000
            for code in codes:
                normal.publish(topic_for(fleet.slug, code, Channel.TELEMETRY), encode(Telemetry(
                    source=Source.SIMULATOR, samples=[Sample(seq=second + 1, t_ms=t_ms,
                                                             speed_kph=40.0)])), qos=1)
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
        stop.set()
        flood.join(30)
        elapsed = time.monotonic() - started
        normal_rows = ("SELECT count(*) FROM telemetry t JOIN vehicles v ON v.id = t.vehicle_id "
                       "WHERE v.code LIKE 'n%%' AND v.tenant_id = %s")
        wait_for(lambda: count(database.owner_url, normal_rows, fleet.tenant_id)
                 == NORMAL * SECONDS, 120,
                 f"every normal sample stored ({proc.log_text()[-2000:]})")
        wait_for(lambda: count(database.owner_url, "SELECT count(*) FROM ingest_rejects "
                               "WHERE reason = 'over_limit' AND detail LIKE '%%dropped unread%%'"
                               " AND tenant_id = %s", fleet.tenant_id), 30,
                 "a dead letter counting what was dropped unread")
        with psycopg.connect(database.owner_url) as conn:
            kept = conn.execute(
                "SELECT count(*), count(DISTINCT vehicle_code), min(detail), "
                "bool_and(length(payload) > 0) FROM ingest_rejects WHERE reason = 'over_limit' "
                "AND tenant_id = %s AND detail NOT LIKE '%%dropped unread%%'",
                (fleet.tenant_id,)).fetchone()
            flood_rows = conn.execute(
                "SELECT count(*) FROM telemetry t JOIN vehicles v ON v.id = t.vehicle_id "
                "WHERE v.code = 'flood'").fetchone()
        assert kept is not None
        assert flood_rows is not None
        n_kept, devices, detail, with_payload = kept
        # Only the flooder is over its limit; its kept dead letters carry their payloads.
        assert (devices, with_payload) == (1, True)
        assert "over the limit of device messages: 20/s" in detail
        assert n_kept > 0
        # What got through is the limit's worth, not the flood: rate x (time + burst) for
        # the whole device, with each of the two partitions holding 1.5/2 of it (the
        # broker's turn-taking is not exact: stream.mqtt_source.PARTITION_SHARE_HEADROOM).
        assert sent[0] > 10 * flood_rows[0], (sent, flood_rows)
        assert flood_rows[0] <= PARTITION_SHARE_HEADROOM * LIMIT_PER_S * (elapsed + 5 + BURST_S)

        assert proc.proc is not None
        assert proc.proc.poll() is None, proc.log_text()
    finally:
        stop.set()
        for c in (normal, flooder):
            c.disconnect()
            c.loop_stop()
        proc.stop()
