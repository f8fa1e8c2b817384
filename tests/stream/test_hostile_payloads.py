"""Nothing a sender controls can stop ingest.

Generated hostile payloads (mutated telemetry with NUL and unpaired surrogates in keys and
values, raw bytes, the issue's own NUL-key message) go through the real broker into a running
`fleet stream`, its sink and the database. After each batch a canary from another vehicle must
still be stored, every payload the decoder refuses must be a dead letter carrying its exact
bytes, and the stream must still run. A row the database itself refuses (a constraint the
test adds) becomes a dead letter on its own while the rest of its batch is committed.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.protocol import Channel, Reject, Sample, Telemetry, decode, topic_for
from deploy.services import ADMIN_ROLE, LocalServices, drop_database
from stream.sink import pg_text
from tests.conftest import TestDatabase, make_database
from tests.core.payloads import json_values, mutated, telemetry
from tests.stream.conftest import Fleet, make_fleet
from tests.stream.streamproc import StreamProcess, count, mqtt_client, publish, wait_for

pytestmark = [pytest.mark.services, pytest.mark.timeout(600)]

NOW_MS = int(time.time() * 1000)
# json.dumps writes NUL and an unpaired surrogate as \u escapes, the form a hostile sender uses.
NUL_KEY = json.dumps({"v": 1, "source": "gateway", "samples": [{"seq": 1, "t_ms": NOW_MS}],
                      "\x00x": 1}).encode()
NUL_IN_SAMPLE = json.dumps({"v": 1, "source": "gateway",
                            "samples": [{"seq": 2, "t_ms": NOW_MS, "\x00k": 1}]}).encode()
SURROGATE_KEY = json.dumps({"v": 1, "source": "gateway", "samples": [{"seq": 3, "t_ms": NOW_MS}],
                            "\ud800": 1}).encode()


def as_bytes(value: object) -> bytes:
    # ensure_ascii keeps NUL and lone surrogates as \u escapes, the form a hostile sender uses.
    return json.dumps(value).encode()


hostile = st.one_of(
    mutated(telemetry()).map(as_bytes),
    json_values.map(as_bytes),
    st.binary(max_size=200),
    st.sampled_from([NUL_KEY, NUL_IN_SAMPLE, SURROGATE_KEY, b"\xff\xfe", b"[" * 5000]),
)


@pytest.fixture(scope="module")
def fleet_db(services: LocalServices) -> Iterator[tuple[TestDatabase, Fleet]]:
    db = make_database(services)
    fleet = make_fleet(db, f"h{uuid.uuid4().hex[:10]}", ["v1", "v2"])
    yield db, fleet
    drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory, services: LocalServices,
           fleet_db: tuple[TestDatabase, Fleet]) -> Iterator[StreamProcess]:
    db, fleet = fleet_db
    proc = StreamProcess(tmp_path_factory.mktemp("stream"), ingest_url=db.ingest_url,
                         mqtt_url=services.mqtt_url(), redis_url=services.redis_url(),
                         tenant=fleet.slug)
    proc.presubscribe()
    proc.start()
    yield proc
    proc.stop()


_canary_seq = itertools.count(1)


@given(payloads=st.lists(hostile, min_size=1, max_size=8))
@example(payloads=[NUL_KEY, NUL_IN_SAMPLE, SURROGATE_KEY])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_hostile_payloads_never_stop_ingest(payloads: list[bytes], stream: StreamProcess,
                                            fleet_db: tuple[TestDatabase, Fleet]) -> None:
    db, fleet = fleet_db
    client = mqtt_client(stream.mqtt_url)
    try:
        for payload in payloads:
            client.publish(topic_for(fleet.slug, "v1", Channel.TELEMETRY), payload,
                           qos=1).wait_for_publish(10)
        seq = next(_canary_seq)
        publish(client, fleet.slug, "v2", [Sample(seq=seq, t_ms=NOW_MS + seq, rpm=900.0)])
    finally:
        client.disconnect()
    wait_for(lambda: count(db.owner_url, "SELECT count(*) FROM telemetry t JOIN vehicles v "
                           "ON v.id = t.vehicle_id WHERE v.code = 'v2' AND t.seq = %s", seq),
             60, f"canary {seq} (stream log: {stream.log_text()[-2000:]})")
    assert stream.proc is not None
    assert stream.proc.poll() is None, stream.log_text()
    refused = [p for p in payloads if isinstance(decode(p, Telemetry), Reject)]
    with psycopg.connect(db.owner_url) as conn:
        stored = {bytes(r[0]) for r in conn.execute(
            "SELECT payload FROM ingest_rejects WHERE payload = ANY(%s)", (refused,))}
    assert stored == set(refused)


def test_a_row_the_database_refuses_is_a_dead_letter_and_the_rest_is_stored(
        tmp_path: Path, services: LocalServices, database: TestDatabase) -> None:
    fleet = make_fleet(database, f"r{uuid.uuid4().hex[:10]}", ["v1"])
    with psycopg.connect(database.admin_url) as conn:
        # A constraint stands in for any row the database cannot take (a value out of a
        # column's range, a future check): the sink must not know which.
        conn.execute("ALTER TABLE telemetry ADD CONSTRAINT no_1234_rpm "
                     "CHECK (rpm IS DISTINCT FROM 1234)")
    proc = StreamProcess(tmp_path, ingest_url=database.ingest_url, mqtt_url=services.mqtt_url(),
                         redis_url=services.redis_url(), tenant=fleet.slug)
    proc.presubscribe()
    proc.start()
    try:
        client = mqtt_client(services.mqtt_url())
        publish(client, fleet.slug, "v1", [Sample(seq=s, t_ms=NOW_MS + s,
                                                  rpm=1234.0 if s == 3 else 800.0)
                                           for s in range(1, 6)])
        client.disconnect()
        wait_for(lambda: count(database.owner_url, "SELECT count(*) FROM ingest_rejects "
                               "WHERE reason = 'refused_by_database'") == 1,
                 60, f"the dead letter ({proc.log_text()[-2000:]})")
        assert count(database.owner_url, "SELECT count(*) FROM telemetry") == 4
        with psycopg.connect(database.owner_url) as conn:
            row = conn.execute("SELECT vehicle_code, sample_seq, detail, payload "
                               "FROM ingest_rejects").fetchone()
        assert row is not None
        code, seq, detail, payload = row
        assert (code, seq) == ("v1", 3)
        assert "no_1234_rpm" in detail
        assert json.loads(bytes(payload))["rpm"] == 1234.0
        assert proc.proc is not None
        assert proc.proc.poll() is None
    finally:
        proc.stop()


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_pg_text_makes_every_string_storable(value: str) -> None:
    stored = pg_text(value)
    stored.encode("utf-8")  # raises for an unpaired surrogate
    assert "\x00" not in stored
    if "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        assert stored == value
