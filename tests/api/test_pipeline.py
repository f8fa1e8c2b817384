"""Through the real pipeline: MQTT telemetry -> `fleet stream` -> Redis -> `/api/live`, and
`vehicle_state` -> `/api/positions`. Uses the stream's own test harness
(`tests/stream/streamproc.py`) to run `fleet stream` against this module's database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from core.protocol import Sample
from tests.api.conftest import World
from tests.api.test_live_socket import positions_of, subscribe, wait_for
from tests.stream.streamproc import StreamProcess, mqtt_client, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_live_positions_and_geofence_event_through_the_stream(
        world: World, tmp_path: Path, services: Any) -> None:
    """A vehicle driving into the depot shows up live, with the stream's geofence event."""
    a = world.a
    stream = StreamProcess(tmp_path, ingest_url=world.db.ingest_url,
                           mqtt_url=services.mqtt_url(), redis_url=world.redis_url,
                           tenant=a.slug)
    stream.presubscribe()
    stream.start()
    mqtt = mqtt_client(services.mqtt_url())
    ws, _ = await subscribe(world.client, a.tokens["admin"])
    try:
        vid = a.vehicles["assigned"]
        now_ms = int(time.time() * 1000)
        # From 1 km west of the depot (13.40, 52.52; r = 300 m) into its centre.
        # 100 m every 10 s (36 km/h): plausible for the stream's GPS filters.
        samples = [Sample(seq=now_ms + i, t_ms=now_ms - 110_000 + i * 10_000, lat_deg=52.52,
                          lon_deg=13.385 + i * 0.0015, speed_kph=40.0, heading_deg=90.0,
                          ignition=True, gps_fix=1, sats=9, hdop=0.9)
                   for i in range(11)]
        for s in samples:
            await asyncio.to_thread(publish, mqtt, a.slug, "assigned", [s])
        frames = await wait_for(ws, lambda f: any(
            (p.get("lon") or 0) >= 13.3999 for p in positions_of([f], vid)), wait_s=60)
        events = [e for f in frames for e in f.get("events", [])]
        if not any(e["kind"] == "geofence" for e in events):
            more = await wait_for(ws, lambda f: any(e["kind"] == "geofence"
                                                    for e in f.get("events", [])), wait_s=30)
            events += [e for f in more for e in f.get("events", [])]
        enter = next(e for e in events if e["kind"] == "geofence")
        assert enter["event_type"] == "enter"
        assert enter["geofence_id"] == str(a.geofence_id)
        positions = await (await world.client.get(
            "/api/positions", headers=world.auth(a.tokens["admin"]))).json()
        state = next(p for p in positions["items"] if p["vehicle_id"] == str(vid))
        assert state["lon"] == pytest.approx(13.40, abs=1e-6)
    except (AssertionError, TimeoutError):
        print(stream.log_text())
        raise
    finally:
        await ws.close()
        mqtt.disconnect()
        mqtt.loop_stop()
        stream.stop()
