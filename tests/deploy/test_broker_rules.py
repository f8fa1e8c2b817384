"""Issue #23: what a device login can do on the project's broker, tried as an attacker would.

The device logins come from `LocalServices.add_device_login`, the same plugin commands the API
sends when it provisions a device; the stream's names come from its own settings.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.mqtt_url import parse_mqtt_url
from deploy.services import LocalServices
from stream.config import SourceSettings

NOT_AUTHORIZED = 0x87
STREAM = SourceSettings()


@dataclass
class Session:
    """One synchronous MQTT v5 client and what it saw."""

    client: mqtt.Client
    connack: list[int] = field(default_factory=list)
    disconnects: list[int] = field(default_factory=list)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: list[int] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, what: Any, timeout_s: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(what, timeout=timeout_s), "timed out"

    def subscribe(self, topic_filter: str) -> int:
        """The SUBACK reason code of one filter."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        self.wait(lambda: mid in self.subacks)
        return self.subacks[mid][0]

    @property
    def connected(self) -> bool:
        return bool(self.connack) and self.connack[0] == 0 and not self.disconnects

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(services: LocalServices, login: str, password: str, client_id: str, *,
            clean_start: bool = True, expiry_s: int = 0) -> Session:
    """Connect and wait for the CONNACK (accepted or not)."""
    target = parse_mqtt_url(services.mqtt_url())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    client.username_pw_set(login, password)
    session = Session(client)

    def note(what: Any) -> None:
        with session.changed:
            what()
            session.changed.notify_all()

    client.on_connect = lambda _c, _u, _f, rc, _p: note(lambda: session.connack.append(rc.value))
    client.on_disconnect = lambda _c, _u, _f, rc, _p: note(
        lambda: session.disconnects.append(rc.value))
    client.on_subscribe = lambda _c, _u, mid, rcs, _p: note(
        lambda: session.subacks.__setitem__(mid, [r.value for r in rcs]))
    client.on_message = lambda _c, _u, m: note(
        lambda: session.messages.append((m.topic, m.payload)))
    client.on_publish = lambda _c, _u, _mid, rc, _p: note(lambda: session.pubacks.append(rc.value))
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    client.connect(target.host, target.port, clean_start=clean_start, properties=props)
    client.loop_start()
    session.wait(lambda: session.connack)
    return session


def service(services: LocalServices, client_id: str, **kw: Any) -> Session:
    target = parse_mqtt_url(services.mqtt_url())
    assert target.username is not None
    assert target.password is not None
    return connect(services, target.username, target.password, client_id, **kw)


@dataclass(frozen=True)
class Device:
    tenant: str
    vehicle: str
    password: str

    @property
    def login(self) -> str:
        return f"{self.tenant}/{self.vehicle}"

    def topic(self, channel: str) -> str:
        return f"fleet/v1/{self.login}/{channel}"


def new_device(services: LocalServices, tenant: str | None = None) -> Device:
    device = Device(tenant or f"t{uuid.uuid4().hex[:8]}", f"v{uuid.uuid4().hex[:6]}",
                    uuid.uuid4().hex)
    services.add_device_login(device.login, device.password)
    return device


@pytest.fixture(scope="module")
def probe(services: LocalServices) -> Iterator[tuple[Device, Device, Session]]:
    """A device connected as itself, a device of another tenant, and the first's session."""
    mine, other = new_device(services), new_device(services)
    session = connect(services, mine.login, mine.password, mine.login)
    assert session.connected
    yield mine, other, session
    session.close()


LEVELS = ("fleet", "v1", "+", "cmd", "telemetry", "status", "ack", "$SYS", "$share",
          STREAM.share_group, "broker", "x")


@st.composite
def topic_filters(draw: st.DrawFn, mine: Device, other: Device) -> str:
    """Valid MQTT filters built from the words a device would try: its own and another
    tenant's ids, channels, wildcards, $SYS and $share prefixes."""
    words = st.sampled_from((*LEVELS, mine.tenant, mine.vehicle, other.tenant, other.vehicle))
    levels = draw(st.lists(words, min_size=1, max_size=7))
    if draw(st.booleans()):
        levels.append("#")
    if levels[0] == "$share":
        # $share/{group}/{filter}: a group name without wildcards, and a filter after it.
        levels[1:2] = [draw(st.sampled_from((STREAM.share_group, "g")))]
        if len(levels) < 3:
            levels.append("#")
    return "/".join(levels)


