"""The gateway's tick: power modes switch rates, emit events and reach the status."""

from __future__ import annotations

import time
from pathlib import Path

from edge_gateway.config import GatewayProcessSettings, apply_overrides
from edge_gateway.gateway import Gateway
from edge_gateway.power import PowerMode


def _gateway(tmp_path: Path) -> Gateway:
    settings = apply_overrides(
        GatewayProcessSettings(),
        gateway={"spool_path": str(tmp_path / "s.db")},
        # A port that is never opened: the sources are not started in this test.
        obd={"port": str(tmp_path / "no-such-adapter")},
        power={"ignition_off_after_s": 30, "heartbeat_interval_s": 300,
               "low_battery_v": 11.8, "low_battery_min": 1, "resume_battery_v": 12.6})
    return Gateway(settings)


async def test_ignition_off_heartbeat_then_bus_off_and_back(tmp_path: Path) -> None:
    gw = _gateway(tmp_path)
    try:
        # Freshness is judged against the wall clock, so readings carry real timestamps.
        gw.board.put("obd_rpm", 850.0, _now())
        gw.board.put("obd_adapter_voltage", 14.1, _now())
        await gw.tick(_now())
        assert gw.power.mode is PowerMode.ACTIVE
        start = _now()
        gw.board.put("obd_rpm", 0.0, start)
        gw.board.put("obd_adapter_voltage", 11.5, start)
        await gw.tick(start + 31_000)
        assert gw.power.mode is PowerMode.HEARTBEAT
        assert gw.rates.period_ms("gps_speed") == 300_000
        assert gw.status().state == "sleeping"
        gw.board.put("obd_adapter_voltage", 11.5, _now())
        await gw.tick(start + 31_000 + 61_000)
        assert gw.power.mode is PowerMode.BUS_OFF
        gw.board.put("obd_rpm", 900.0, _now())
        await gw.tick(_now())
        assert gw.power.mode is PowerMode.ACTIVE
        assert gw.rates.period_ms("gps_speed") == 1000
        kinds = [(e.kind, (e.detail or {}).get("mode")) for e in gw.uplink._events]
        assert kinds == [("power_mode", "heartbeat"), ("power_mode", "bus_off"),
                         ("power_mode", "active")]
        assert gw.samples_written >= 1
    finally:
        gw.close()


def _now() -> int:
    return time.time_ns() // 1_000_000
