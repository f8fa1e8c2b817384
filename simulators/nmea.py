"""An NMEA 0183 GPS receiver on a pty: RMC, GGA, VTG and GSA once per interval (1 Hz).

Sentences come from the model's state: position (with its GPS noise and `gps_jump` offsets),
speed, course, fix quality, HDOP and satellites. Without a fix (`gps_loss`) the receiver does
what real ones do: RMC status ``V`` and GGA quality ``0`` with empty position fields. During an
`nmea_corrupt` fault, or after ``misbehave("bad_checksum")``, checksums are wrong; during an
`offline` fault the receiver is silent.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import random
import threading
import time
from pathlib import Path
from typing import Final, Literal

from simulators.pty_port import PtyServer
from simulators.vehicle import ModelState, VehicleModel

KNOTS_PER_KPH: Final = 1 / 1.852
GEOID_SEPARATION_M: Final = 47.0

NmeaMisbehaviour = Literal["bad_checksum", "garbage", "silence", "drop"]


def checksum(body: str) -> str:
    """XOR of the characters between ``$`` and ``*``, as two upper-case hex digits."""
    return f"{functools.reduce(operator.xor, body.encode('ascii'), 0):02X}"


def sentence(body: str, *, corrupt: bool = False) -> str:
    """``$body*CS\\r\\n``; with `corrupt`, a checksum that does not match."""
    cs = checksum(body)
    if corrupt:
        cs = f"{int(cs, 16) ^ 0x5A:02X}"
    return f"${body}*{cs}\r\n"


def _lat(value: float) -> tuple[str, str]:
    hemi = "N" if value >= 0 else "S"
    value = abs(value)
    deg = int(value)
    return f"{deg:02d}{(value - deg) * 60:08.5f}", hemi


def _lon(value: float) -> tuple[str, str]:
    hemi = "E" if value >= 0 else "W"
    value = abs(value)
    deg = int(value)
    return f"{deg:03d}{(value - deg) * 60:08.5f}", hemi


def sentences(state: ModelState, talker: str = "GP") -> list[str]:
    """The RMC, GGA, VTG and GSA bodies (without ``$`` and checksum) for one fix."""
    when = dt.datetime.fromtimestamp(state.t_ms / 1000, tz=dt.UTC)
    hms = when.strftime("%H%M%S.") + f"{when.microsecond // 10000:02d}"
    date = when.strftime("%d%m%y")
    fix = state.gps_fix > 0
    knots = state.speed_kph * KNOTS_PER_KPH
    course = f"{state.heading_deg:.1f}"
    sats = [f"{n:02d}" for n in range(1, state.sats + 1)][:12]
    sats_fields = ",".join(sats + [""] * (12 - len(sats)))
    if fix:
        lat, ns = _lat(state.lat_deg)
        lon, ew = _lon(state.lon_deg)
        rmc = f"{talker}RMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.2f},{course},{date},,,A"
        gga = (f"{talker}GGA,{hms},{lat},{ns},{lon},{ew},{state.gps_fix},{state.sats:02d},"
               f"{state.hdop:.2f},{state.alt_m:.1f},M,"
               f"{GEOID_SEPARATION_M:.1f},M,,")
        vtg = f"{talker}VTG,{course},T,,M,{knots:.2f},N,{state.speed_kph:.2f},K,A"
        pdop = min(99.99, state.hdop * 1.6)
        gsa = f"{talker}GSA,A,3,{sats_fields},{pdop:.2f},{state.hdop:.2f},{pdop * 0.8:.2f}"
    else:
        rmc = f"{talker}RMC,{hms},V,,,,,,,{date},,,N"
        gga = f"{talker}GGA,{hms},,,,,0,{state.sats:02d},99.99,,,,,,"
        vtg = f"{talker}VTG,,T,,M,,N,,K,N"
        gsa = f"{talker}GSA,A,1,{sats_fields},99.99,99.99,99.99"
    return [rmc, gga, vtg, gsa]


class NmeaGps(PtyServer):
    """The GPS receiver; a context manager whose ``__enter__`` returns the port path."""

    backlog_limit_bytes = 2048  # about 6 s of sentences; older ones are lost, as on a UART

    def __init__(self, model: VehicleModel, *, interval_s: float = 1.0,
                 link_path: str | Path | None = None, talker: str = "GP") -> None:
        super().__init__(link_path=link_path)
        self.model = model
        self.tick_s = interval_s
        self.talker = talker
        self._rng = random.Random(model.seed)  # noqa: S311 - junk for tests
        self._lock = threading.Lock()
        self._misbehaviour: str | None = None
        self._misbehave_until = 0.0
        self.sentences_sent = 0

    def misbehave(self, mode: NmeaMisbehaviour, duration_s: float) -> None:
        """``bad_checksum``, ``garbage`` (junk and truncated lines), ``silence`` or ``drop``."""
        if mode == "drop":
            self.drop(duration_s)
            return
        if mode not in ("bad_checksum", "garbage", "silence"):
            raise ValueError(f"unknown NMEA misbehaviour {mode!r}")
        with self._lock:
            self._misbehaviour = mode
            self._misbehave_until = time.monotonic() + duration_s

    def render(self, now: float) -> str:
        """The text of one interval (what `on_tick` writes)."""
        state = self.model.state
        with self._lock:
            mode = self._misbehaviour
            if mode and now >= self._misbehave_until:
                mode = self._misbehaviour = None
        if not state.online or mode == "silence":
            return ""
        corrupt = state.nmea_corrupt or mode == "bad_checksum"
        lines = [sentence(body, corrupt=corrupt) for body in sentences(state, self.talker)]
        if mode == "garbage":
            rng = self._rng
            lines.insert(rng.randrange(len(lines)), lines[0][: rng.randint(3, 20)] + "\r\n")
            lines.append("".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 80)))
                         + "\r\n")
            lines.append("$GPGGA,,,,,,,,,*ZZ\r\n")
        self.sentences_sent += len(lines)
        return "".join(lines)

    def on_tick(self, now: float) -> None:
        """Write one interval's sentences."""
        text = self.render(now)
        if text:
            self.write(text.encode("ascii", "replace"))
