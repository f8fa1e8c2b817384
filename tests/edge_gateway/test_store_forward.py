"""Store-and-forward under faults: broker outage, `kill -9` of the gateway, restarts of both.

Runs the real `fleet gateway` process against a private Mosquitto (temp dir, free port) fed by
an NMEA pty at 10 samples/s. Checks: every seq from 0 to the last one arrives; the first
arrival of each seq is in order; repeats are only redeliveries of batches that were in flight
at a kill (at-least-once, bounded by the in-flight window); the Last Will says `offline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.protocol import Status, Telemetry, decode
from tests.edge_gateway.helpers import PrivateBroker, mqtt_client, nmea, wait_for

pytestmark = pytest.mark.services

RMC = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
BATCH_MAX = 20
WINDOW = 4


class Collector:
    """A persistent-session subscriber that survives broker restarts."""

    def __init__(self, url: str, tenant: str) -> None:
        self.url = url
        self.tenant = tenant
        self.seqs: list[int] = []
        self.statuses: list[Status] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        while True:
            try:
                async with mqtt_client(self.url, identifier=f"sub-{self.tenant}",
                                       clean_start=False, properties=props) as client:
                    await client.subscribe(f"fleet/v1/{self.tenant}/#", qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        payload = bytes(m.payload)  # type: ignore[arg-type]
                        if m.topic.matches("+/+/+/+/telemetry"):
                            msg = decode(payload, Telemetry)
                            assert isinstance(msg, Telemetry), msg
                            self.seqs.extend(s.seq for s in msg.samples)
                        elif m.topic.matches("+/+/+/+/status") and payload:
                            st = decode(payload, Status)
                            assert isinstance(st, Status), st
                            self.statuses.append(st)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)


def _spool_state(path: Path) -> tuple[int, int, int]:
    """(samples waiting, first seq, next seq) from the gateway's spool while it runs."""
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        count = db.execute("SELECT count(*) FROM spool").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return int(count), int(meta["first_seq"]), int(meta["next_seq"])


async def test_outage_and_kill_9_lose_nothing(tmp_path: Path, tenant_slug: str) -> None:
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    master, slave = os.openpty()
    spool = tmp_path / "spool.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
tenant = "{tenant_slug}"
vehicle = "v1"
spool_path = "{spool}"
batch_interval_s = 0.2
batch_max_samples = {BATCH_MAX}
max_inflight_messages = {WINDOW}
reconnect_min_s = 0.2
reconnect_max_s = 1.0
publish_timeout_s = 5.0
[mqtt]
url = "{broker.url}"
keepalive_s = 5
[gps]
port = "{os.ttyname(slave)}"
[signals]
rates_hz = {{ gps_position = 10, gps_speed = 10, gps_course = 10 }}
""")

    log_file = (tmp_path / "gateway.log").open("ab")

    def start_gateway() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(config),
             "--log-level", "WARNING"], cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=log_file)

    async def feed() -> None:
        while True:
            os.write(master, RMC)
            await asyncio.sleep(0.05)

    collector = Collector(broker.url, tenant_slug)
    collect_task = asyncio.create_task(collector.run())
    feed_task = asyncio.create_task(feed())
    gateway = start_gateway()
    kills = 0
    try:
        await asyncio.wait_for(collector.connected.wait(), 10)
        await wait_for(lambda: len(collector.seqs) >= 20, 30, "first samples")

        # 1. Broker outage: the gateway keeps spooling.
        broker.stop()
        await asyncio.sleep(2.0)
        # 2. kill -9 the gateway during the outage, start it again.
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
        kills += 1
        gateway = start_gateway()
        await asyncio.sleep(1.5)
        # 3. Broker back: the backlog drains while new samples keep coming.
        broker.start()
        await asyncio.wait_for(collector.connected.wait(), 15)
        before = len(collector.seqs)
        await wait_for(lambda: len(collector.seqs) > before + 10, 30, "replay to start")
        # 4. kill -9 mid-stream.
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
        kills += 1
        gateway = start_gateway()
        before = len(collector.seqs)
        await wait_for(lambda: len(collector.seqs) > before + 20, 30, "samples after restart")
        # 5. Stop the input, let the spool drain, stop the gateway cleanly.
        feed_task.cancel()
        await wait_for(lambda: _spool_state(spool)[0] == 0, 30, "the spool to drain")
        _, first_seq, next_seq = _spool_state(spool)
        await wait_for(lambda: len(set(collector.seqs)) >= next_seq - first_seq, 30,
                       "every seq")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=15)
    finally:
        feed_task.cancel()
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(timeout=10)
        # Give the collector a moment for the Last Will, then stop everything.
        await asyncio.sleep(0.5)
        collect_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collect_task
        broker.stop()
        log_file.close()
        os.close(master)
        os.close(slave)

    seqs = collector.seqs
    assert set(seqs) == set(range(first_seq, next_seq)), "a sample went missing"
    first_arrivals: list[int] = []
    seen: set[int] = set()
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            first_arrivals.append(seq)
    assert first_arrivals == sorted(first_arrivals), "samples arrived out of order"
    duplicates = len(seqs) - len(seen)
    print(f"samples {next_seq - first_seq}, deliveries {len(seqs)}, duplicates {duplicates}")
    # Only batches in flight at a kill can come twice (same seq: dropped downstream).
    assert duplicates <= kills * WINDOW * BATCH_MAX
    assert any(st.state == "offline" for st in collector.statuses), "no Last Will seen"
    assert collector.statuses[0].state == "online"
