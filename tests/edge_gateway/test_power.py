"""Adaptive power: ignition off -> heartbeat; low battery for N minutes -> bus off."""

from __future__ import annotations

from edge_gateway.config import PowerSettings
from edge_gateway.power import PowerMode, PowerState, next_power_state

P = PowerSettings(ignition_off_after_s=30, low_battery_v=11.8, low_battery_min=10,
                  resume_battery_v=12.6)
T0 = 1_780_000_000_000


def test_engine_running_is_active_then_heartbeat_after_ignition_off() -> None:
    s = next_power_state(PowerState(), T0, 800.0, 14.0, P)
    assert s.mode is PowerMode.ACTIVE
    assert s.ignition
    s = next_power_state(s, T0 + 29_000, None, 12.4, P)
    assert s.mode is PowerMode.ACTIVE
    s = next_power_state(s, T0 + 31_000, 0.0, 12.4, P)
    assert s.mode is PowerMode.HEARTBEAT
    assert not s.ignition


def test_low_battery_for_n_minutes_stops_bus_polling_until_it_recovers() -> None:
    s = next_power_state(PowerState(), T0, 0.0, 11.5, P)
    s = next_power_state(s, T0 + 60_000, None, 11.5, P)
    assert s.mode is PowerMode.HEARTBEAT
    s = next_power_state(s, T0 + 60_000 + 10 * 60_000, None, 11.6, P)
    assert s.mode is PowerMode.BUS_OFF
    s = next_power_state(s, T0 + 12 * 60_000, None, 12.0, P)  # between thresholds: stay off
    assert s.mode is PowerMode.BUS_OFF
    s = next_power_state(s, T0 + 13 * 60_000, None, 12.7, P)
    assert s.mode is PowerMode.HEARTBEAT
    s = next_power_state(s, T0 + 14 * 60_000, 900.0, 13.9, P)
    assert s.mode is PowerMode.ACTIVE


def test_short_dip_does_not_stop_polling() -> None:
    s = next_power_state(PowerState(), T0, 0.0, 11.0, P)
    s = next_power_state(s, T0 + 60_000, None, 11.0, P)
    s = next_power_state(s, T0 + 120_000, None, 12.7, P)
    s = next_power_state(s, T0 + 20 * 60_000, None, 11.0, P)
    assert s.mode is PowerMode.HEARTBEAT
