"""Samsara data through the whole pipeline: mock -> puller -> MQTT -> stream -> TimescaleDB.

Runs the real `fleet stream` (tests/stream/streamproc.py) on the test database, so the pulled
samples are stored like gateway data and trigger geofence events.
"""

from __future__ import annotations

import asyncio
import copy
import math
from pathlib import Path

import psycopg
import pytest

from simulators.samsara import MockSamsara
from tests.integrations.test_samsara import drain, rig
from tests.stream.streamproc import StreamProcess, count

pytestmark = pytest.mark.services

STEPS = 40
STEP_S = 5.0
FENCE_STEP = 20
FENCE_RADIUS_M = 200.0


async def test_samsara_lands_in_timescaledb_and_fires_geofences(
        tmp_path: Path, database, fleet, mqtt_url, redis_url) -> None:
    mock = MockSamsara(vehicles=1, use_vehicle_model=False, start_offset_s=-3600, page_size=50)
    ghost = copy.deepcopy(mock.trucks[0])  # where truck 0 will be at FENCE_STEP
    for _ in range(FENCE_STEP):
        ghost.step(STEP_S)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m)"
                     " VALUES (%s, 'yard', 'circle',"
                     " ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, %s)",
                     (fleet.tenant_id, ghost.lon, ghost.lat, FENCE_RADIUS_M))
    stream = StreamProcess(tmp_path, ingest_url=database.ingest_url, mqtt_url=mqtt_url,
                           redis_url=redis_url, tenant=fleet.slug)
    stream.presubscribe()
    stream.start()
    try:
        async with rig(database, fleet, mqtt_url, mock) as r:
            cursor = await drain(r, None)
            mock.advance(STEP_S, steps=STEPS)
            await drain(r, cursor)
            published = r.puller.stats.samples
        assert published == 3 * (STEPS + 1)
        url = database.owner_url
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while count(url, "SELECT count(*) FROM telemetry WHERE source = 'samsara'") < published \
                or count(url, "SELECT count(*) FROM geofence_events") < 2:
            assert loop.time() < deadline, stream.log_text()
            await asyncio.sleep(0.3)
    finally:
        stream.stop()
    with psycopg.connect(database.owner_url) as conn:
        events = [r[0] for r in conn.execute(
            "SELECT event_type FROM geofence_events ORDER BY time")]
        odo = conn.execute("SELECT max(odometer_km) FROM telemetry").fetchone()[0]
        fixes = conn.execute("SELECT count(*) FROM telemetry WHERE lat_e7 IS NOT NULL"
                             ).fetchone()[0]
    assert events[:2] == ["enter", "exit"]
    assert fixes == STEPS + 1
    assert math.isclose(odo, mock.trucks[0].odometer_m / 1000, abs_tol=0.01)
