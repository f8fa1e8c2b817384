"""Run `fleet stream` as a subprocess against a test database, and publish to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt_url import parse_mqtt_url
from core.ports import free_port_block
from core.protocol import (
    Channel,
    Sample,
    Source,
    Telemetry,
    encode,
    subscription,
    topic_for,
)

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.2) -> Any:
    """Poll until predicate() is truthy; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def mqtt_client(mqtt_url: str, client_id: str = "") -> Client:
    """A connected paho v5 client of the service account (loop running)."""
    target = parse_mqtt_url(mqtt_url)
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex}",
                    protocol=5)
    client.username_pw_set(target.username, target.password)
    client.connect(target.host, target.port)
    client.loop_start()
    return client


class StreamProcess:
    """`python -m stream.cli` with settings from environment variables."""

    def __init__(self, tmp: Path, *, ingest_url: str, mqtt_url: str, redis_url: str,
                 tenant: str, partitions: int = 1, processes: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.partitions = partitions
        self.processes = processes
        self.group = f"g{uuid.uuid4().hex[:8]}"
        self.prefix = f"s{uuid.uuid4().hex[:8]}"
        self.tenant = tenant
        self.mqtt_url = mqtt_url
        self.env = dict(os.environ)
        self.env.update({
            "FLEET_DATABASE_INGEST_URL": ingest_url,
            "FLEET_MQTT_URL": mqtt_url,
            "FLEET_REDIS_URL": redis_url,
            "FLEET_SOURCE_TENANT": tenant,
            "FLEET_SOURCE_SHARE_GROUP": self.group,
            "FLEET_SOURCE_CLIENT_ID_PREFIX": self.prefix,
            "FLEET_SOURCE_PARTITIONS": str(partitions),
            "FLEET_STREAM_RECOVERY_DIR": str(tmp / "recovery"),
            "FLEET_STREAM_SNAPSHOT_INTERVAL_S": "1",
            "FLEET_STREAM_PROCESSES": str(processes),
            "FLEET_STREAM_PROCESS_BASE_PORT": str(free_port_block(processes)),
            "FLEET_STREAM_ROLLUP_INTERVAL_S": "1",
            # Test sessions should not linger on the shared broker for a day.
            "FLEET_SOURCE_SESSION_EXPIRY_S": "300",
        })
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def presubscribe(self) -> None:
        """Create the persistent sessions first, so the broker queues what tests publish."""
        target = parse_mqtt_url(self.mqtt_url)
        for i in range(self.partitions):
            c = Client(CallbackAPIVersion.VERSION2, client_id=f"{self.prefix}-p{i}", protocol=5)
            c.username_pw_set(target.username, target.password)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 300
            subscribed = threading.Event()
            c.on_subscribe = lambda *_a, ev=subscribed: ev.set()
            c.connect(target.host, target.port, clean_start=False, properties=props)
            c.loop_start()
            info = c.subscribe(subscription(Channel.TELEMETRY, tenant=self.tenant,
                                            share_group=self.group), qos=1)
            assert info[0] == 0
            # Disconnect only once the broker confirmed the subscription (SUBACK).
            assert subscribed.wait(10), "no SUBACK"
            c.disconnect()
            c.loop_stop()

    def start(self) -> None:
        """Start the stream (a fresh process; recovery state persists between runs)."""
        self.runs += 1
        log = (self.tmp / f"stream-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli"], cwd=ROOT,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill9(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after a time-out."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def alive(self) -> bool:
        """True while the stream runs; a stream that ended fails the test now, with its log."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the stream ended (exit {self.proc.returncode})\n"
                                 f"{self.log_text()}")
        return True

    def log_text(self) -> str:
        """Every run's output, for failure messages."""
        return "\n".join(p.read_text(errors="replace")[-4000:]
                         for p in sorted(self.tmp.glob("stream-*.log")))


def publish(client: Client, tenant: str, vehicle: str, samples: Sequence[Sample]) -> None:
    """Publish one telemetry message at QoS 1 and wait for the broker's PUBACK."""
    payload = encode(Telemetry(source=Source.SIMULATOR, samples=list(samples),
                               sent_ms=time.time_ns() // 1_000_000))
    info = client.publish(topic_for(tenant, vehicle, Channel.TELEMETRY), payload, qos=1)
    info.wait_for_publish(10)


def count(url: str, query: str, *params: Any) -> int:
    """A single integer from the database."""
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
