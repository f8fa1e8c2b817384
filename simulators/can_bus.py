"""The CAN front-end: J1939 broadcasts and OBD-II over ISO 15765-4, on python-can or SLCAN.

`CanEcu` is the bus-independent part: which frames the engine ECU puts on the bus and when
(J1939 messages at the cycle times written in `edge_gateway/dbc/j1939.dbc`, encoded with
cantools), and how it answers OBD-II requests on 0x7DF/0x7E0 (or 29-bit 0x18DB33F1/0x18DA10F1)
with single frames, or a first frame, the tester's flow control, and consecutive frames
honouring its block size and STmin.

`CanSimulator` puts that ECU on any python-can bus (default: the in-process `virtual` bus, as
the vcan kernel module is not available everywhere); `SlcanAdapter` serves it as a LAWICEL
SLCAN adapter on a pty, so `can.Bus(interface="slcan", channel=port)` works unmodified.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import can

from simulators import dbc, isotp
from simulators.errors import FrontEndError
from simulators.obd_ecu import ObdEcu
from simulators.pty_port import PtyServer
from simulators.vehicle import ModelState, VehicleModel

log = logging.getLogger(__name__)

OBD_FUNCTIONAL_ID: Final = 0x7DF
OBD_REQUEST_ID: Final = 0x7E0
OBD_RESPONSE_ID: Final = 0x7E8
OBD_FUNCTIONAL_ID_29: Final = 0x18DB33F1
OBD_REQUEST_ID_29: Final = 0x18DA10F1
OBD_RESPONSE_ID_29: Final = 0x18DAF110
FLOW_CONTROL_TIMEOUT_S: Final = 1.0
"""ISO 15765-2 N_Bs: a multi-frame answer is abandoned when no flow control comes."""

CanMisbehaviour = Literal["garbage", "silence"]

TP_CM_BAM_ID: Final = 0x1CECFF00
"""J1939-21 TP.CM (PGN 60416) from the engine to everyone: announces a multi-packet DM1."""
TP_DT_ID: Final = 0x1CEBFF00
"""J1939-21 TP.DT (PGN 60160): the packets of a broadcast (BAM) transfer."""
BAM_PACKET_GAP_S: Final = 0.05
"""J1939-21 asks for 50-200 ms between BAM packets."""
DM1_PGN: Final = 0xFECA
_J1939_PROPRIETARY_SPN: Final = 520192
OBD_TO_J1939_DTC: Final[Mapping[str, tuple[int, int]]] = {
    "P0217": (110, 0),  # engine coolant temperature, above normal (most severe)
    **{f"P030{n}": (1322 + n, 31) for n in range(1, 10)},  # SPN 1323.. engine misfire cyl n
}
"""OBD-II code -> (SPN, FMI) for DM1; other codes map into the proprietary SPN range."""


def j1939_dtc(code: str) -> tuple[int, int]:
    """(SPN, FMI) reported in DM1 for an OBD-II code of the model."""
    known = OBD_TO_J1939_DTC.get(code)
    if known is not None:
        return known
    return _J1939_PROPRIETARY_SPN + int(code[1:], 16) % 4096, 31


def dm1_payload(dtcs: list[str]) -> bytes:
    """The DM1 data: lamp status, flash status, then 4 bytes per active DTC (SPN, FMI,
    occurrence count 1); without DTCs one all-zero DTC. At least 8 bytes (0xFF filled)."""
    mil = 1 if dtcs else 0
    amber = 1 if "P0217" in dtcs else 0
    out = bytearray([(mil << 6) | (amber << 2), 0xFF])
    if not dtcs:
        out += b"\x00\x00\x00\x00"  # J1939-73: SPN 0, FMI 0, count 0 means none active
    for code in dtcs:
        spn, fmi = j1939_dtc(code)
        out += bytes([spn & 0xFF, (spn >> 8) & 0xFF, ((spn >> 16) & 0x07) << 5 | fmi, 1])
    return bytes(out.ljust(8, b"\xff"))


def _fuel_economy(s: ModelState) -> float:
    if s.fuel_rate_lph <= 0.1:
        return 0.0
    return min(125.0, s.speed_kph / s.fuel_rate_lph)


# J1939 message -> signal -> value from the model; signals not listed are sent as
# "not available" (all bits set), as a real ECU does for parameters it does not measure.
J1939_SIGNALS: Final[Mapping[str, Mapping[str, Callable[[ModelState], float]]]] = {
    "EEC1": {
        "EngTorqueMode": lambda s: 0.0,
        "DriversDemandEngPercentTorque": lambda s: max(0.0, s.throttle_pct - 12.0),
        "ActualEngPercentTorque": lambda s: s.engine_load_pct,
        "EngSpeed": lambda s: s.rpm,
        "SrcAddrOfCtrlDevForEngCtrl": lambda s: 0.0,
        "EngDemandPercentTorque": lambda s: s.engine_load_pct,
    },
    "EEC2": {
        "AccelPedalPos1": lambda s: max(0.0, s.throttle_pct - 12.0) / 0.88,
        "EngPercentLoadAtCurrentSpeed": lambda s: s.engine_load_pct,
    },
    "CCVS1": {
        "TwoSpeedAxleSwitch": lambda s: 0.0,
        "ParkingBrakeSwitch": lambda s: 1.0 if s.speed_kph == 0 and s.gear == 0 else 0.0,
        "WheelBasedVehicleSpeed": lambda s: s.speed_kph,
        "CruiseCtrlActive": lambda s: 0.0,
        "BrakeSwitch": lambda s: 1.0 if s.accel_mps2 < -0.3 else 0.0,
        "ClutchSwitch": lambda s: 0.0,
    },
    "ET1": {
        "EngCoolantTemp": lambda s: s.coolant_c,
        "EngFuelTemp1": lambda s: s.ambient_c + 10.0,
        "EngOilTemp1": lambda s: s.oil_temp_c,
    },
    "LFE1": {
        "EngFuelRate": lambda s: s.fuel_rate_lph,
        "EngInstantaneousFuelEconomy": _fuel_economy,
        "EngThrottleValve1Pos1": lambda s: s.throttle_pct,
    },
    "DD1": {"FuelLevel1": lambda s: s.fuel_pct},
    "VEP1": {
        "ChargingSystemPotential": lambda s: s.battery_v,
        "BatteryPotentialPowerInput1": lambda s: s.battery_v,
        "KeyswitchBatteryPotential": lambda s: s.battery_v,
    },
    "VDHR": {
        "HighResTotalVehicleDistance": lambda s: s.odometer_km * 1000.0,
        "HighResTripDistance": lambda s: s.distance_since_clear_km * 1000.0,
    },
    "HOURS": {"EngTotalHoursOfOperation": lambda s: s.engine_hours_h},
    "DM1": {},  # built by dm1_payload(): the DBC cannot describe the multi-packet form
    "AMB": {
        "BarometricPress": lambda s: s.baro_kpa,
        "AmbientAirTemp": lambda s: s.ambient_c,
        "EngAirInletTemp": lambda s: s.intake_temp_c,
    },
}


@dataclass(frozen=True, slots=True)
class Frame:
    """A CAN frame independent of python-can (the SLCAN adapter needs no bus object)."""

    arbitration_id: int
    data: bytes
    is_extended_id: bool


@dataclass
class _Transfer:
    frames: list[bytes]
    response_id: int
    extended: bool
    next_index: int = 1
    block_left: int = 0
    stmin_s: float = 0.0
    next_at: float = 0.0
    waiting_fc_until: float = 0.0


def _stmin_seconds(raw: int) -> float:
    if raw <= 0x7F:
        return raw / 1000.0
    if 0xF1 <= raw <= 0xF9:
        return (raw - 0xF0) / 10_000.0
    return 0.127  # reserved values mean the longest STmin


class CanEcu:
    """What the simulated engine ECU transmits and how it answers, independent of the bus."""

    def __init__(self, model: VehicleModel, *, periods_ms: Mapping[str, int] | None = None,
                 j1939: bool = True, obd: bool = True, source_address: int = 0x00) -> None:
        self.model = model
        self.obd = ObdEcu(model) if obd else None
        self._db = dbc.load(dbc.J1939_DBC)
        self._source_address = source_address
        self._rng = random.Random(model.seed)  # noqa: S311 - junk frames for tests
        self._schedule: dict[str, tuple[Any, float, float]] = {}
        """message name -> (cantools message, period s, next due time)"""
        if j1939:
            for name in J1939_SIGNALS:
                message = self._db.get_message_by_name(name)
                period_ms = (periods_ms or {}).get(name, message.cycle_time or 1000)
                if period_ms > 0:
                    self._schedule[name] = (message, period_ms / 1000.0, 0.0)
        self._transfer: _Transfer | None = None
        self._bam: list[tuple[float, Frame]] = []
        """Pending TP.DT packets of a DM1 broadcast, (due time, frame)."""
        self._misbehaviour: str | None = None
        self._misbehave_until = 0.0
        self.frames_sent = 0
        self.requests_answered = 0

    def misbehave(self, mode: CanMisbehaviour, duration_s: float,
                  now: float | None = None) -> None:
        """``garbage``: add malformed and unknown frames to the traffic; ``silence``: send
        nothing, as a bus whose ECUs went to sleep."""
        if mode not in ("garbage", "silence"):
            raise ValueError(f"unknown CAN misbehaviour {mode!r}")
        self._misbehaviour = mode
        self._misbehave_until = (time.monotonic() if now is None else now) + duration_s

    def _mode(self, now: float) -> str | None:
        if self._misbehaviour and now >= self._misbehave_until:
            self._misbehaviour = None
        return self._misbehaviour

    def _powered(self) -> bool:
        state = self.model.state
        return state.ignition and state.online

    def next_due(self) -> float:
        """Monotonic time at which `due` has something to send next."""
        times = [due for _m, _p, due in self._schedule.values()]
        t = self._transfer
        if t is not None and not t.waiting_fc_until:
            times.append(t.next_at)
        if self._bam:
            times.append(self._bam[0][0])
        return min(times, default=float("inf"))

    def due(self, now: float) -> list[Frame]:
        """Frames whose time has come: broadcasts, consecutive frames of an answer."""
        mode = self._mode(now)
        out: list[Frame] = []
        state = self.model.state
        powered = self._powered()
        for name, (message, period, next_at) in self._schedule.items():
            if now < next_at:
                continue
            following = next_at + period
            if following <= now:  # skip missed periods instead of bursting after a stall
                following = now + period
            self._schedule[name] = (message, period, following)
            if powered and mode != "silence":
                if name == "DM1":
                    out.extend(self._dm1(state, now))
                else:
                    out.append(self.encode(name, state))
        if mode == "garbage" and powered:
            out.extend(self._garbage() for _ in range(2))
        out.extend(self._consecutive_frames(now))
        while self._bam and self._bam[0][0] <= now:
            out.append(self._bam.pop(0)[1])
        if mode == "silence":
            out = []
        self.frames_sent += len(out)
        return out

    def encode(self, name: str, state: ModelState) -> Frame:
        """One J1939 message from the model's state, encoded with cantools."""
        message = self._db.get_message_by_name(name)
        values = J1939_SIGNALS[name]
        data: dict[str, float] = {}
        for signal in message.signals:
            fn = values.get(signal.name)
            if fn is None:
                data[signal.name] = (2 ** signal.length - 1) * signal.scale + signal.offset
                continue
            value = fn(state)
            lo = signal.minimum if signal.minimum is not None else value
            hi = signal.maximum if signal.maximum is not None else value
            data[signal.name] = min(max(value, lo), hi)
        raw = message.encode(data, scaling=True, strict=False)
        frame_id = (message.frame_id & ~0xFF) | self._source_address
        return Frame(frame_id, bytes(raw), True)

    def _dm1(self, state: ModelState, now: float) -> list[Frame]:
        """DM1 in one frame, or announced by TP.CM BAM with its packets queued."""
        payload = dm1_payload(state.dtcs)
        sa = self._source_address
        if len(payload) <= 8:
            return [Frame(0x18000000 | DM1_PGN << 8 | sa, payload, True)]
        packets = (len(payload) + 6) // 7
        announce = bytes([0x20, len(payload) & 0xFF, len(payload) >> 8, packets, 0xFF,
                          DM1_PGN & 0xFF, (DM1_PGN >> 8) & 0xFF, 0x00])
        self._bam = []  # a newer DM1 replaces a transfer still under way
        for k in range(packets):
            chunk = payload[7 * k:7 * k + 7].ljust(7, b"\xff")
            frame = Frame(TP_DT_ID | sa, bytes([k + 1]) + chunk, True)
            self._bam.append((now + BAM_PACKET_GAP_S * (k + 1), frame))
        return [Frame(TP_CM_BAM_ID | sa, announce, True)]

    def on_frame(  # noqa: PLR0911 - each kind of frame the ECU ignores returns early
            self, frame: Frame, now: float) -> list[Frame]:
        """Answer a frame from the tester (OBD-II request or flow control)."""
        if self.obd is None or not self._powered() or self._mode(now) == "silence":
            return []
        if frame.is_extended_id:
            if frame.arbitration_id not in (OBD_FUNCTIONAL_ID_29, OBD_REQUEST_ID_29):
                return []
            response_id = OBD_RESPONSE_ID_29
        else:
            if frame.arbitration_id not in (OBD_FUNCTIONAL_ID, OBD_REQUEST_ID):
                return []
            response_id = OBD_RESPONSE_ID
        data = frame.data
        if data and data[0] >> 4 == 3:
            return self._flow_control(data, now)
        request = isotp.single_frame_payload(data)
        if request is None:
            return []
        payload = self.obd.respond(request)
        if payload is None:
            return []
        self.requests_answered += 1
        frames = isotp.segment(payload)
        if len(frames) > 1:
            self._transfer = _Transfer(frames, response_id, frame.is_extended_id,
                                       waiting_fc_until=now + FLOW_CONTROL_TIMEOUT_S)
        self.frames_sent += 1
        return [Frame(response_id, frames[0], frame.is_extended_id)]

    def _flow_control(self, data: bytes, now: float) -> list[Frame]:
        t = self._transfer
        if t is None or not t.waiting_fc_until:
            return []
        status = data[0] & 0x0F
        if status == 1:  # wait: the tester will send another flow control
            t.waiting_fc_until = now + FLOW_CONTROL_TIMEOUT_S
            return []
        if status != 0 or len(data) < 3:  # overflow or malformed: abort the transfer
            self._transfer = None
            return []
        t.block_left = data[1] or len(t.frames)
        t.stmin_s = _stmin_seconds(data[2])
        t.waiting_fc_until = 0.0
        t.next_at = now
        out = self._consecutive_frames(now)
        self.frames_sent += len(out)
        return out

    def _consecutive_frames(self, now: float) -> list[Frame]:
        t = self._transfer
        out: list[Frame] = []
        if t is None:
            return out
        if t.waiting_fc_until:
            if now > t.waiting_fc_until:
                self._transfer = None  # N_Bs timeout
            return out
        while t.next_index < len(t.frames) and t.block_left > 0 and now >= t.next_at:
            out.append(Frame(t.response_id, t.frames[t.next_index], t.extended))
            t.next_index += 1
            t.block_left -= 1
            if t.stmin_s > 0:
                t.next_at = now + t.stmin_s
                break
        if t.next_index >= len(t.frames):
            self._transfer = None
        elif t.block_left == 0:
            t.waiting_fc_until = now + FLOW_CONTROL_TIMEOUT_S
        return out

    def _garbage(self) -> Frame:
        rng = self._rng
        choice = rng.randrange(4)
        if choice == 0:  # a known J1939 id with a short payload
            message = self._db.get_message_by_name(rng.choice(list(J1939_SIGNALS)))
            return Frame(message.frame_id, rng.randbytes(rng.randint(0, 7)), True)
        if choice == 1:  # an id in no DBC
            return Frame(rng.randrange(0x100, 0x7FF), rng.randbytes(8), False)
        if choice == 2:  # an OBD answer nobody asked for, with a broken PCI
            return Frame(OBD_RESPONSE_ID, bytes([0xF0]) + rng.randbytes(7), False)
        return Frame(rng.randrange(1 << 29), rng.randbytes(rng.randint(0, 8)), True)


