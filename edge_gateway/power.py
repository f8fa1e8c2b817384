"""Adaptive power behaviour as an explicit state value and one pure transition function.

* ACTIVE: the engine runs (or ran less than `ignition_off_after_s` ago): every signal at its
  configured rate.
* HEARTBEAT: ignition off: every signal at most once per `heartbeat_interval_s`.
* BUS_OFF: ignition off and the battery below `low_battery_v` for `low_battery_min` minutes:
  the vehicle buses are no longer polled (OBD-II PIDs, OBD-over-CAN requests), so ECUs can
  sleep; the adapter voltage, GPS and passive CAN listening continue at heartbeat rate.
  Leaves BUS_OFF when the battery recovers above `resume_battery_v` or the engine runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from edge_gateway.config import PowerSettings


class PowerMode(enum.StrEnum):
    """What the gateway polls."""

    ACTIVE = "active"
    HEARTBEAT = "heartbeat"
    BUS_OFF = "bus_off"


@dataclass(frozen=True, slots=True)
class PowerState:
    """Per-vehicle power state, passed through `next_power_state`."""

    mode: PowerMode = PowerMode.ACTIVE
    ignition: bool = True
    engine_seen_ms: int | None = None
    """Last time an engine speed above zero was read."""
    low_since_ms: int | None = None
    """Since when the battery has been below the threshold (None = it is not)."""
    started_ms: int | None = None


def next_power_state(state: PowerState, now_ms: int, rpm: float | None,
                     battery_v: float | None, settings: PowerSettings) -> PowerState:
    """Advance the power state with the latest engine speed and battery voltage readings.

    `rpm` and `battery_v` are None when no fresh reading exists (an ECU that sleeps stops
    answering, which is itself a sign of ignition off).
    """
    started = state.started_ms if state.started_ms is not None else now_ms
    engine_seen = state.engine_seen_ms
    if rpm is not None and rpm > 0:
        engine_seen = now_ms
    reference = engine_seen if engine_seen is not None else started
    ignition = now_ms - reference < settings.ignition_off_after_s * 1000

    low_since = state.low_since_ms
    if battery_v is not None:
        if battery_v < settings.low_battery_v:
            low_since = low_since if low_since is not None else now_ms
        elif battery_v >= settings.resume_battery_v:
            low_since = None
    if ignition:
        mode = PowerMode.ACTIVE
        low_since = None
    elif low_since is not None and now_ms - low_since >= settings.low_battery_min * 60_000:
        mode = PowerMode.BUS_OFF
    elif state.mode is PowerMode.BUS_OFF and low_since is not None:
        mode = PowerMode.BUS_OFF  # hysteresis: stay off until the battery recovers
    else:
        mode = PowerMode.HEARTBEAT
    return replace(state, mode=mode, ignition=ignition, engine_seen_ms=engine_seen,
                   low_since_ms=low_since, started_ms=started)
