"""GPS from NMEA 0183 sentences on a serial port (pynmea2 + pyserial).

RMC gives the fix status, position, speed over ground (knots -> km/h) and course; GGA gives
the fix quality, satellites, HDOP and altitude. A position is published only from a valid fix
(RMC status A, or GGA quality > 0). Sentences with a bad checksum or that do not parse are
counted as `malformed`; sentence types we do not use (GSV, VTG, ...) as `ignored`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pynmea2
import serial

from edge_gateway.config import GpsSettings
from edge_gateway.errors import SourceError
from edge_gateway.sampler import Board
from edge_gateway.signals import Value, to_number
from edge_gateway.sources.base import ThreadedSource

log = logging.getLogger("edge_gateway.sources.gps")

KNOTS_TO_KPH = 1.852
MAX_LINE_BYTES = 200
"""NMEA 0183 allows 82 characters; longer lines are garbage."""


class NmeaParser:
    """Turns NMEA lines into signal values; pure apart from counting into `health`."""

    def __init__(self, count: Any) -> None:
        self._count = count

    def parse(self, line: bytes) -> dict[str, Value]:  # noqa: PLR0911
        """Signal values carried by one line (empty for anything unusable)."""
        if len(line) > MAX_LINE_BYTES:
            self._count("malformed")
            return {}
        text = line.decode("ascii", "replace").strip()
        if not text:
            return {}
        try:
            msg = pynmea2.parse(text, check=True)
        except (pynmea2.ParseError, ValueError, TypeError, AttributeError):
            self._count("malformed")
            return {}
        try:
            if isinstance(msg, pynmea2.types.talker.RMC):
                return self._rmc(msg)
            if isinstance(msg, pynmea2.types.talker.GGA):
                return self._gga(msg)
        except (ValueError, TypeError, AttributeError):
            # pynmea2 parses fields lazily: an unparsable number only shows up here.
            self._count("malformed")
            return {}
        self._count("ignored")
        return {}

    def _rmc(self, msg: Any) -> dict[str, Value]:
        self._count("sentences")
        if msg.status != "A":
            return {"gps_fix": 0.0}
        out: dict[str, Value] = {}
        lat, lon = to_number(msg.latitude), to_number(msg.longitude)
        if lat is not None and lon is not None and (lat, lon) != (0.0, 0.0):
            out["gps_position"] = (lat, lon)
        speed_kn = to_number(float(msg.spd_over_grnd)) if msg.spd_over_grnd not in (None, "") \
            else None
        if speed_kn is not None:
            out["gps_speed"] = speed_kn * KNOTS_TO_KPH
        course = to_number(float(msg.true_course)) if msg.true_course not in (None, "") \
            else None
        if course is not None:
            out["gps_course"] = course % 360.0
        return out

    def _gga(self, msg: Any) -> dict[str, Value]:
        self._count("sentences")
        quality = int(msg.gps_qual or 0)
        out: dict[str, Value] = {"gps_fix": float(quality)}
        if msg.num_sats not in (None, ""):
            out["gps_sats"] = float(int(msg.num_sats))
        if quality <= 0:
            return out
        if msg.horizontal_dil not in (None, ""):
            out["gps_hdop"] = float(msg.horizontal_dil)
        if msg.altitude not in (None, ""):
            out["gps_altitude"] = float(msg.altitude)
        lat, lon = to_number(msg.latitude), to_number(msg.longitude)
        if lat is not None and lon is not None and (lat, lon) != (0.0, 0.0):
            out["gps_position"] = (lat, lon)
        return out


class GpsSource(ThreadedSource):
    """Reads an NMEA receiver on a thread."""

    def __init__(self, settings: GpsSettings, board: Board, *, reconnect_min_s: float,
                 reconnect_max_s: float) -> None:
        super().__init__("gps", reconnect_min_s, reconnect_max_s)
        self.settings = settings
        self.board = board
        self.parser = NmeaParser(self.health.count)

    def session(self) -> None:
        """Read lines until the port fails or the source stops."""
        try:
            port = serial.Serial(self.settings.port, self.settings.baudrate, timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open GPS port {self.settings.port}: {exc}") from exc
        self.health.set_state(f"reading {self.settings.port}")
        try:
            while not self.stop_event.is_set():
                try:
                    line = port.readline(MAX_LINE_BYTES + 2)
                except (serial.SerialException, OSError) as exc:
                    raise SourceError(f"GPS port {self.settings.port} failed: {exc}") from exc
                if line:
                    self.handle_line(line)
        finally:
            port.close()

    def handle_line(self, line: bytes) -> None:
        """Parse one line into the board; never raises."""
        values = self.parser.parse(line)
        if values:
            self.board.put_many(values, time.time_ns() // 1_000_000)