def test_a_device_may_subscribe_to_its_own_commands_and_nothing_else(
        probe: tuple[Device, Device, Session]) -> None:
    """Every other filter, wildcards and $share groups included, is refused at SUBACK."""
    mine, other, session = probe
    assert session.subscribe(mine.topic("cmd")) == 1  # granted, QoS 1

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(topic_filters(mine, other))
    @example("#")
    @example("+/+/+/+/+")
    @example("$SYS/#")
    @example(f"$share/{STREAM.share_group}/fleet/v1/+/+/telemetry")
    @example(f"$share/g/{mine.topic('cmd')}")
    @example(mine.topic("#"))
    @example(f"fleet/v1/{mine.tenant}/+/cmd")
    @example(mine.topic("telemetry"))
    @example(other.topic("cmd"))
    def check(topic_filter: str) -> None:
        expected = 1 if topic_filter == mine.topic("cmd") else NOT_AUTHORIZED
        assert session.subscribe(topic_filter) == expected, topic_filter
        assert session.connected

    check()


def _leave_no_stream_sessions(services: LocalServices) -> None:
    """End any session left under the stream's partition ids (an earlier run's), so the share
    group has no offline member that would take a turn of its messages."""
    for i in range(STREAM.partitions):
        service(services, f"{STREAM.client_id_prefix}-p{i}", clean_start=True).close()


def test_no_device_can_join_the_streams_share_group(services: LocalServices) -> None:
    """Finding 1: a device beside the stream in its share group took half of another tenant's
    messages and lost them. Now its SUBSCRIBE is refused and the stream gets all of them."""
    _leave_no_stream_sessions(services)
    victim, attacker = new_device(services), new_device(services)
    group_filter = f"$share/{STREAM.share_group}/fleet/v1/+/+/telemetry"
    stream = service(services, f"{STREAM.client_id_prefix}-p0")
    gateway = connect(services, victim.login, victim.password, victim.login)
    intruder = connect(services, attacker.login, attacker.password, attacker.login)
    try:
        assert stream.subscribe(group_filter) == 1
        assert intruder.subscribe(group_filter) == NOT_AUTHORIZED
        for seq in range(12):
            gateway.client.publish(victim.topic("telemetry"), str(seq).encode(), qos=1)
        stream.wait(lambda: sum(t == victim.topic("telemetry") for t, _ in stream.messages)
                    == 12)
        assert not intruder.messages
    finally:
        for s in (stream, gateway, intruder):
            s.close()


