"""The gateway's CAN (J1939 + OBD-II over CAN) and GPS paths against the simulators.

Tolerances: a published value must lie within the range the model took in the 2.5 s before
the sample's timestamp (the latest broadcast or fix, up to one period old), widened by the
encoding's resolution: CAN rpm 0.125 + rounding, wheel speed 1/256 km/h, coolant 1 degC,
fuel 0.4 %, battery 0.05 V; NMEA position 1e-5 deg (4 decimals of minutes), speed 0.1 kn.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from pathlib import Path

import pytest

import simulators.can_bus as sim_can
import simulators.nmea as sim_nmea
import simulators.vehicle as sim_vehicle
from edge_gateway.config import CanSettings, GatewayProcessSettings, apply_overrides, dbc_paths
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.sources.can import CanSource
from tests.edge_gateway.helpers import ModelDriver, wait_for
from tests.edge_gateway.test_obd_simulator import gateway_and_samples

pytestmark = pytest.mark.services

# sample field -> (model attribute, tolerance)
CHECKS = {
    "rpm": ("rpm", 0.75),
    "coolant_c": ("coolant_c", 1.5),
    "fuel_pct": ("fuel_pct", 0.9),
    "battery_v": ("battery_v", 0.1),
    "lat_deg": ("lat_deg", 2e-5),
    "lon_deg": ("lon_deg", 2e-5),
    "speed_kph": ("speed_kph", 0.5),
}


def _settings(tmp_path: Path, mqtt_url: str, tenant: str, channel: str, gps_port: str,
              **rates: float) -> GatewayProcessSettings:
    return apply_overrides(
        GatewayProcessSettings(),
        gateway={"tenant": tenant, "vehicle": "can1", "spool_path": str(tmp_path / "s.db"),
                 "batch_interval_s": 0.2, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        mqtt={"url": mqtt_url},
        can={"interface": "virtual", "channel": channel, "obd_requests": True},
        gps={"port": gps_port},
        signals={"rates_hz": rates})


async def test_can_and_gps_match_the_model_and_survive_garbage(
        tmp_path: Path, mqtt_url: str, tenant_slug: str) -> None:
    model = sim_vehicle.VehicleModel(11, warm_engine=True)
    model.step(40.0)
    channel = f"gw-{uuid.uuid4().hex[:8]}"
    can_sim = sim_can.CanSimulator(model, channel=channel)
    # By name: after the "drop" below the pty comes back under another number while the
    # gateway still holds the old one, so only the link finds it again (as udev's
    # /dev/serial/by-id does for a real receiver).
    gps = sim_nmea.NmeaGps(model, interval_s=0.2, link_path=tmp_path / "gps")
    with can_sim, gps as gps_port, ModelDriver(model) as driver:
        settings = _settings(tmp_path, mqtt_url, tenant_slug, channel, gps_port,
                             gps_position=5, gps_speed=5, can_engine_speed=5,
                             can_intake_temp=2)
        async with gateway_and_samples(settings, mqtt_url) as (gateway, samples):
            await wait_for(lambda: sum(s.rpm is not None for s in samples) >= 20, 30,
                           "twenty rpm samples")
            await wait_for(lambda: any(s.extra and "intake_temp_c" in s.extra
                                       for s in samples), 20, "an OBD-over-CAN answer")
            clean_until = time.time_ns() // 1_000_000
            can_sim.misbehave("garbage", 1.0)
            gps.misbehave("garbage", 0.6)
            await asyncio.sleep(0.7)
            gps.misbehave("bad_checksum", 0.6)
            await asyncio.sleep(0.7)
            can_sim.misbehave("silence", 0.5)
            gps.misbehave("drop", 0.5)
            await asyncio.sleep(0.6)
            resumed = time.time_ns() // 1_000_000
            # Separately: CAN and GPS values share a sample only when their schedules
            # happen to fall on the same tick, and the GPS reconnect shifts its phase.
            await wait_for(lambda: any(s.t_ms > resumed + 1500 and s.rpm is not None
                                       for s in samples)
                           and any(s.t_ms > resumed + 1500 and s.lat_deg is not None
                                   for s in samples), 30,
                           "CAN and GPS data after the faults")
            can_counts = gateway.sources["can"].health.counters()
            gps_counts = gateway.sources["gps"].health.counters()

    checked = dict.fromkeys(CHECKS, 0)
    for sample in samples:
        if sample.t_ms > clean_until:
            continue
        for field, (attr, tol) in CHECKS.items():
            value = getattr(sample, field)
            if value is None:
                continue
            env = driver.envelope(attr, sample.t_ms - 2500, sample.t_ms + 100)
            assert env is not None
            assert env[0] - tol <= value <= env[1] + tol, (field, value, env)
            checked[field] += 1
    assert all(n >= 1 for n in checked.values()), checked
    assert checked["rpm"] >= 10
    assert can_counts.get("unknown_frames", 0) + can_counts.get("malformed", 0) >= 1
    assert gps_counts.get("malformed", 0) >= 1


async def test_injected_faults_are_visible_on_can_and_gps(
        tmp_path: Path, mqtt_url: str, tenant_slug: str) -> None:
    """GPS jump -> a position jump; fuel theft -> fuel drop; offline -> no data in between."""
    faults = [sim_vehicle.Fault.parse(spec) for spec in (
        "gps_jump@10+5:distance_m=3000", "fuel_theft@20+20:pct=30", "offline@50+20")]
    model = sim_vehicle.VehicleModel(5, faults=faults, warm_engine=True)
    channel = f"gw-{uuid.uuid4().hex[:8]}"
    can_sim = sim_can.CanSimulator(model, channel=channel)
    gps = sim_nmea.NmeaGps(model, interval_s=0.1)
    with can_sim, gps as gps_port:
        settings = _settings(tmp_path, mqtt_url, tenant_slug, channel, gps_port,
                             gps_position=10, can_fuel_level=5, can_engine_speed=5)
        async with gateway_and_samples(settings, mqtt_url) as (_gateway, samples):
            await wait_for(lambda: any(s.lat_deg is not None for s in samples), 20, "a fix")
            with ModelDriver(model, speed=10.0):
                await wait_for(lambda: model.t_s >= 80, 30, "80 simulated seconds")
            after = time.time_ns() // 1_000_000
            await wait_for(lambda: any(s.t_ms > after and s.lat_deg is not None
                                       for s in samples), 20, "data after the faults")
    truth = {g.kind: g for g in model.ground_truth}
    assert {"gps_jump", "fuel_theft", "offline"} <= set(truth)
    positions = [(s.lat_deg, s.lon_deg) for s in samples if s.lat_deg is not None]
    jumps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in itertools.pairwise(positions)]
    assert max(jumps) > 0.015  # ~3 km, far beyond 10 simulated seconds of driving
    fuel = [s.fuel_pct for s in samples if s.fuel_pct is not None]
    assert max(fuel) - min(fuel) >= 20.0
    vehicle_data = [s for s in samples if s.rpm is not None or s.lat_deg is not None]
    gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(vehicle_data)]
    assert max(gaps) >= 1500  # 20 simulated seconds offline = 2 s without CAN or GPS data


def test_slcan_adapter_on_a_pty_decodes_like_any_bus() -> None:
    """CAN through an SLCAN USB adapter (here the simulator's, on a pty), read by python-can's
    SLCAN driver with the gateway's buffered reader."""
    model = sim_vehicle.VehicleModel(2, warm_engine=True)
    model.step(30.0)
    state = model.state
    board = Board()
    with sim_can.SlcanAdapter(model) as port:
        settings = CanSettings(interface="slcan", channel=port, bitrate=250000)
        src = CanSource(settings, dbc_paths(settings), board, Rates(),
                        lambda: PowerMode.ACTIVE, forward_raw=False, reconnect_min_s=0.2,
                        reconnect_max_s=1.0)
        src.start()
        try:
            deadline = time.monotonic() + 20
            while board.get("can_coolant") is None or board.get("can_engine_speed") is None:
                assert time.monotonic() < deadline, src.health.summary()
                time.sleep(0.05)
        finally:
            src.stop()
    rpm, coolant = board.get("can_engine_speed"), board.get("can_coolant")
    assert rpm is not None
    assert coolant is not None
    assert rpm[0] == pytest.approx(state.rpm, abs=0.125)
    assert coolant[0] == pytest.approx(state.coolant_c, abs=1.0)
