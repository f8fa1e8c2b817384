"""Typed settings of the simulator processes (`fleet sim ...`)."""

from __future__ import annotations

import msgspec

from core.settings import DatabaseSettings, MqttSettings


class LoadSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Defaults of `fleet sim fleet` (its flags override them)."""

    rate_hz: float = 1.0
    """Samples per vehicle per second."""
    batch_size: int = 10
    """Samples per telemetry message."""
    connections: int = 2
    """MQTT connections the simulated vehicles share."""
    max_inflight: int = 2000
    """Unacknowledged messages allowed before publishing waits."""
    progress_interval_s: float = 5.0
    faults_per_vehicle_hour: float = 0.0


class SimSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Root settings of `fleet sim`: the broker, the database (for --seed-db) and load defaults."""

    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    sim: LoadSettings = msgspec.field(default_factory=LoadSettings)
