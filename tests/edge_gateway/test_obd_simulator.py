"""The gateway's OBD-II path against the simulator's ELM327 emulator, end to end over MQTT.

Tolerances: a published value must lie within the range the model took in the 2.5 s before
the sample's timestamp (a PID is read once per period, so it may be up to one period old),
widened by the PID's resolution (rpm 0.25, speed 1 km/h, coolant 1 degC, fuel 100/255 %)
plus 0.5 for rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import simulators.elm327 as sim_elm
import simulators.vehicle as sim_vehicle
from core.protocol import (
    Channel,
    Command,
    Sample,
    Telemetry,
    decode,
    encode,
    topic_for,
)
from edge_gateway.config import GatewayProcessSettings, apply_overrides
from edge_gateway.gateway import Gateway
from tests.edge_gateway.helpers import ModelDriver, mqtt_client, wait_for

pytestmark = pytest.mark.services

TOLERANCE = {"rpm": 0.25 + 0.5, "speed_kph": 1.5, "coolant_c": 1.5, "fuel_pct": 0.4 + 0.5}
FIELD_OF = {"rpm": "rpm", "speed_kph": "speed_kph", "coolant_c": "coolant_c",
            "fuel_pct": "fuel_pct"}


@contextlib.asynccontextmanager
async def gateway_and_samples(settings: GatewayProcessSettings, mqtt_url: str
                              ) -> AsyncIterator[tuple[Gateway, list[Sample]]]:
    samples: list[Sample] = []
    gw = settings.gateway
    async with mqtt_client(mqtt_url) as client:
        await client.subscribe(topic_for(gw.tenant, gw.vehicle, Channel.TELEMETRY), qos=1)

        async def collect() -> None:
            async for m in client.messages:
                msg = decode(bytes(m.payload), Telemetry)  # type: ignore[arg-type]
                assert isinstance(msg, Telemetry), msg
                samples.extend(msg.samples)

        collector = asyncio.create_task(collect())
        gateway = Gateway(settings)
        task = asyncio.create_task(gateway.run())
        try:
            yield gateway, samples
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            collector.cancel()
            await client.publish(topic_for(gw.tenant, gw.vehicle, Channel.STATUS), b"",
                                 retain=True)


def _settings(tmp_path: Path, mqtt_url: str, tenant: str, port: str,
              rates: dict[str, float], *, raw_pids: tuple[str, ...] = ()
              ) -> GatewayProcessSettings:
    return apply_overrides(
        GatewayProcessSettings(),
        gateway={"tenant": tenant, "vehicle": "obd1", "spool_path": str(tmp_path / "s.db"),
                 "batch_interval_s": 0.2, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                 "forward_unknown_raw": bool(raw_pids)},
        mqtt={"url": mqtt_url},
        obd={"port": port, "timeout_s": 0.1, "failures_before_reconnect": 4,
             "raw_pids": list(raw_pids), "raw_rate_hz": 1.0},
        signals={"rates_hz": rates})


async def test_values_match_the_model_and_bad_adapters_do_not_crash(
        tmp_path: Path, mqtt_url: str, tenant_slug: str) -> None:
    model = sim_vehicle.VehicleModel(7, warm_engine=True)
    model.step(30.0)
    # By name, as the fault test of the CAN and GPS front-ends: after the "drop" the pty
    # may come back under another number, and only the link finds it again.
    emulator = sim_elm.Elm327Emulator(model, link_path=tmp_path / "obd")
    with emulator as port, ModelDriver(model) as driver:
        # 011C (OBD standard) is outside the signal table: the unknown path, forwarded raw.
        settings = _settings(tmp_path, mqtt_url, tenant_slug, port,
                             {"obd_rpm": 2, "obd_speed": 2, "obd_dtcs": 0.5},
                             raw_pids=("011C",))
        async with gateway_and_samples(settings, mqtt_url) as (gateway, samples):
            await wait_for(lambda: sum(s.rpm is not None for s in samples) >= 8, 30,
                           "eight rpm samples")
            clean_until = time.time_ns() // 1_000_000
            for kind in ("garbage", "no_data", "reset", "silence", "drop"):
                emulator.misbehave(kind, 1.5)
                await asyncio.sleep(1.6)
            recovered_from = time.time_ns() // 1_000_000
            await wait_for(lambda: any(s.rpm is not None and s.t_ms > recovered_from + 500
                                       for s in samples), 40, "OBD data after the faults")
            obd_health = gateway.sources["obd"].health
            vin = getattr(gateway.sources["obd"], "vin", None)

    checked = 0
    for sample in samples:
        if sample.t_ms > clean_until:
            continue
        for attr, field in FIELD_OF.items():
            value = getattr(sample, field)
            if value is None:
                continue
            env = driver.envelope(attr, sample.t_ms - 2500, sample.t_ms + 100)
            assert env is not None
            lo, hi = env
            tol = TOLERANCE[attr]
            assert lo - tol <= value <= hi + tol, (attr, value, env, sample.t_ms)
            checked += 1
    assert checked >= 16
    assert vin == model.vin
    counters = obd_health.counters()
    assert counters.get("no_data", 0) + counters.get("malformed", 0) > 0
    assert counters.get("reconnects", 0) >= 1
    assert counters.get("unknown_frames", 0) >= 1
    assert any(s.extra and "obd_raw_011c" in s.extra for s in samples)
    battery = [s.battery_v for s in samples if s.battery_v is not None]
    assert battery
    assert all(11.0 < v < 15.5 for v in battery)


async def test_injected_faults_are_visible(tmp_path: Path, mqtt_url: str,
                                           tenant_slug: str) -> None:
    """Misfire -> DTC, overheat -> coolant rise, fuel theft -> fuel drop, offline -> a gap."""
    faults = [sim_vehicle.Fault.parse(spec) for spec in (
        "misfire@3+200", "overheat@3+200", "fuel_theft@15+20:pct=30", "offline@45+25")]
    model = sim_vehicle.VehicleModel(3, faults=faults, warm_engine=True)
    emulator = sim_elm.Elm327Emulator(model)
    with emulator as port:
        settings = _settings(tmp_path, mqtt_url, tenant_slug, port,
                             {"obd_rpm": 2, "obd_coolant": 2, "obd_fuel_level": 2,
                              "obd_dtcs": 1})
        async with gateway_and_samples(settings, mqtt_url) as (gateway, samples):
            await wait_for(lambda: any(s.rpm is not None for s in samples), 30, "first rpm")
            # Ten simulated seconds per wall second: minutes of driving in a short test.
            with ModelDriver(model, speed=10.0) as driver:
                await wait_for(lambda: model.t_s >= 20, 30, "20 simulated seconds")
                ack = await gateway.commands.handle(encode(Command(id="d1", name="read_dtcs")))
                await wait_for(lambda: model.t_s >= 90, 30, "90 simulated seconds")
                after = time.time_ns() // 1_000_000
                await wait_for(lambda: any(s.rpm is not None and s.t_ms > after
                                           for s in samples), 30,
                               "data after the offline window")
    assert ack.ok, ack.reason
    assert ack.result is not None
    assert "P0301" in ack.result["stored"]
    assert "P0301" in ack.result["pending"]
    truth = {g.kind: g for g in model.ground_truth}
    dtcs = {code for s in samples for code in (s.dtcs or [])}
    assert "P0301" in dtcs
    coolant = [s.coolant_c for s in samples if s.coolant_c is not None]
    assert max(coolant) >= 100.0
    assert min(coolant) <= 93.0
    fuel = [s.fuel_pct for s in samples if s.fuel_pct is not None]
    assert max(fuel) - min(fuel) >= 20.0
    offline = truth["offline"]
    inside = [s for s in samples if s.rpm is not None
              and offline.start_ms + 1000 <= _wall_ms(driver, s.t_ms) <= offline.end_ms - 1000]
    assert not inside, "OBD data published while the adapter was offline"


def _wall_ms(driver: ModelDriver, t_ms: int) -> int:
    """Model time of the state recorded closest to wall time `t_ms`."""
    best = min(driver.history, key=lambda entry: abs(entry[0] - t_ms))
    return int(best[1].t_ms)  # type: ignore[attr-defined]
