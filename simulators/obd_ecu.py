"""The engine ECU's OBD-II services (SAE J1979) over a vehicle model.

Shared by the ELM327 emulator and the CAN front-end, so both answer identically. Service 01
data bytes are encoded with cantools from `edge_gateway/dbc/obd2.dbc`; the table below only
says which model value feeds which DBC signal. Unsupported PIDs get no answer (the adapter
then prints NO DATA), unsupported services a negative response (7F sid 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from simulators import dbc
from simulators.vehicle import ModelState, VehicleModel


@dataclass(frozen=True, slots=True)
class PidSpec:
    """One service 01 PID: the DBC signal that carries it and the model value it reports."""

    pid: int
    signal: str
    value: Callable[[ModelState], float]


def _monitor_status(s: ModelState) -> float:
    # A7 = MIL, A6..A0 = number of confirmed DTCs; B = spark ignition, all tests complete.
    a = (0x80 if s.dtcs else 0) | min(len(s.dtcs), 0x7F)
    return float((a << 24) | (0x07 << 16))


MODE01: Final[dict[int, PidSpec]] = {spec.pid: spec for spec in (
    PidSpec(0x01, "S01PID01_MonitorStatus", _monitor_status),
    PidSpec(0x04, "S01PID04_CalcEngineLoad", lambda s: s.engine_load_pct),
    PidSpec(0x05, "S01PID05_EngineCoolantTemp", lambda s: s.coolant_c),
    PidSpec(0x0B, "S01PID0B_IntakeManifoldAbsPress", lambda s: s.map_kpa),
    PidSpec(0x0C, "S01PID0C_EngineRPM", lambda s: s.rpm),
    PidSpec(0x0D, "S01PID0D_VehicleSpeed", lambda s: s.speed_kph),
    PidSpec(0x0E, "S01PID0E_TimingAdvance", lambda s: s.timing_advance_deg),
    PidSpec(0x0F, "S01PID0F_IntakeAirTemp", lambda s: s.intake_temp_c),
    PidSpec(0x10, "S01PID10_MAFAirFlowRate", lambda s: s.maf_gps),
    PidSpec(0x11, "S01PID11_ThrottlePosition", lambda s: s.throttle_pct),
    PidSpec(0x1C, "S01PID1C_OBDStandard", lambda s: 1.0),  # OBD-II as defined by CARB
    PidSpec(0x1F, "S01PID1F_RunTimeSinceStart", lambda s: s.run_time_s),
    PidSpec(0x21, "S01PID21_DistanceMILOn", lambda s: s.distance_mil_km),
    PidSpec(0x2F, "S01PID2F_FuelTankLevel", lambda s: s.fuel_pct),
    PidSpec(0x31, "S01PID31_DistanceSinceCodesClear", lambda s: s.distance_since_clear_km),
    PidSpec(0x33, "S01PID33_AbsBarometricPressure", lambda s: s.baro_kpa),
    PidSpec(0x42, "S01PID42_ControlModuleVoltage", lambda s: s.battery_v),
    PidSpec(0x46, "S01PID46_AmbientAirTemp", lambda s: s.ambient_c),
    PidSpec(0x49, "S01PID49_AcceleratorPedalPosD", lambda s: max(0.0, s.throttle_pct - 12.0)),
    PidSpec(0x51, "S01PID51_FuelType", lambda s: 1.0),  # gasoline
    PidSpec(0x5C, "S01PID5C_EngineOilTemp", lambda s: s.oil_temp_c),
    PidSpec(0x5E, "S01PID5E_EngineFuelRate", lambda s: s.fuel_rate_lph),
    PidSpec(0xA6, "S01PIDA6_Odometer", lambda s: s.odometer_km),
)}
"""Service 01 PIDs the simulated engine ECU supports (besides the 00/20/40/... bitmaps)."""

BITMAP_PIDS: Final = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0)
MODE09_SUPPORTED: Final = (0x01, 0x02, 0x0A)
ECU_NAME: Final = b"ECM\x00-EngineControl"
NEGATIVE_RESPONSE: Final = 0x7F
SERVICE_NOT_SUPPORTED: Final = 0x11


def supported_bitmap(base: int, pids: set[int]) -> int:
    """The 32-bit "PIDs supported [base+1 .. base+0x20]" value for a set of PIDs."""
    value = 0
    for pid in pids:
        if base < pid <= base + 0x20:
            value |= 1 << (32 - (pid - base))
    return value


def dtc_bytes(code: str) -> bytes:
    """Two bytes of an SAE J2012 code: "P0301" -> 03 01, "C1234" -> 52 34."""
    system = "PCBU".index(code[0])
    first = (system << 6) | (int(code[1]) << 4) | int(code[2], 16)
    return bytes([first, int(code[3:5], 16)])


def dtc_code(raw: bytes) -> str:
    """The inverse of `dtc_bytes`."""
    return f"{'PCBU'[raw[0] >> 6]}{(raw[0] >> 4) & 3}{raw[0] & 0x0F:X}{raw[1]:02X}"


class ObdEcu:
    """Answers OBD-II requests (service byte + parameters) from a model's current state."""

    def __init__(self, model: VehicleModel) -> None:
        self.model = model
        self._db = dbc.load(dbc.OBD2_DBC)
        self._response = self._db.get_message_by_name("OBD2_Response")
        self._signals = {s.name: s for s in self._response.signals}
        supported = {*MODE01, 0x00}
        # each bitmap PID is itself supported when a higher range holds a PID
        for base in BITMAP_PIDS[1:]:
            if any(p > base for p in supported):
                supported.add(base)
        self.mode01_supported = frozenset(supported)

    def available(self) -> bool:
        """Whether the ECU is powered and reachable (ignition on, device online)."""
        state = self.model.state
        return state.ignition and state.online

    def respond(self, request: bytes) -> bytes | None:
        """The response payload, or None when the ECU stays silent."""
        if not request or not self.available():
            return None
        service, params = request[0], request[1:]
        handler = self._services.get(service)
        if handler is None:
            return bytes([NEGATIVE_RESPONSE, service, SERVICE_NOT_SUPPORTED])
        return handler(self, params)

    def mode01_data(self, pid: int, state: ModelState | None = None) -> bytes | None:
        """Data bytes (A, B, ...) of one service 01 PID, or None if unsupported."""
        state = state or self.model.state
        if pid in BITMAP_PIDS:
            if pid not in self.mode01_supported:
                return None
            return supported_bitmap(pid, set(self.mode01_supported)).to_bytes(4, "big")
        spec = MODE01.get(pid)
        if spec is None:
            return None
        signal = self._signals[spec.signal]
        value = spec.value(state)
        lo = signal.minimum if signal.minimum is not None else value
        hi = signal.maximum if signal.maximum is not None else value
        value = min(max(value, lo), hi)
        size = signal.length // 8
        frame = self._response.encode(
            {"Length": 2 + size, "Service": 0x41, "PID": pid, spec.signal: value},
            scaling=True, strict=False)
        return bytes(frame[3:3 + size])

    def _service01(self, params: bytes) -> bytes | None:
        state = self.model.state
        out = bytearray([0x41])
        for pid in params[:6]:
            data = self.mode01_data(pid, state)
            if data is not None:
                out += bytes([pid]) + data
        return bytes(out) if len(out) > 1 else None

    def _dtc_service(self, response_sid: int, codes: list[str]) -> bytes:
        # ISO 15765-4 responses carry the number of DTCs before the codes
        body = b"".join(dtc_bytes(c) for c in codes)
        return bytes([response_sid, len(codes)]) + body

    def _service03(self, params: bytes) -> bytes | None:
        return self._dtc_service(0x43, self.model.state.dtcs)

    def _service07(self, params: bytes) -> bytes | None:
        return self._dtc_service(0x47, self.model.state.pending_dtcs)

    def _service04(self, params: bytes) -> bytes | None:
        self.model.clear_dtcs()
        return b"\x44"

    def _service09(self, params: bytes) -> bytes | None:
        if len(params) != 1:
            return None
        pid = params[0]
        if pid == 0x00:
            return b"\x49\x00" + supported_bitmap(0, set(MODE09_SUPPORTED)).to_bytes(4, "big")
        if pid == 0x01:
            return b"\x49\x01\x01"
        if pid == 0x02:
            return b"\x49\x02\x01" + self.model.vin.encode("ascii")
        if pid == 0x0A:
            return b"\x49\x0A\x01" + ECU_NAME.ljust(20, b"\x00")
        return None

    _services: Final[dict[int, Callable[[ObdEcu, bytes], bytes | None]]] = {
        0x01: _service01,
        0x03: _service03,
        0x04: _service04,
        0x07: _service07,
        0x09: _service09,
    }

