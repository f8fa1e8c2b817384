"""Typed settings of the gateway process (`fleet gateway`), loaded once at start-up.

Every threshold carries its unit in its name. Load with
``core.settings.load_settings(GatewayProcessSettings, path)``; `fleet gateway` flags are
applied on top with `apply_overrides`. A source with an empty `port` / `interface` is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from core.protocol import ID_PATTERN, MAX_SAMPLES_PER_MESSAGE, whole
from core.settings import MqttSettings
from edge_gateway.errors import ConfigError
from edge_gateway.signals import SIGNALS_BY_NAME

PositiveS = Annotated[float, Meta(gt=0)]
RateHz = Annotated[float, Meta(ge=0, le=100, description="0 = never")]

DBC_DIR = Path(__file__).resolve().parent / "dbc"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Identity, spool and publishing behaviour."""

    tenant: Annotated[str, Meta(pattern=ID_PATTERN)] = "demo"
    vehicle: Annotated[str, Meta(pattern=ID_PATTERN)] = "vehicle-1"
    device: Annotated[str, Meta(pattern=ID_PATTERN)] | None = None
    """Device id put into telemetry messages (defaults to none)."""
    spool_path: str = "/var/lib/fleet-gateway/spool.sqlite3"
    spool_max_samples: Annotated[int, Meta(ge=1000)] = 1_000_000
    """Bound of the spool; beyond it the oldest samples are dropped and counted."""
    tick_s: Annotated[float, Meta(ge=0.01, le=10)] = 0.1
    """How often the sample builder looks for due signals (the finest signal period)."""
    batch_interval_s: Annotated[float, Meta(ge=0, le=600)] = 1.0
    """A live batch is published once its oldest sample is this old..."""
    batch_max_samples: Annotated[int, Meta(ge=1, le=MAX_SAMPLES_PER_MESSAGE)] = 250
    """...or once it holds this many samples (a replayed backlog always goes in full batches)."""
    max_inflight_messages: Annotated[int, Meta(ge=1, le=1000)] = 16
    """Telemetry messages awaiting PUBACK at once (the replay window)."""
    replay_messages_per_s: Annotated[float, Meta(ge=0)] = 20.0
    """Telemetry messages a second at most, so a backlog replayed after an outage stays
    under the server's per-device limit (`[limits] device_messages_per_s` of `fleet stream`,
    50/s by default), where messages over it become dead letters. 20 full batches a second
    is 5,000 samples a second; 0 = as fast as the broker acknowledges."""
    publish_timeout_s: PositiveS = 60.0
    """A PUBACK that takes longer counts as a broken connection: reconnect and resend (a busy
    broker can be slow; the keep-alive detects dead connections sooner)."""
    connect_timeout_s: PositiveS = 10.0
    """How long a connection attempt (CONNACK) and the `cmd` subscription may take. A broker
    that does not answer (a network partition, a dead mobile link) is tried again after the
    back-off instead of being waited for as long as a slow PUBACK."""
    status_interval_s: PositiveS = 60.0
    reconnect_min_s: PositiveS = 1.0
    reconnect_max_s: PositiveS = 20.0
    """Longest wait between reconnect attempts (broker, adapters), s: bounds how long the
    gateway stays away after the broker is reachable again (measured: `fleet bench faults`,
    gateway_broker_partition)."""
    forward_unknown_raw: bool = False
    """Forward unknown CAN frames / raw OBD PIDs in `extra` (they are always counted)."""


class ObdSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An ELM327-compatible adapter driven by python-obd (the optional `obd` extra)."""

    port: str = ""
    """Serial device (/dev/ttyUSB0, /dev/rfcomm0, a pty); empty = OBD-II off."""
    baudrate: int | None = None
    """None = let python-obd probe the adapter's baud rate."""
    protocol: str | None = None
    """ELM327 protocol id ("6" = ISO 15765-4 CAN 11 bit 500 kbit/s); None = auto."""
    timeout_s: PositiveS = 0.3
    """Serial read timeout. python-obd retries empty reads for about 1 s, so a silent adapter
    costs about 10 x (timeout_s + 0.1) s per query; slow answers are still caught by retries."""
    dtc_interval_s: PositiveS = 60.0
    """Stored and pending DTCs (Mode 03/07) are read this often."""
    failures_before_reconnect: Annotated[int, Meta(ge=1)] = 10
    """Consecutive failed queries (NO DATA, garbage, timeouts) before the adapter is reset."""
    raw_pids: list[Annotated[str, Meta(pattern=whole(r"01[0-9A-Fa-f]{2}"))]] = []
    """Mode 01 PIDs outside the signal table, polled and counted as unknown (e.g. "01A4")."""
    raw_rate_hz: RateHz = 0.2


class CanSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A CAN interface through python-can, decoded with cantools from DBC files."""

    interface: str = ""
    """python-can interface (socketcan, slcan, virtual, ...); empty = CAN off."""
    channel: str = ""
    bitrate: int | None = None
    dbc_files: list[str] = []
    """DBC files; empty = the files shipped in edge_gateway/dbc/."""
    obd_requests: bool = False
    """Poll Mode 01 PIDs over CAN (ISO 15765-4) in addition to passive J1939 listening."""
    obd_request_id: Annotated[int, Meta(ge=0, le=0x7FF)] = 0x7DF
    """Functional request id of ISO 15765-4 (11-bit)."""


class GpsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An NMEA 0183 receiver on a serial port."""

    port: str = ""
    """Serial device (/dev/ttyACM0, /dev/serial0, a pty); empty = GPS off."""
    baudrate: int = 9600


class PowerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Adaptive behaviour that protects the 12 V battery."""

    ignition_off_after_s: PositiveS = 30.0
    """No engine speed above zero for this long means the ignition is off."""
    heartbeat_interval_s: PositiveS = 300.0
    """With the ignition off every signal is sampled only this often."""
    low_battery_v: Annotated[float, Meta(ge=0, le=60)] = 11.8
    low_battery_min: Annotated[float, Meta(ge=0)] = 10.0
    """Battery below `low_battery_v` this many minutes (ignition off) stops vehicle-bus polling."""
    resume_battery_v: Annotated[float, Meta(ge=0, le=60)] = 12.6
    """Polling resumes above this voltage or when the engine runs again."""


class SignalOverrides(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-signal rate changes on top of the table in `edge_gateway.signals`."""

    rates_hz: dict[str, RateHz] = {}
    """Signal name -> rate; 0 turns a signal off."""


class GatewayProcessSettings(msgspec.Struct, frozen=True, kw_only=True,
                             forbid_unknown_fields=True):
    """Root settings object of `fleet gateway`."""

    gateway: GatewaySettings = GatewaySettings()
    mqtt: MqttSettings = MqttSettings()
    obd: ObdSettings = ObdSettings()
    can: CanSettings = CanSettings()
    gps: GpsSettings = GpsSettings()
    power: PowerSettings = PowerSettings()
    signals: SignalOverrides = SignalOverrides()

    def __post_init__(self) -> None:
        if self.power.resume_battery_v < self.power.low_battery_v:
            raise ValueError("power.resume_battery_v must be >= power.low_battery_v")
        if self.gateway.reconnect_max_s < self.gateway.reconnect_min_s:
            raise ValueError("gateway.reconnect_max_s must be >= gateway.reconnect_min_s")
        unknown = sorted(set(self.signals.rates_hz) - set(SIGNALS_BY_NAME))
        if unknown:
            raise ValueError(f"signals.rates_hz: unknown signal(s) {unknown}; "
                             f"known: {sorted(SIGNALS_BY_NAME)}")


def dbc_paths(can: CanSettings) -> list[Path]:
    """The DBC files to load: the configured ones, or every file shipped with the gateway."""
    paths = [Path(p) for p in can.dbc_files] if can.dbc_files else sorted(DBC_DIR.glob("*.dbc"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"DBC file(s) not found: {', '.join(missing)}")
    return paths


def apply_overrides(settings: GatewayProcessSettings, **sections: dict[str, object]
                    ) -> GatewayProcessSettings:
    """Return settings with some keys of some sections replaced (None values are ignored).

    Used for command-line flags; the result is validated like a file would be.
    """
    data = msgspec.to_builtins(settings)
    for section, values in sections.items():
        for key, value in values.items():
            if value is not None:
                data[section][key] = value
    try:
        return msgspec.convert(data, type=GatewayProcessSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
