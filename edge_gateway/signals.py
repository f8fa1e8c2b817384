"""The signal table: every value the gateway can read, where from, how often, in which unit.

One row per signal. `name` is unique and is what rates are configured by (TOML
`[signals] rates_hz`, the `set_rate` command); `field` is where the value lands in a
`protocol.Sample`: a Sample attribute, or otherwise a key of `Sample.extra`. Several rows may
fill the same field: when more than one is fresh, the first row in the table wins (so GPS
ground speed beats wheel speed, which beats the OBD-II speed PID).

Decoders are small pure functions. OBD-II rows name a python-obd command (or carry a custom
PID and byte decoder where python-obd has none); CAN rows list the DBC signal names that carry
the value (J1939 and OBD-II-over-CAN DBCs name signals differently); GPS rows are filled by
the NMEA parser. Anything that matches no row takes the "unknown" path: counted, and
forwarded raw only when `gateway.forward_unknown_raw` is on.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from core.protocol import Sample


class SignalSource(enum.StrEnum):
    """Which front-end produces a signal."""

    OBD = "obd"
    CAN = "can"
    GPS = "gps"
    GATEWAY = "gateway"


Value = float | bool | list[str] | tuple[float, float]
"""A decoded signal value: a number, a flag, a list of DTC codes, or a (lat, lon) position."""


@dataclass(frozen=True, slots=True)
class ObdPid:
    """A Mode 01 PID python-obd does not know: request bytes and a decoder of its data bytes."""

    pid: int
    data_bytes: int
    decode: Callable[[bytes], float]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One row of the signal table."""

    name: str
    source: SignalSource
    rate_hz: float
    unit: str
    field: str
    obd_command: str | None = None
    """python-obd command name (`obd.commands[...]`)."""
    obd_pid: ObdPid | None = None
    """A custom PID for commands python-obd lacks."""
    obd_unit: str | None = None
    """pint unit the python-obd quantity is converted to; None = use the magnitude."""
    can_signals: tuple[str, ...] = ()
    """DBC signal names that carry this value, in preference order."""

    @property
    def period_ms(self) -> int:
        """The sampling period at the table's default rate."""
        return period_ms(self.rate_hz)


def period_ms(rate_hz: float) -> int:
    """Milliseconds between samples of a signal at `rate_hz` (0 = never: a huge period)."""
    if rate_hz <= 0:
        return 2**62
    return max(1, round(1000.0 / rate_hz))


def _odometer(data: bytes) -> float:
    # SAE J1979 PID A6: 4 bytes, 0.1 km per bit.
    return int.from_bytes(data[:4], "big") / 10.0


SAMPLE_FIELDS: Final = frozenset(
    f for f in Sample.__struct_fields__ if f not in ("seq", "t_ms", "extra"))

_OBD = SignalSource.OBD
_CAN = SignalSource.CAN
_GPS = SignalSource.GPS

