"""The NMEA GPS: valid sentences matching the model, and every GPS fault visible in them."""

from __future__ import annotations

import time

import pynmea2
import pytest
import serial

from simulators.nmea import NmeaGps, checksum, sentence, sentences
from simulators.vehicle import Fault, VehicleModel
from tests.simulators.conftest import START_MS


def parse_all(text: str) -> list[pynmea2.NMEASentence]:
    return [pynmea2.parse(line, check=True) for line in text.strip().split("\r\n")]


def test_checksum_matches_the_standard_example() -> None:
    # the classic GGA example from the NMEA 0183 literature
    body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert checksum(body) == "47"
    assert sentence(body) == f"${body}*47\r\n"
    assert sentence(body, corrupt=True) != f"${body}*47\r\n"


def test_sentences_match_the_model(driving_model: VehicleModel) -> None:
    s = driving_model.state
    text = "".join(sentence(b) for b in sentences(s))
    rmc, gga, vtg, gsa = parse_all(text)
    assert rmc.status == "A"
    assert rmc.latitude == pytest.approx(s.lat_deg, abs=1e-6)
    assert rmc.longitude == pytest.approx(s.lon_deg, abs=1e-6)
    assert rmc.spd_over_grnd * 1.852 == pytest.approx(s.speed_kph, abs=0.02)
    assert rmc.true_course == pytest.approx(s.heading_deg, abs=0.05)
    assert rmc.datetime.timestamp() * 1000 == pytest.approx(s.t_ms, abs=10)
    assert gga.gps_qual == 1
    assert gga.num_sats == f"{s.sats:02d}"
    assert float(gga.horizontal_dil) == pytest.approx(s.hdop, abs=0.005)
    assert gga.altitude == pytest.approx(s.alt_m, abs=0.05)
    assert float(vtg.spd_over_grnd_kmph) == pytest.approx(s.speed_kph, abs=0.005)
    assert gsa.mode_fix_type == "3"


def test_gps_loss_jump_and_corrupt_checksums_are_visible() -> None:
    model = VehicleModel(8, start_ms=START_MS, faults=[
        Fault.parse("gps_loss@10+10"), Fault.parse("gps_jump@30+5:distance_m=4000"),
        Fault.parse("nmea_corrupt@40+5")])
    model.step(12.0)
    rmc, gga, _vtg, gsa = parse_all("".join(sentence(b) for b in sentences(model.state)))
    assert rmc.status == "V"
    assert rmc.latitude == 0.0
    assert not rmc.lat
    assert gga.gps_qual == 0
    assert gsa.mode_fix_type == "1"
    model.step(17.0)
    before = parse_all(sentence(sentences(model.state)[0]))[0]
    model.step(2.0)
    during = parse_all(sentence(sentences(model.state)[0]))[0]
    assert abs(during.latitude - before.latitude) + abs(during.longitude - before.longitude) > 0.02
    model.step(10.0)
    gps = NmeaGps(model)
    text = gps.render(time.monotonic())
    with pytest.raises(pynmea2.ChecksumError):
        pynmea2.parse(text.split("\r\n")[0], check=True)


def test_misbehaviour_modes(driving_model: VehicleModel) -> None:
    gps = NmeaGps(driving_model)
    now = time.monotonic()
    gps.misbehave("silence", 60)
    assert gps.render(now) == ""
    gps.misbehave("garbage", 60)
    assert len(gps.render(now).split("\r\n")) > 5
    gps.misbehave("bad_checksum", 0)
    parse_all(gps.render(now + 1))  # expired: valid again
    with pytest.raises(ValueError, match="unknown"):
        gps.misbehave("explode", 1)  # type: ignore[arg-type]


def test_served_on_a_pty(driving_model: VehicleModel) -> None:
    model = VehicleModel(3, start_ms=START_MS, faults=[Fault.parse("offline@5+5")])
    model.step(1.0)
    with NmeaGps(model, interval_s=0.02) as port, serial.Serial(port, 9600, timeout=2.0) as tty:
        lines = [tty.readline().decode("ascii") for _ in range(8)]
        kinds = [pynmea2.parse(line.strip(), check=True).sentence_type for line in lines]
        assert {"RMC", "GGA", "VTG", "GSA"} == set(kinds)
        assert all(line.endswith("\r\n") for line in lines)
        model.step(5.0)  # offline: the receiver falls silent
        time.sleep(0.1)
        tty.reset_input_buffer()
        tty.timeout = 0.2
        assert tty.read(100) == b""
