"""The gateway in-process against the shared Mosquitto: birth, telemetry, commands, device login."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from api.broker_logins import BrokerAdmin, device_acls
from core.mqtt_url import parse_mqtt_url
from core.protocol import (
    Channel,
    Command,
    CommandAck,
    Status,
    Telemetry,
    decode,
    device_login,
    encode,
    topic_for,
)
from deploy.services import MQTT_ADMIN_USER, LocalServices
from edge_gateway.config import GatewayProcessSettings, apply_overrides
from edge_gateway.gateway import Gateway
from edge_gateway.uplink import AckCheckingClient
from tests.edge_gateway.helpers import mqtt_client, nmea, wait_for

pytestmark = pytest.mark.services

RMC = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
GGA = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewayProcessSettings) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def _feed_gps(master: int) -> None:
    while True:
        os.write(master, RMC + b"\x00garbage\r\n" + GGA)
        await asyncio.sleep(0.1)


def _settings(tmp_path: Path, url: str, tenant: str, port: str) -> GatewayProcessSettings:
    return apply_overrides(
        GatewayProcessSettings(),
        gateway={"tenant": tenant, "vehicle": "v1", "spool_path": str(tmp_path / "spool.db"),
                 "batch_interval_s": 0.2, "status_interval_s": 3600},
        mqtt={"url": url}, gps={"port": port},
        signals={"rates_hz": {"gps_position": 5, "gps_speed": 5}})


async def test_birth_telemetry_and_commands(tmp_path: Path, mqtt_url: str,
                                            tenant_slug: str) -> None:
    master, slave = os.openpty()
    settings = _settings(tmp_path, mqtt_url, tenant_slug, os.ttyname(slave))
    feeder = asyncio.create_task(_feed_gps(master))
    telemetry: list[Telemetry] = []
    statuses: list[Status] = []
    acks: list[CommandAck] = []
    try:
        async with mqtt_client(mqtt_url) as client:
            await client.subscribe(f"fleet/v1/{tenant_slug}/v1/#", qos=1)

            async def collect() -> None:
                async for m in client.messages:
                    payload = bytes(m.payload)  # type: ignore[arg-type]
                    if m.topic.matches("+/+/+/+/telemetry"):
                        msg = decode(payload, Telemetry)
                        assert isinstance(msg, Telemetry), msg
                        telemetry.append(msg)
                    elif m.topic.matches("+/+/+/+/status") and payload:
                        st = decode(payload, Status)
                        assert isinstance(st, Status), st
                        statuses.append(st)
                    elif m.topic.matches("+/+/+/+/cmd/ack"):
                        ack = decode(payload, CommandAck)
                        assert isinstance(ack, CommandAck), ack
                        acks.append(ack)

            collector = asyncio.create_task(collect())
            async with running_gateway(settings) as gateway:
                await wait_for(lambda: sum(len(t.samples) for t in telemetry) >= 10, 20,
                               "ten samples")
                assert statuses[0].state == "online"
                cmd_topic = topic_for(tenant_slug, "v1", Channel.CMD)
                for payload in (
                    encode(Command(id="r1", name="set_rate",
                                   args={"signal": "gps_hdop", "rate_hz": 0})),
                    b'{"v":1,"id":"r2","name":"reboot"}',
                    b"\xff\xfe",
                    encode(Command(id="r3", name="report_status")),
                ):
                    await client.publish(cmd_topic, payload, qos=1)
                await wait_for(lambda: len(acks) >= 4, 20, "four command acks")
                assert gateway.rates.rate_hz("gps_hdop") == 0
            collector.cancel()
            # Clean the retained status off the shared broker.
            await client.publish(topic_for(tenant_slug, "v1", Channel.STATUS), b"", retain=True)
    finally:
        feeder.cancel()
        os.close(master)
        os.close(slave)

    by_id = {a.id: a for a in acks}
    assert by_id["r1"].ok
    assert not by_id["r2"].ok
    assert "invalid" in (by_id["r2"].reason or "")
    assert not by_id["unparsable"].ok
    assert by_id["r3"].ok
    assert by_id["r3"].result is not None
    assert by_id["r3"].result["sources"]["gps"].startswith("reading")
    seqs = [s.seq for t in telemetry for s in t.samples]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    first = telemetry[0].samples[0]
    assert first.lat_deg == pytest.approx(48.1173)
    assert first.speed_kph == pytest.approx(22.4 * 1.852)
    assert first.gps_fix == 1
    assert statuses[-1].sources is not None
    assert "malformed=" in statuses[-1].sources["gps"]


async def test_device_login_may_publish_its_own_topics(tmp_path: Path, services: LocalServices,
                                                      mqtt_url: str, tenant_slug: str) -> None:
    """With a device's own credentials (ACL: only its topics), telemetry and acks get through."""
    password = secrets.token_urlsafe(12)
    services.add_device_login(f"{tenant_slug}/v1", password)
    target = parse_mqtt_url(mqtt_url)
    device_url = (f"mqtt://{quote(tenant_slug + '/v1', safe='')}:{password}"
                  f"@{target.host}:{target.port}")
    master, slave = os.openpty()
    settings = _settings(tmp_path, device_url, tenant_slug, os.ttyname(slave))
    feeder = asyncio.create_task(_feed_gps(master))
    received: list[str] = []
    try:
        async with mqtt_client(mqtt_url) as client:
            await client.subscribe(f"fleet/v1/{tenant_slug}/v1/#", qos=1)

            async def collect() -> None:
                async for m in client.messages:
                    received.append(str(m.topic))

            collector = asyncio.create_task(collect())
            async with running_gateway(settings) as gateway:
                await wait_for(lambda: gateway.uplink.published_samples >= 3, 30,
                               "three samples acknowledged")
                await client.publish(topic_for(tenant_slug, "v1", Channel.CMD),
                                     encode(Command(id="d1", name="report_status")), qos=1)
                await wait_for(lambda: any(t.endswith("cmd/ack") for t in received), 20,
                               "the command ack")
            collector.cancel()
            await client.publish(topic_for(tenant_slug, "v1", Channel.STATUS), b"", retain=True)
    finally:
        feeder.cancel()
        os.close(master)
        os.close(slave)
    assert any(t.endswith("/telemetry") for t in received)


