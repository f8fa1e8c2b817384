"""NMEA parsing, and the GPS source reading a pseudo-terminal."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from edge_gateway.config import GpsSettings
from edge_gateway.sampler import Board
from edge_gateway.sources.gps import GpsSource, NmeaParser


def nmea(body: str) -> bytes:
    """A sentence with its checksum."""
    checksum = 0
    for ch in body.encode():
        checksum ^= ch
    return f"${body}*{checksum:02X}\r\n".encode()


RMC = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
GGA = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


def test_rmc_and_gga() -> None:
    counts: Counter[str] = Counter()
    parser = NmeaParser(lambda what: counts.update([what]))
    rmc = parser.parse(RMC)
    assert rmc["gps_position"] == pytest.approx((48.1173, 11.516667), abs=1e-6)
    assert rmc["gps_speed"] == pytest.approx(22.4 * 1.852)
    assert rmc["gps_course"] == 84.4
    gga = parser.parse(GGA)
    assert gga["gps_fix"] == 1.0
    assert gga["gps_sats"] == 8.0
    assert gga["gps_hdop"] == 0.9
    assert gga["gps_altitude"] == 545.4


def test_no_fix_gives_no_position() -> None:
    parser = NmeaParser(lambda what: None)
    assert parser.parse(nmea("GPRMC,123519,V,,,,,,,230394,,")) == {"gps_fix": 0.0}
    assert "gps_position" not in parser.parse(nmea("GPGGA,123519,,,,,0,00,,,M,,M,,"))


@pytest.mark.parametrize("line", [
    b"garbage\r\n",
    RMC[:-5] + b"00\r\n",  # bad checksum
    nmea("GPRMC,123519,A,48xx.038,N,01131.000,E,0zz,084.4,230394,003.1,W"),
    nmea("GPGGA,1,2,3"),
    b"$" + b"A" * 500 + b"\r\n",
    bytes(range(256)),
    b"",
    nmea("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00"),
])
def test_malformed_sentences_never_raise(line: bytes) -> None:
    counts: Counter[str] = Counter()
    parser = NmeaParser(lambda what: counts.update([what]))
    values: Any = parser.parse(line)
    assert "gps_position" not in values


def test_source_reads_a_pty_and_survives_garbage() -> None:
    master, slave = os.openpty()
    board = Board()
    src = GpsSource(GpsSettings(port=os.ttyname(slave)), board, reconnect_min_s=0.1,
                    reconnect_max_s=0.5)
    src.start()
    try:
        deadline = time.monotonic() + 10
        while board.get("gps_position") is None:
            assert time.monotonic() < deadline
            os.write(master, b"\x00\xff junk\r\n" + RMC + b"$GPGGA,bad*00\r\n" + GGA)
            time.sleep(0.1)
        assert src.health.get("malformed") >= 1
        assert board.get("gps_sats") is not None
    finally:
        src.stop()
        os.close(master)
        os.close(slave)
