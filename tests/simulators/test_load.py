"""The load generator against the real Mosquitto, and fleet seeding against PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import aiomqtt
import psycopg
import pytest

from core.mqtt_url import parse_mqtt_url
from core.protocol import (
    Channel,
    Source,
    Telemetry,
    Topic,
    decode,
    encode,
    parse_topic,
    subscription,
)
from simulators.errors import SimulatorError
from simulators.load import LoadConfig, LoadGenerator, sample_of, vehicle_codes
from simulators.seed import seed_simulated_fleet
from simulators.vehicle import Fault, FaultKind, VehicleModel
from tests.conftest import TestDatabase
from tests.simulators.conftest import START_MS

pytestmark = pytest.mark.services


class Collected:
    """Telemetry received per vehicle; `done` is set once `expected` samples arrived."""

    def __init__(self) -> None:
        self.by_vehicle: dict[str, list[Telemetry]] = defaultdict(list)
        self.expected: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        total = sum(len(m.samples) for v in self.by_vehicle.values() for m in v)
        if self.expected is not None and total >= self.expected:
            self.done.set()


async def _collect(mqtt_url: str, tenant: str, ready: asyncio.Event,
                   received: Collected) -> None:
    target = parse_mqtt_url(mqtt_url)
    async with aiomqtt.Client(target.host, target.port, username=target.username,
                              password=target.password,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(subscription(Channel.TELEMETRY, tenant=tenant), qos=1)
        ready.set()
        async for message in client.messages:
            topic = parse_topic(str(message.topic))
            assert isinstance(topic, Topic), topic
            decoded = decode(bytes(message.payload), Telemetry)  # type: ignore[arg-type]
            assert isinstance(decoded, Telemetry), decoded
            received.by_vehicle[topic.vehicle].append(decoded)
            received.check()


async def _run_with_subscriber(mqtt_url: str, config: LoadConfig
                               ) -> tuple[LoadGenerator, dict[str, list[Telemetry]]]:
    received = Collected()
    ready = asyncio.Event()
    generator = LoadGenerator(config, log=lambda _line: None)
    collector = asyncio.create_task(_collect(mqtt_url, config.tenant, ready, received))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        report = await asyncio.wait_for(generator.run(), timeout=60)
        received.expected = report.ledger.samples
        received.check()
        await asyncio.wait_for(received.done.wait(), timeout=15)
    finally:
        collector.cancel()
    return generator, received.by_vehicle


async def test_publishes_the_wire_contract_in_order_without_loss(mqtt_url: str,
                                                                 tenant_slug: str) -> None:
    codes = vehicle_codes(30, prefix="v")
    config = LoadConfig(mqtt_url=mqtt_url, tenant=tenant_slug, codes=codes, rate_hz=10.0,
                        batch_size=7, duration_s=2.0, seq_start=100, connections=3,
                        progress_interval_s=0.5,
                        faults={"v-00003": [Fault.parse("offline@0.5+1")]})
    generator, received = await _run_with_subscriber(mqtt_url, config)
    ledger = generator.ledger
    assert ledger.failed_messages == 0
    assert set(received) == set(codes)
    for code in codes:
        samples = [s for m in received[code] for s in m.samples]
        seqs = [s.seq for s in samples]
        assert seqs == list(range(100, 100 + len(seqs))), code  # in order, no gap, no repeat
        assert ledger.counts[code] == len(seqs) == 20
        assert ledger.first_seq[code] == 100
        assert ledger.last_seq[code] == 119
        assert all(m.source is Source.SIMULATOR and m.sent_ms and m.device == code
                   for m in received[code])
        assert all(len(m.samples) <= 7 for m in received[code])
        times = [s.t_ms for s in samples]
        assert times == sorted(times)
    # the vehicle that was offline sent nothing during its window, then its backlog in order
    offline = generator.vehicles[3]
    assert [g.kind for g in offline.model.ground_truth] == [FaultKind.OFFLINE.value]


async def test_rejects_bad_configuration(mqtt_url: str) -> None:
    with pytest.raises(SimulatorError):
        LoadConfig(mqtt_url=mqtt_url, tenant="t", codes=[])
    with pytest.raises(SimulatorError):
        LoadConfig(mqtt_url=mqtt_url, tenant="t", codes=["a"], batch_size=0)
    bad = LoadConfig(mqtt_url="mqtt://nobody:wrong@127.0.0.1:1", tenant="t", codes=["a"],
                     duration_s=0.1)
    with pytest.raises(SimulatorError, match="MQTT"):
        await LoadGenerator(bad, log=lambda _l: None).run()


def test_sample_of_omits_position_without_fix() -> None:
    model = VehicleModel(2, start_ms=START_MS, faults=[Fault.parse("gps_loss@0+10"),
                                                      Fault.parse("misfire@0+10")])
    state = model.step(1.0)
    sample = sample_of(state, 7)
    assert sample.seq == 7
    assert sample.t_ms == state.t_ms
    assert sample.lat_deg is None
    assert sample.gps_fix == 0
    assert sample.dtcs == ["P0301"]
    model.step(20.0)
    assert sample_of(model.state, 8).lat_deg == pytest.approx(model.state.lat_deg)


def test_seed_fleet_is_idempotent(database: TestDatabase, tenant_slug: str) -> None:
    codes = vehicle_codes(5)
    first = seed_simulated_fleet(database.owner_url, tenant_slug, codes,
                                 vins={codes[0]: "3J07EA7T0N772KRK8"})
    again = seed_simulated_fleet(database.owner_url, tenant_slug, [*codes, "extra-1"])
    assert again.tenant_id == first.tenant_id
    assert {c: again.vehicles[c] for c in codes} == first.vehicles
    with psycopg.connect(database.owner_url) as conn:
        rows = conn.execute(
            "SELECT v.code, v.vin, v.status FROM vehicles v JOIN tenants t ON t.id = v.tenant_id "
            "WHERE t.slug = %s ORDER BY v.code", (tenant_slug,)).fetchall()
    assert [r[0] for r in rows] == sorted([*codes, "extra-1"])
    assert rows[1][1] == "3J07EA7T0N772KRK8"
    assert {r[2] for r in rows} == {"active"}
    with pytest.raises(SimulatorError):
        seed_simulated_fleet(database.owner_url, "bad/slug", codes)


async def test_backlog_is_bounded_oldest_first(mqtt_url: str, tenant_slug: str) -> None:
    config = LoadConfig(mqtt_url=mqtt_url, tenant=tenant_slug, codes=["a", "b"], rate_hz=20.0,
                        batch_size=5, duration_s=1.0, seq_start=0, max_backlog_samples=8,
                        faults={"a": [Fault.parse("offline@0+0.9")]})
    generator, received = await _run_with_subscriber(mqtt_url, config)
    ledger = generator.ledger
    seqs = [s.seq for m in received["a"] for s in m.samples]
    assert ledger.dropped == {"a": 20 - len(seqs)}
    assert ledger.dropped["a"] > 0
    assert seqs == list(range(20 - len(seqs), 20)), "the newest samples survive, in order"
    assert "b" not in ledger.dropped


async def test_stop_flushes_and_returns(mqtt_url: str, tenant_slug: str) -> None:
    config = LoadConfig(mqtt_url=mqtt_url, tenant=tenant_slug, codes=vehicle_codes(3),
                        rate_hz=20.0, batch_size=50, seq_start=0)
    generator = LoadGenerator(config, log=lambda _line: None)
    asyncio.get_running_loop().call_later(1.0, generator.stop)
    report = await asyncio.wait_for(generator.run(), timeout=30)
    assert report.produced_samples > 0
    assert report.ledger.samples == report.produced_samples, "the partial batches were flushed"
    assert report.ledger.last_seq == {c: report.ledger.counts[c] - 1 for c in config.codes}


def test_every_sample_of_a_faulty_vehicle_passes_the_contract() -> None:
    faults = [Fault.parse(spec) for spec in (
        "overheat@10+300", "misfire@20+100", "fuel_theft@30+60:pct=90", "refuel@200+60",
        "harsh_brake@40", "speeding@60+120", "gps_jump@70+5", "gps_loss@80+20",
        "offline@120+30", "park@400+100", "low_battery@520+60:v=10.5")]
    model = VehicleModel(12, start_ms=START_MS, faults=faults)
    samples = [sample_of(model.step(1.0), seq) for seq in range(900)]
    for k in range(0, len(samples), 100):
        message = Telemetry(source=Source.SIMULATOR, samples=samples[k:k + 100])
        assert decode(encode(message), Telemetry) == message