async def test_refused_publishes_stay_in_the_spool(tmp_path: Path, services: LocalServices,
                                                   mqtt_url: str, tenant_slug: str) -> None:
    """A login the ACL does not allow on these topics: the broker's negative PUBACK (MQTT v5
    "not authorized") must not count as delivery. The login may use this gateway's client id
    but holds another vehicle's rules (a device's own login cannot even connect as another
    vehicle: its client id is bound)."""
    password = secrets.token_urlsafe(12)
    # Not "{tenant}/{vehicle}": the project's broker plugin refuses a device login whose
    # client id differs before any rule is read.
    login, role = f"mislabelled-{tenant_slug}", f"test:{tenant_slug}"
    BrokerAdmin(services.mqtt_url(MQTT_ADMIN_USER)).run([
        {"command": "createRole", "rolename": role,
         "acls": device_acls(f"{tenant_slug}/other")},
        {"command": "createClient", "username": login, "password": password,
         "clientid": device_login(tenant_slug, "v1"), "roles": [{"rolename": role}]}])
    target = parse_mqtt_url(mqtt_url)
    wrong_url = (f"mqtt://{quote(login, safe='')}:{password}"
                 f"@{target.host}:{target.port}")
    master, slave = os.openpty()
    settings = apply_overrides(
        _settings(tmp_path, wrong_url, tenant_slug, os.ttyname(slave)),
        gateway={"publish_timeout_s": 1.0, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5})
    feeder = asyncio.create_task(_feed_gps(master))
    refused_before = AckCheckingClient.refused
    try:
        async with running_gateway(settings) as gateway:
            await wait_for(lambda: AckCheckingClient.refused > refused_before
                           and gateway.spool.spool.count >= 5, 30, "refusals and spooled data")
            assert gateway.uplink.published_samples == 0
    finally:
        feeder.cancel()
        os.close(master)
        os.close(slave)


async def test_telemetry_nobody_subscribes_to_stays_in_the_spool(
        tmp_path: Path, services: LocalServices, mqtt_url: str, tenant_slug: str) -> None:
    """A PUBACK "no matching subscribers" (Mosquitto after a restart, before the stream has
    subscribed again) is not delivery: the samples stay spooled and go once someone listens."""
    master, slave = os.openpty()
    settings = apply_overrides(
        _settings(tmp_path, mqtt_url, tenant_slug, os.ttyname(slave)),
        gateway={"reconnect_min_s": 0.2, "reconnect_max_s": 0.5})
    feeder = asyncio.create_task(_feed_gps(master))
    unheard_before = AckCheckingClient.unheard_total
    received: list[Telemetry] = []
    try:
        async with running_gateway(settings) as gateway:
            await wait_for(lambda: AckCheckingClient.unheard_total > unheard_before
                           and gateway.spool.spool.count >= 5, 30, "unheard telemetry spooled")
            assert gateway.uplink.published_samples == 0
            spooled = gateway.spool.spool.count
            first_seq = gateway.spool.spool.first_seq
            async with mqtt_client(mqtt_url) as client:
                await client.subscribe(topic_for(tenant_slug, "v1", Channel.TELEMETRY), qos=1)

                async def collect() -> None:
                    async for m in client.messages:
                        message = decode(bytes(m.payload), Telemetry)
                        assert isinstance(message, Telemetry)
                        received.append(message)

                collector = asyncio.create_task(collect())
                await wait_for(lambda: gateway.uplink.published_samples >= spooled, 30,
                               "the spooled samples delivered once someone subscribed")
                await wait_for(lambda: sum(len(t.samples) for t in received) >= spooled, 10,
                               "the subscriber got them")
                collector.cancel()
    finally:
        feeder.cancel()
        os.close(master)
        os.close(slave)
    seqs = sorted({s.seq for t in received for s in t.samples})
    assert seqs[0] == first_seq  # the first sample, spooled while nobody listened, is not lost