SIGNALS: Final[tuple[SignalSpec, ...]] = (
    # --- GPS (NMEA RMC/GGA) first: ground truth for position and ground speed -----------------
    SignalSpec("gps_position", _GPS, 1.0, "deg", "lat_deg"),  # (lat, lon): also sets lon_deg
    SignalSpec("gps_speed", _GPS, 1.0, "km/h", "speed_kph"),
    SignalSpec("gps_course", _GPS, 1.0, "deg", "heading_deg"),
    SignalSpec("gps_altitude", _GPS, 1.0, "m", "alt_m"),
    SignalSpec("gps_hdop", _GPS, 1.0, "1", "hdop"),
    SignalSpec("gps_sats", _GPS, 1.0, "1", "sats"),
    SignalSpec("gps_fix", _GPS, 1.0, "1", "gps_fix"),
    # --- CAN: passive J1939 broadcasts (message, PGN) and OBD-II over CAN (S01PIDxx_...) -------
    SignalSpec("can_wheel_speed", _CAN, 1.0, "km/h", "speed_kph",
               can_signals=("WheelBasedVehicleSpeed", "S01PID0D_VehicleSpeed")),  # CCVS1 65265
    SignalSpec("can_engine_speed", _CAN, 1.0, "rpm", "rpm",
               can_signals=("EngSpeed", "EngineSpeed", "S01PID0C_EngineRPM")),  # EEC1 61444
    SignalSpec("can_coolant", _CAN, 1.0, "degC", "coolant_c",
               can_signals=("EngCoolantTemp", "EngineCoolantTemperature",
                            "S01PID05_EngineCoolantTemp")),  # ET1 65262
    SignalSpec("can_fuel_level", _CAN, 1.0, "%", "fuel_pct",
               can_signals=("FuelLevel1", "S01PID2F_FuelTankLevel")),  # DD1 65276
    SignalSpec("can_odometer", _CAN, 0.1, "km", "odometer_km",
               can_signals=("HighResTotalVehicleDistance", "TotalVehicleDistance",
                            "S01PIDA6_Odometer")),  # VDHR 65217 (metres in the DBC)
    SignalSpec("can_engine_hours", _CAN, 0.1, "h", "engine_hours_h",
               can_signals=("EngTotalHoursOfOperation", "EngineTotalHoursOfOperation")),  # HOURS
    SignalSpec("can_battery", _CAN, 0.2, "V", "battery_v",
               can_signals=("KeyswitchBatteryPotential", "BatteryPotentialPowerInput1",
                            "S01PID42_ControlModuleVoltage")),  # VEP1 65271
    SignalSpec("can_throttle", _CAN, 1.0, "%", "throttle_pct",
               can_signals=("AccelPedalPos1", "S01PID11_ThrottlePosition")),  # EEC2 61443
    SignalSpec("can_engine_load", _CAN, 1.0, "%", "engine_load_pct",
               can_signals=("EngPercentLoadAtCurrentSpeed", "S01PID04_CalcEngineLoad")),
    SignalSpec("can_fuel_rate", _CAN, 1.0, "L/h", "fuel_rate_lph",
               can_signals=("EngFuelRate", "S01PID5E_EngineFuelRate")),  # LFE1 65266
    SignalSpec("can_oil_temp", _CAN, 1.0, "degC", "oil_temp_c",
               can_signals=("EngOilTemp1", "S01PID5C_EngineOilTemp")),
    SignalSpec("can_ambient_temp", _CAN, 0.2, "degC", "ambient_temp_c",
               can_signals=("AmbientAirTemp", "S01PID46_AmbientAirTemp")),  # AMB 65269
    SignalSpec("can_baro", _CAN, 0.2, "kPa", "baro_kpa",
               can_signals=("BarometricPress", "S01PID33_AbsBarometricPressure")),
    SignalSpec("can_intake_temp", _CAN, 1.0, "degC", "intake_temp_c",
               can_signals=("S01PID0F_IntakeAirTemp",)),
    # --- OBD-II through an ELM327 (Mode 01 PIDs, Mode 03/07 DTCs, adapter voltage) -------------
    SignalSpec("obd_speed", _OBD, 1.0, "km/h", "speed_kph", obd_command="SPEED",
               obd_unit="kph"),
    SignalSpec("obd_rpm", _OBD, 1.0, "rpm", "rpm", obd_command="RPM", obd_unit="rpm"),
    SignalSpec("obd_coolant", _OBD, 1.0, "degC", "coolant_c", obd_command="COOLANT_TEMP",
               obd_unit="degC"),
    SignalSpec("obd_fuel_level", _OBD, 1.0, "%", "fuel_pct", obd_command="FUEL_LEVEL"),
    SignalSpec("obd_engine_load", _OBD, 1.0, "%", "engine_load_pct",
               obd_command="ENGINE_LOAD"),
    SignalSpec("obd_throttle", _OBD, 1.0, "%", "throttle_pct", obd_command="THROTTLE_POS"),
    SignalSpec("obd_odometer", _OBD, 0.1, "km", "odometer_km",
               obd_pid=ObdPid(0xA6, 4, _odometer)),
    SignalSpec("obd_intake_temp", _OBD, 1.0, "degC", "intake_temp_c",
               obd_command="INTAKE_TEMP", obd_unit="degC"),
    SignalSpec("obd_maf", _OBD, 1.0, "g/s", "maf_gps", obd_command="MAF",
               obd_unit="gps"),
    SignalSpec("obd_map", _OBD, 1.0, "kPa", "intake_pressure_kpa",
               obd_command="INTAKE_PRESSURE", obd_unit="kilopascal"),
    SignalSpec("obd_timing_advance", _OBD, 1.0, "deg", "timing_advance_deg",
               obd_command="TIMING_ADVANCE", obd_unit="degree"),
    SignalSpec("obd_short_fuel_trim_1", _OBD, 1.0, "%", "short_fuel_trim_1_pct",
               obd_command="SHORT_FUEL_TRIM_1"),
    SignalSpec("obd_long_fuel_trim_1", _OBD, 1.0, "%", "long_fuel_trim_1_pct",
               obd_command="LONG_FUEL_TRIM_1"),
    SignalSpec("obd_run_time", _OBD, 1.0, "s", "run_time_s", obd_command="RUN_TIME",
               obd_unit="second"),
    SignalSpec("obd_ambient_temp", _OBD, 1.0, "degC", "ambient_temp_c",
               obd_command="AMBIANT_AIR_TEMP", obd_unit="degC"),
    SignalSpec("obd_baro", _OBD, 1.0, "kPa", "baro_kpa", obd_command="BAROMETRIC_PRESSURE",
               obd_unit="kilopascal"),
    SignalSpec("obd_module_voltage", _OBD, 1.0, "V", "module_voltage_v",
               obd_command="CONTROL_MODULE_VOLTAGE", obd_unit="volt"),
    SignalSpec("obd_oil_temp", _OBD, 1.0, "degC", "oil_temp_c", obd_command="OIL_TEMP",
               obd_unit="degC"),
    SignalSpec("obd_fuel_rate", _OBD, 1.0, "L/h", "fuel_rate_lph", obd_command="FUEL_RATE",
               obd_unit="liters_per_hour"),
    SignalSpec("obd_accel_pedal", _OBD, 1.0, "%", "accel_pedal_d_pct",
               obd_command="ACCELERATOR_POS_D"),
    SignalSpec("obd_distance_mil", _OBD, 0.1, "km", "distance_w_mil_km",
               obd_command="DISTANCE_W_MIL", obd_unit="kilometer"),
    SignalSpec("obd_adapter_voltage", _OBD, 0.2, "V", "battery_v", obd_command="ELM_VOLTAGE",
               obd_unit="volt"),
    SignalSpec("obd_dtcs", _OBD, 1 / 60, "codes", "dtcs"),
    # --- derived by the gateway itself ---------------------------------------------------------
    SignalSpec("ignition", SignalSource.GATEWAY, 1.0, "bool", "ignition"),
)

