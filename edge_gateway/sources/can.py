"""CAN through python-can (any interface), decoded with cantools from DBC files.

Passive J1939: extended frames are matched to DBC messages by PGN (so any source address
and priority decode), and J1939 "not available" / "error" raw values are skipped rather than
published as numbers. OBD-II over CAN (ISO 15765-4): when enabled, Mode 01 single-frame
requests go to the functional id 0x7DF at each signal's rate and the ECU answers (0x7E8..0x7EF)
are decoded from the OBD-II DBC like any broadcast.

A frame that no DBC message describes takes the unknown path: counted as `unknown_frames`,
and forwarded raw (`can_raw_<id>` = its first 6 data bytes as one unsigned number, exactly
representable in a float) only when `gateway.forward_unknown_raw` is on. A frame that a DBC
message describes but that does not decode (wrong length, bad multiplexer) is `malformed`.
"""

from __future__ import annotations

import logging
import re
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import cantools
import serial
from can.interfaces.slcan import slcanBus

from edge_gateway.config import CanSettings
from edge_gateway.errors import DbcError, SourceError
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.signals import UNIT_FACTORS, SignalSpec, can_signal_index, to_number
from edge_gateway.sources.base import ThreadedSource

log = logging.getLogger("edge_gateway.sources.can")

OBD_RESPONSE_IDS = range(0x7E8, 0x7F0)
OBD_MODE01_RESPONSE = 0x41
_OBD_SIGNAL_RE = re.compile(r"^S01PID([0-9A-Fa-f]{2})_")


def load_dbc(paths: list[Path]) -> Any:
    """One cantools database holding every message of the given DBC files."""
    db = cantools.database.can.Database()
    for path in paths:
        try:
            db.add_dbc_file(str(path))
        except (OSError, cantools.database.errors.ParseError) as exc:
            raise DbcError(f"cannot load DBC file {path}: {exc}") from exc
    return db


def j1939_pgn(frame_id: int) -> int:
    """The parameter group number of a 29-bit J1939 identifier."""
    pdu_format = (frame_id >> 16) & 0xFF
    pgn = (frame_id >> 8) & 0x3FFFF
    if pdu_format < 240:
        pgn &= 0x3FF00  # PDU1: the low byte is a destination address, not part of the PGN
    return pgn


def j1939_available(raw: int, length_bits: int) -> bool:
    """False for J1939's reserved raw ranges ("error", "not available") of a signal."""
    if length_bits < 8:
        return raw < (1 << length_bits) - 1
    top = (0xFA << (length_bits - 8)) | ((1 << (length_bits - 8)) - 1)
    return raw <= top