class CanSimulator:
    """The engine ECU on a python-can bus (``virtual`` by default); a context manager."""

    def __init__(self, model: VehicleModel, interface: str = "virtual",
                 channel: str = "fleet-sim", *, bitrate: int | None = None,
                 periods_ms: Mapping[str, int] | None = None, j1939: bool = True,
                 obd: bool = True) -> None:
        self.model = model
        self.interface = interface
        self.channel = channel
        self.bitrate = bitrate
        self.ecu = CanEcu(model, periods_ms=periods_ms, j1939=j1939, obd=obd)
        self._bus: can.BusABC | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> str:
        """Open the bus and start transmitting from a background thread; returns the channel."""
        if self._thread is not None:
            return self.channel
        kwargs: dict[str, Any] = {"interface": self.interface, "channel": self.channel}
        if self.bitrate:
            kwargs["bitrate"] = self.bitrate
        if self.interface == "virtual":
            kwargs["receive_own_messages"] = False
        try:
            self._bus = can.Bus(**kwargs)
        except (can.CanError, OSError, ValueError) as exc:
            raise FrontEndError(f"cannot open CAN {self.interface}:{self.channel}: {exc}") from exc
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="CanSimulator", daemon=True)
        self._thread.start()
        return self.channel

    def stop(self) -> None:
        """Stop transmitting and close the bus (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def misbehave(self, mode: CanMisbehaviour, duration_s: float) -> None:
        """See `CanEcu.misbehave`."""
        self.ecu.misbehave(mode, duration_s)

    def _send(self, frames: list[Frame]) -> None:
        bus = self._bus
        if bus is None:
            return
        for f in frames:
            try:
                bus.send(can.Message(arbitration_id=f.arbitration_id, data=f.data,
                                           is_extended_id=f.is_extended_id))
            except can.CanError:
                continue  # a full transmit queue loses the frame, as on a busy bus

    def _serve(self) -> None:
        bus = self._bus
        while bus is not None and not self._stop.is_set():
            now = time.monotonic()
            timeout = max(0.0, min(self.ecu.next_due() - now, 0.02))
            try:
                message = bus.recv(timeout)
            except can.CanError:
                log.exception("CanSimulator: receive failed on %s", self.channel)
                self._stop.wait(0.1)
                continue
            now = time.monotonic()
            if message is not None and not message.is_error_frame:
                self._send(self.ecu.on_frame(
                    Frame(message.arbitration_id, bytes(message.data), message.is_extended_id),
                    now))
            self._send(self.ecu.due(now))


_SLCAN_BITRATES: Final = frozenset("012345678")
SLCAN_VERSION: Final = "V1013"
SLCAN_SERIAL: Final = "NA123"


class SlcanAdapter(PtyServer):
    """A LAWICEL SLCAN USB-CAN adapter on a pty, with the simulated ECU on its bus.

    Commands end with CR; the adapter answers CR for success and BEL for an error; received
    frames are sent as ``tIIILDD..`` / ``TIIIIIIIILDD..`` lines only while the channel is open
    (``O`` or listen-only ``L``). Frames the client transmits (``t``/``T``, answered ``z``/``Z``)
    reach the ECU, so OBD-II requests work through it.
    """

    tick_s = 0.005
    backlog_limit_bytes = 8192  # about 0.25 s of traffic; a stalled reader loses frames

    def __init__(self, model: VehicleModel, *, link_path: str | Path | None = None,
                 periods_ms: Mapping[str, int] | None = None, j1939: bool = True,
                 obd: bool = True) -> None:
        super().__init__(link_path=link_path)
        self.model = model
        self.ecu = CanEcu(model, periods_ms=periods_ms, j1939=j1939, obd=obd)
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self.is_channel_open = False
        self.listen_only = False
        self.timestamps = False
        self.bitrate_code = "6"

    def misbehave(self, mode: CanMisbehaviour | Literal["drop"], duration_s: float) -> None:
        """``garbage``/``silence`` as on any bus, or ``drop``: the USB adapter is unplugged."""
        if mode == "drop":
            self.drop(duration_s)
            return
        with self._lock:
            self.ecu.misbehave(mode, duration_s)

    def on_reopen(self) -> None:
        """A re-plugged adapter starts closed, as after power-on."""
        with self._lock:
            self.is_channel_open = False
            self._buffer.clear()

    def on_input(self, data: bytes) -> None:
        """Parse SLCAN commands."""
        replies = bytearray()
        with self._lock:
            for byte in data:
                if byte == 0x0D:
                    command = self._buffer.decode("ascii", "replace")
                    self._buffer.clear()
                    replies += self._command(command)
                elif byte != 0x0A and len(self._buffer) < 64:
                    self._buffer.append(byte)
        if replies:
            self.write(bytes(replies))

    def on_tick(self, now: float) -> None:
        """Transmit what is due while the channel is open."""
        with self._lock:
            frames = self.ecu.due(now)
            if not self.is_channel_open:
                return
            text = b"".join(self._line(f, now) for f in frames)
        if text:
            self.write(text)

    def _line(self, frame: Frame, now: float) -> bytes:
        if frame.is_extended_id:
            head = f"T{frame.arbitration_id:08X}{len(frame.data)}"
        else:
            head = f"t{frame.arbitration_id:03X}{len(frame.data)}"
        stamp = f"{int(now * 1000) % 60000:04X}" if self.timestamps else ""
        return (head + frame.data.hex().upper() + stamp + "\r").encode()

    def _command(  # noqa: PLR0911, PLR0912 - one reply per SLCAN command
            self, command: str) -> bytes:
        ok, error = b"\r", b"\a"
        if not command:
            return ok
        kind, rest = command[0], command[1:]
        if kind == "S":
            if self.is_channel_open or rest not in _SLCAN_BITRATES:
                return error
            self.bitrate_code = rest
            return ok
        if kind == "s":
            return error if self.is_channel_open else ok
        if kind in "OL":
            if self.is_channel_open:
                return error
            self.is_channel_open, self.listen_only = True, kind == "L"
            return ok
        if kind == "C":
            was_open, self.is_channel_open = self.is_channel_open, False
            return ok if was_open else error
        if kind in "tTrR":
            return self._transmit(kind, rest)
        if kind == "V":
            return (SLCAN_VERSION + "\r").encode()
        if kind == "N":
            return (SLCAN_SERIAL + "\r").encode()
        if kind == "F":
            return b"F00\r" if self.is_channel_open else error
        if kind == "Z" and rest in ("0", "1"):
            self.timestamps = rest == "1"
            return ok
        if kind in "MmWXQ":
            return ok
        return error

    def _transmit(self, kind: str, rest: str) -> bytes:
        if not self.is_channel_open or self.listen_only:
            return b"\a"
        extended = kind in "TR"
        id_len = 8 if extended else 3
        try:
            arbitration_id = int(rest[:id_len], 16)
            length = int(rest[id_len])
            data = bytes.fromhex(rest[id_len + 1:id_len + 1 + 2 * length]) if kind in "tT" else b""
        except (ValueError, IndexError):
            return b"\a"
        if length > 8 or len(data) != (length if kind in "tT" else 0):
            return b"\a"
        now = time.monotonic()
        frames = self.ecu.on_frame(Frame(arbitration_id, data, extended), now)
        ack = b"Z\r" if extended else b"z\r"
        return ack + b"".join(self._line(f, now) for f in frames)