SIGNALS_BY_NAME: Final[dict[str, SignalSpec]] = {s.name: s for s in SIGNALS}

DEFAULT_RAW_RATE_HZ: Final = 1.0
"""Rate of signals forwarded raw (unknown frames), which have no row in the table."""


def signals_of(source: SignalSource) -> tuple[SignalSpec, ...]:
    """The rows of one source, in table order."""
    return tuple(s for s in SIGNALS if s.source is source)


def can_signal_index() -> dict[str, SignalSpec]:
    """DBC signal name -> the row it feeds (first row wins for a name listed twice)."""
    index: dict[str, SignalSpec] = {}
    for spec in signals_of(SignalSource.CAN):
        for dbc_name in spec.can_signals:
            index.setdefault(dbc_name, spec)
    return index


UNIT_FACTORS: Final[dict[tuple[str, str], float]] = {
    ("m", "km"): 0.001,
    ("km", "km"): 1.0,
    ("s", "h"): 1 / 3600,
}
"""Conversions from a DBC signal's unit to the table's unit, where they differ."""


def to_number(value: Any) -> float | None:
    """A finite float from a decoded value (bool and NaN/inf refused), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_names() -> None:
    """Assert the table's invariants (unique names; extra fields named like the contract)."""
    seen: set[str] = set()
    for spec in SIGNALS:
        if spec.name in seen:
            raise ValueError(f"signal {spec.name!r} listed twice")
        seen.add(spec.name)
        if spec.field not in SAMPLE_FIELDS and not spec.field.islower():
            raise ValueError(f"signal {spec.name!r}: extra field {spec.field!r} is not snake_case")