class FrameDecoder:
    """Pure frame -> signal values decoding, shared by the CAN source and its tests."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.index: dict[str, SignalSpec] = can_signal_index()
        self._by_id: dict[tuple[int, bool], Any] = {}
        self._by_pgn: dict[int, Any] = {}
        for message in db.messages:
            self._by_id[(message.frame_id, bool(message.is_extended_frame))] = message
            if message.is_extended_frame:
                self._by_pgn.setdefault(j1939_pgn(message.frame_id), message)
        self.obd_pids: dict[str, int] = {}
        """Table signal name -> the Mode 01 PID that carries it over CAN (from DBC names)."""
        for message in db.messages:
            for signal in message.signals:
                match = _OBD_SIGNAL_RE.match(signal.name)
                spec = self.index.get(signal.name)
                if match and spec is not None:
                    self.obd_pids.setdefault(spec.name, int(match.group(1), 16))

    def message_for(self, arbitration_id: int, extended: bool) -> Any | None:
        """The DBC message of a frame: exact id first, then the J1939 PGN."""
        message = self._by_id.get((arbitration_id, extended))
        if message is None and extended:
            message = self._by_pgn.get(j1939_pgn(arbitration_id))
        return message

    def decode(self, message: Any, data: bytes) -> dict[str, float]:
        """Table signal name -> value for one frame of a known message (may raise)."""
        values = message.decode(data, decode_choices=False, scaling=True)
        service = values.get("Service")
        if service is not None and service != OBD_MODE01_RESPONSE:
            return {}  # another OBD service (DTCs, VIN) or a multi-frame part: not a Mode 01 value
        raws = message.decode(data, decode_choices=False, scaling=False) \
            if message.is_extended_frame else None
        out: dict[str, float] = {}
        for signal in message.signals:
            spec = self.index.get(signal.name)
            if spec is None or signal.name not in values or spec.name in out:
                continue
            if raws is not None and not j1939_available(int(raws[signal.name]), signal.length):
                continue
            number = to_number(values[signal.name])
            if number is not None:
                factor = UNIT_FACTORS.get((signal.unit or "", spec.unit), 1.0)
                out[spec.name] = number * factor
        return out


class CanSource(ThreadedSource):
    """Receives (and optionally requests) CAN frames on a thread."""

    def __init__(self, settings: CanSettings, dbc_files: list[Path], board: Board,
                 rates: Rates, power_mode: Callable[[], PowerMode], *, forward_raw: bool,
                 reconnect_min_s: float, reconnect_max_s: float) -> None:
        super().__init__("can", reconnect_min_s, reconnect_max_s)
        self.settings = settings
        self.decoder = FrameDecoder(load_dbc(dbc_files))
        self.board = board
        self.rates = rates
        self.power_mode = power_mode
        self.forward_raw = forward_raw

    def open_bus(self) -> Any:
        """Open the python-can bus (wrapped errors)."""
        kwargs: dict[str, Any] = {"interface": self.settings.interface,
                                  "channel": self.settings.channel or None}
        if self.settings.bitrate is not None:
            kwargs["bitrate"] = self.settings.bitrate
        try:
            if self.settings.interface == "slcan":
                return open_slcan(self.settings.channel, self.settings.bitrate)
            return can.Bus(**kwargs)
        except (can.CanError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open CAN {self.settings.interface}:"
                              f"{self.settings.channel}: {exc}") from exc

    def session(self) -> None:
        """Receive frames until the bus fails or the source stops."""
        bus = self.open_bus()
        self.health.set_state(f"listening on {self.settings.interface}:{self.settings.channel}")
        next_due: dict[str, float] = dict.fromkeys(self.decoder.obd_pids, 0.0)
        try:
            while not self.stop_event.is_set():
                if self.settings.obd_requests:
                    self._send_requests(bus, next_due)
                try:
                    frame = bus.recv(timeout=0.1)
                except can.CanError as exc:
                    raise SourceError(f"CAN receive failed: {exc}") from exc
                if frame is not None:
                    self.handle_frame(frame.arbitration_id, bool(frame.is_extended_id),
                                      bytes(frame.data), is_error=bool(frame.is_error_frame))
        finally:
            bus.shutdown()

    def handle_frame(self, arbitration_id: int, extended: bool, data: bytes, *,
                     is_error: bool = False) -> None:
        """Decode one frame into the board; never raises."""
        self.health.count("frames")
        if is_error:
            self.health.count("error_frames")
            return
        message = self.decoder.message_for(arbitration_id, extended)
        if message is None:
            self.health.count("unknown_frames")
            if self.forward_raw:
                name = f"can_raw_{arbitration_id:x}"
                self.rates.set_raw(name, self.rates.rate_hz(name))
                self.board.put(name, float(int.from_bytes(data[:6], "big")), _now_ms())
            return
        try:
            values = self.decoder.decode(message, data)
        except Exception as exc:  # noqa: BLE001 - cantools raises several types on bad frames
            self.health.count("malformed")
            log.debug("can: %x: %s", arbitration_id, exc)
            return
        if values:
            self.board.put_many(dict(values), _now_ms())

    def _send_requests(self, bus: Any, next_due: dict[str, float]) -> None:
        if self.power_mode() is PowerMode.BUS_OFF:
            return
        now = time.monotonic()
        for name, pid in self.decoder.obd_pids.items():
            if next_due[name] > now or self.rates.rate_hz(name) <= 0:
                continue
            next_due[name] = now + self.rates.period_ms(name) / 1000.0
            # ISO 15765-4 single frame: length 2, service 01, PID, padding 0x55 (ISO 15765-2).
            data = bytes([0x02, 0x01, pid, 0x55, 0x55, 0x55, 0x55, 0x55])
            try:
                bus.send(can.Message(arbitration_id=self.settings.obd_request_id,
                                     is_extended_id=False, data=data))
            except can.CanError as exc:
                self.health.count("send_errors")
                log.debug("can: request %02x failed: %s", pid, exc)


def open_slcan(channel: str, bitrate: int | None) -> Any:
    """python-can's SLCAN bus with a buffered reader (see `BufferedSlcanBus`)."""
    kwargs: dict[str, Any] = {"channel": channel}
    if bitrate is not None:
        kwargs["bitrate"] = bitrate
    return BufferedSlcanBus(**kwargs)


_SLCAN_END = re.compile(rb"[\r\a]")
"""An SLCAN reply ends with CR (a frame, or OK) or BEL (an error)."""


def take_slcan_line(buffer: bytearray) -> str | None:
    """Remove the first complete SLCAN reply from `buffer` and return it with its terminator
    (as python-can's own reader does), or None while no reply is complete."""
    match = _SLCAN_END.search(buffer)
    if match is None:
        return None
    line = bytes(buffer[:match.end()])
    del buffer[:match.end()]
    return line.decode("ascii", "replace")


class BufferedSlcanBus(slcanBus):
    """python-can's SLCAN bus reading every waiting byte per system call.

    python-can 4.x reads the port one byte per call and polls it with a 1 ms serial timeout:
    about 34 system calls per J1939 frame, and a thousand wake-ups a second when idle, which
    was most of the gateway's CPU at 100 frames/s. This reader takes everything the port holds
    in one call, splits the replies in memory and, with nothing to read, waits in one
    `select()` until data or the receive timeout. A port without a file descriptor (a pyserial
    URL) keeps python-can's own loop.
    """

    def _read(self, timeout: float | None) -> str | None:
        port = self.serialPortOrig
        try:
            fd = port.fileno()
        except (AttributeError, OSError, ValueError):
            line: str | None = super()._read(timeout)
            return line
        deadline = None if timeout is None else time.monotonic() + timeout
        while (line := take_slcan_line(self._buffer)) is None:
            try:
                waiting = port.in_waiting
                if waiting:
                    self._buffer += port.read(waiting)
                    continue
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([fd], [], [], left)
                if ready and not port.in_waiting:
                    # Readable with nothing to read is a hang-up: the adapter was
                    # unplugged (or the pty's other end closed).
                    raise can.CanOperationError("SLCAN device disconnected")
            except (OSError, serial.SerialException) as exc:
                raise can.CanOperationError(f"cannot read from {port.port}: {exc}") from exc
            if not ready:
                return None
        return line


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