def test_no_device_can_take_another_clients_session(services: LocalServices) -> None:
    """Finding 2: a device connecting with another device's or a stream partition's client id
    is refused; the victim stays connected and keeps its commands."""
    _leave_no_stream_sessions(services)
    attacker, victim = new_device(services), new_device(services)
    partition = f"{STREAM.client_id_prefix}-p0"
    stream = service(services, partition)
    sender = service(services, f"test-sender-{uuid.uuid4().hex[:8]}")
    gateway = connect(services, victim.login, victim.password, victim.login,
                      clean_start=False, expiry_s=300)
    try:
        assert gateway.subscribe(victim.topic("cmd")) == 1
        assert stream.subscribe(f"fleet/v1/{victim.tenant}/+/telemetry") == 1
        for client_id in (victim.login, partition, "", f"gw-{victim.tenant}-{victim.vehicle}"):
            refused = connect(services, attacker.login, attacker.password, client_id)
            refused.close()
            assert refused.connack == [NOT_AUTHORIZED], client_id or "(broker-assigned)"
        # Each attempt is in the broker's log with the login that tried (the project's plugin,
        # deploy/broker/fleet_logins.c).
        wanted = [f"refused device login '{attacker.login}' connecting as client id '{cid}'"
                  for cid in (victim.login, partition)]
        deadline = time.monotonic() + 10
        while not all(w in services.mq_log.read_text() for w in wanted):
            assert time.monotonic() < deadline, f"not in {services.mq_log}: {wanted}"
            time.sleep(0.1)
        # The wrong password with the right client id is refused too.
        refused = connect(services, victim.login, "not-the-password", victim.login)
        refused.close()
        assert refused.connack == [NOT_AUTHORIZED]
        time.sleep(0.2)
        assert gateway.connected
        assert stream.connected
        sender.client.publish(victim.topic("cmd"), b"c1", qos=1)
        gateway.wait(lambda: (victim.topic("cmd"), b"c1") in gateway.messages)
        gateway.client.publish(victim.topic("telemetry"), b"t1", qos=1)
        stream.wait(lambda: (victim.topic("telemetry"), b"t1") in stream.messages)
        # Offline, with a command queued: another takeover attempt leaves the queue alone.
        gateway.close()
        sender.client.publish(victim.topic("cmd"), b"c2", qos=1).wait_for_publish(10)
        refused = connect(services, attacker.login, attacker.password, victim.login,
                          clean_start=True)
        refused.close()
        assert refused.connack == [NOT_AUTHORIZED]
        gateway = connect(services, victim.login, victim.password, victim.login,
                          clean_start=False, expiry_s=0)
        gateway.wait(lambda: (victim.topic("cmd"), b"c2") in gateway.messages)
        # The attacker's own login, as itself, still works: the refusals were the id's.
        own = connect(services, attacker.login, attacker.password, attacker.login)
        own.close()
        assert own.connack == [0]
    finally:
        for s in (stream, sender, gateway):
            s.close()


def test_the_broker_holds_a_device_to_its_rate(services: LocalServices) -> None:
    """A device publishing far faster than any vehicle gets PUBACK 0x87 beyond its limit
    (`services.mosquitto_device_messages_per_s` and `_burst_s`, the project's plugin): what
    is refused is never routed. When more than a whole burst's worth is refused within 10 s,
    it is disconnected and may not log in again for `mosquitto_flood_cooldown_s`; the broker's
    log says whose login it was and how much it refused."""
    cfg = services.settings
    rate, burst = cfg.mosquitto_device_messages_per_s, \
        cfg.mosquitto_device_messages_per_s * cfg.mosquitto_device_burst_s
    device = new_device(services)
    stream = service(services, f"test-stream-{uuid.uuid4().hex[:8]}")
    gateway = connect(services, device.login, device.password, device.login)
    try:
        assert stream.subscribe(device.topic("telemetry")) == 1
        started = time.monotonic()
        for i in range(int(4 * burst)):
            gateway.client.publish(device.topic("telemetry"), str(i).encode(), qos=1)
        gateway.wait(lambda: gateway.disconnects, 30)
        elapsed = time.monotonic() - started
        admitted = gateway.pubacks.count(0)
        assert set(gateway.pubacks) <= {0, NOT_AUTHORIZED}
        assert burst <= admitted <= burst + rate * elapsed + 1, (admitted, elapsed)
        assert gateway.pubacks.count(NOT_AUTHORIZED) > burst
        stream.wait(lambda: len(stream.messages) >= admitted, 10)
        time.sleep(0.5)
        assert len(stream.messages) == admitted
        log = services.mq_log.read_text()
        assert f"fleet: device login '{device.login}' disconnected for flooding" in log
        assert f"fleet: device login '{device.login}' over its limit of {rate:g} messages/s" \
            in log
        # Within the cool-down the login is refused, with the right password and client id.
        again = connect(services, device.login, device.password, device.login)
        again.close()
        assert again.connack == [NOT_AUTHORIZED]
        # A service login (a vendor bridge publishing for many vehicles) is not held here;
        # the stream's [limits] apply to it per topic.
        total = int(2 * burst)
        for i in range(total):
            stream.client.publish(device.topic("telemetry"), str(i).encode(), qos=1)
        stream.wait(lambda: len(stream.pubacks) == total, 30)
        assert set(stream.pubacks) == {0}
    finally:
        for s in (stream, gateway):
            s.close()
