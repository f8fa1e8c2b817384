"""The ELM327 emulator: byte-exact adapter formats, and unmodified python-obd over a pty."""

from __future__ import annotations

import os
import select
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import obd
import pytest
from obd import OBDCommand
from obd.protocols import ECU

from simulators.elm327 import Elm327Emulator, Elm327Interpreter
from simulators.obd_ecu import ObdEcu, dtc_bytes, dtc_code, supported_bitmap
from simulators.vehicle import Fault, VehicleModel
from tests.simulators.conftest import START_MS


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def elm(driving_model: VehicleModel, clock: FakeClock) -> Elm327Interpreter:
    return Elm327Interpreter(ObdEcu(driving_model), clock=clock)


def send(elm: Elm327Interpreter, command: str) -> str:
    return elm.feed(command.encode() + b"\r").decode("latin-1")


def setup_python_obd_style(elm: Elm327Interpreter) -> None:
    for command in ("ATZ", "ATE0", "ATH1", "ATL0", "ATSP6"):
        send(elm, command)


def test_reset_banner_echo_and_prompt(elm: Elm327Interpreter) -> None:
    assert send(elm, "ATZ") == "ATZ\r\r\rELM327 v1.5\r\r>"
    assert send(elm, "ATE0") == "ATE0\rOK\r\r>"
    assert send(elm, "ATI") == "ELM327 v1.5\r\r>"
    assert send(elm, "AT@1") == "OBDII to RS232 Interpreter\r\r>"
    assert send(elm, "ATL1") == "OK\r\n\r\n>"
    assert send(elm, "AT L0") == "OK\r\r>"
    assert send(elm, "at bogus") == "?\r\r>"
    assert send(elm, "\x7f\x7f") == "?\r\r>"
    assert send(elm, "AT SH 7E0 ") == "OK\r\r>"
    assert send(elm, "ATAT1") == "OK\r\r>"
    assert send(elm, "ATST32") == "OK\r\r>"


def test_voltage_and_protocol_search(elm: Elm327Interpreter,
                                     driving_model: VehicleModel) -> None:
    send(elm, "ATE0")
    assert send(elm, "ATRV") == f"{driving_model.state.battery_v:.1f}V\r\r>"
    assert send(elm, "ATSP0") == "OK\r\r>"
    assert send(elm, "ATDPN") == "0\r\r>"
    first = send(elm, "010D")
    assert first.startswith("SEARCHING...\r41 0D ")
    assert "SEARCHING" not in send(elm, "010D")
    assert send(elm, "ATDPN") == "A6\r\r>"
    assert send(elm, "ATDP") == "AUTO, ISO 15765-4 (CAN 11/500)\r\r>"
    assert send(elm, "ATSP8") == "OK\r\r>"
    assert send(elm, "010D") == "CAN ERROR\r\r>"
    send(elm, "ATSP3")
    assert send(elm, "010D") == "BUS INIT: ...ERROR\r\r>"


def test_single_frame_formats(elm: Elm327Interpreter, driving_model: VehicleModel) -> None:
    speed = round(driving_model.state.speed_kph)
    setup_python_obd_style(elm)
    assert send(elm, "010D") == f"7E8 03 41 0D {speed:02X} 55 55 55 55\r\r>"
    send(elm, "ATS0")
    assert send(elm, "010D") == f"7E803410D{speed:02X}55555555\r\r>"
    send(elm, "ATS1")
    send(elm, "ATD1")
    assert send(elm, "010D") == f"7E8 8 03 41 0D {speed:02X} 55 55 55 55\r\r>"
    send(elm, "ATD0")
    send(elm, "ATH0")
    assert send(elm, "010D") == f"41 0D {speed:02X}\r\r>"
    send(elm, "ATCAF0")
    assert send(elm, "010D") == f"03 41 0D {speed:02X} 55 55 55 55\r\r>"
    send(elm, "ATCAF1")
    send(elm, "ATH1")
    send(elm, "ATSP7")
    assert send(elm, "010D") == f"18 DA F1 10 03 41 0D {speed:02X} 55 55 55 55\r\r>"
    # a bare CR repeats the last request
    assert send(elm, "") == f"18 DA F1 10 03 41 0D {speed:02X} 55 55 55 55\r\r>"


def test_multi_frame_vin(elm: Elm327Interpreter, driving_model: VehicleModel) -> None:
    vin = driving_model.vin.encode()
    payload = b"\x49\x02\x01" + vin
    setup_python_obd_style(elm)
    lines = send(elm, "0902").split("\r")
    assert lines[0] == "7E8 10 14 " + payload[:6].hex(" ").upper()
    assert lines[1] == "7E8 21 " + payload[6:13].hex(" ").upper()
    assert lines[2] == "7E8 22 " + payload[13:20].hex(" ").upper()
    assert lines[3:] == ["", ">"]
    send(elm, "ATH0")
    assert send(elm, "0902") == (
        f"014\r0: {payload[:6].hex(' ').upper()}\r1: {payload[6:13].hex(' ').upper()}"
        f"\r2: {payload[13:].hex(' ').upper()}\r\r>")


def test_dtc_count_and_multi_frame_dtcs(elm: Elm327Interpreter,
                                        driving_model: VehicleModel) -> None:
    setup_python_obd_style(elm)
    assert send(elm, "03") == "7E8 04 43 01 03 01 55 55 55\r\r>"
    assert send(elm, "07") == "7E8 04 47 01 03 01 55 55 55\r\r>"
    assert send(elm, "04") == "7E8 01 44 55 55 55 55 55 55\r\r>"
    # the misfire is still active, so its code comes back on the next step
    driving_model.step(1.0)
    assert send(elm, "03") == "7E8 04 43 01 03 01 55 55 55\r\r>"


def test_three_dtcs_need_two_frames(clock: FakeClock) -> None:
    model = VehicleModel(3, start_ms=START_MS, faults=[
        Fault.parse("misfire@0+100:cylinder=1"), Fault.parse("misfire@0+100:cylinder=2"),
        Fault.parse("misfire@0+100:cylinder=4")])
    model.step(1.0)
    elm = Elm327Interpreter(ObdEcu(model), clock=clock)
    setup_python_obd_style(elm)
    assert send(elm, "03") == ("7E8 10 08 43 03 03 01 03 02\r7E8 21 03 04 55 55 55 55 55\r\r>")


def test_no_data_and_negative_response(elm: Elm327Interpreter) -> None:
    setup_python_obd_style(elm)
    assert send(elm, "0199") == "NO DATA\r\r>"
    assert send(elm, "0907") == "NO DATA\r\r>"
    assert send(elm, "22F190") == "7E8 03 7F 22 11 55 55 55 55\r\r>"
    assert send(elm, "01ZZ") == "?\r\r>"
    send(elm, "ATSH7E1")  # nobody answers at the transmission's address
    assert send(elm, "010D") == "NO DATA\r\r>"


def test_ignition_off_means_no_answer(clock: FakeClock) -> None:
    model = VehicleModel(11, start_ms=START_MS, parking_s=(3000.0, 3000.0))
    while model.state.ignition:
        model.step(1.0)
    elm = Elm327Interpreter(ObdEcu(model), clock=clock)
    send(elm, "ATE0")
    assert send(elm, "0100") == "SEARCHING...\rUNABLE TO CONNECT\r\r>"
    assert send(elm, "ATRV").endswith("V\r\r>")


def test_multi_pid_request(elm: Elm327Interpreter, driving_model: VehicleModel) -> None:
    setup_python_obd_style(elm)
    send(elm, "ATH0")
    s = driving_model.state
    rpm = round(s.rpm * 4)
    assert send(elm, "010C0D") == (
        f"41 0C {rpm >> 8:02X} {rpm & 0xFF:02X} 0D {round(s.speed_kph):02X}\r\r>")


def test_misbehaviour(elm: Elm327Interpreter, clock: FakeClock) -> None:
    setup_python_obd_style(elm)
    elm.misbehave("no_data", 5.0)
    assert send(elm, "010C") == "NO DATA\r\r>"
    assert send(elm, "ATRV").endswith("V\r\r>")
    clock.now = 5.0
    assert send(elm, "010C").startswith("7E8 04 41 0C")
    elm.misbehave("silence", 1.0)
    assert send(elm, "010C") == ""
    clock.now = 6.0
    elm.misbehave("garbage", 1.0)
    assert send(elm, "010C").endswith("\r\r>")
    clock.now = 7.0
    elm.misbehave("reset", 1.0)
    out = send(elm, "010C")
    assert out.endswith("\r\rELM327 v1.5\r\r>")
    assert send(elm, "010C").startswith("010C\r41 0C"), "echo on, headers off again"
    with pytest.raises(ValueError, match="unknown"):
        elm.misbehave("explode", 1.0)


def test_bitmaps_and_dtc_codes() -> None:
    assert supported_bitmap(0, {0x01, 0x20}) == 0x80000001
    assert supported_bitmap(0x20, {0x21, 0x40}) == 0x80000001
    for code in ("P0301", "C1234", "B2A00", "U0100", "P0217"):
        assert dtc_code(dtc_bytes(code)) == code
    assert dtc_bytes("P0301") == b"\x03\x01"


# ---- python-obd, unmodified, over a pseudo-terminal ------------------------------------------

def _decode_odometer(messages: list[obd.protocols.protocol.Message]) -> float:
    return int.from_bytes(bytes(messages[0].data[2:6]), "big") / 10.0


ODOMETER = OBDCommand("ODOMETER", "Odometer", b"01A6", 6, _decode_odometer, ECU.ENGINE, True)


@pytest.fixture
def served(driving_model: VehicleModel) -> Iterator[tuple[Elm327Emulator, str]]:
    emulator = Elm327Emulator(driving_model)
    with emulator as port:
        yield emulator, port


def test_python_obd_reads_values_dtcs_and_vin(served: tuple[Elm327Emulator, str],
                                              driving_model: VehicleModel) -> None:
    _emulator, port = served
    connection = obd.OBD(portstr=port, fast=False, timeout=0.5)
    try:
        assert connection.status() == obd.OBDStatus.CAR_CONNECTED
        assert connection.protocol_id() == "6"
        s = driving_model.state
        c = obd.commands
        expected = {
            c.RPM: (s.rpm, 0.25), c.SPEED: (s.speed_kph, 0.5),
            c.COOLANT_TEMP: (s.coolant_c, 0.5), c.FUEL_LEVEL: (s.fuel_pct, 0.2),
            c.ENGINE_LOAD: (s.engine_load_pct, 0.2), c.THROTTLE_POS: (s.throttle_pct, 0.2),
            c.CONTROL_MODULE_VOLTAGE: (s.battery_v, 0.001), c.OIL_TEMP: (s.oil_temp_c, 0.5),
            c.INTAKE_TEMP: (s.intake_temp_c, 0.5), c.AMBIANT_AIR_TEMP: (s.ambient_c, 0.5),
            c.MAF: (s.maf_gps, 0.005), c.RUN_TIME: (s.run_time_s, 0.5),
            c.FUEL_RATE: (s.fuel_rate_lph, 0.025), c.INTAKE_PRESSURE: (s.map_kpa, 0.5),
            c.BAROMETRIC_PRESSURE: (s.baro_kpa, 0.5),
            c.TIMING_ADVANCE: (s.timing_advance_deg, 0.25),
            c.DISTANCE_SINCE_DTC_CLEAR: (s.distance_since_clear_km, 0.5),
        }
        assert len(connection.supported_commands) > 25
        for command, (value, tolerance) in expected.items():
            response = connection.query(command)
            assert not response.is_null(), command
            assert response.value.magnitude == pytest.approx(value, abs=tolerance), command
        assert connection.query(ODOMETER, force=True).value == pytest.approx(
            s.odometer_km, abs=0.05)
        assert connection.query(c.ELM_VOLTAGE).value.magnitude == pytest.approx(
            s.battery_v, abs=0.05)
        assert connection.query(c.GET_DTC).value == [("P0301", "Cylinder 1 Misfire Detected")]
        assert connection.query(c.GET_CURRENT_DTC).value == [
            ("P0301", "Cylinder 1 Misfire Detected")]
        assert connection.query(c.VIN).value.decode() == driving_model.vin
        status = connection.query(c.STATUS).value
        assert status.MIL is True
        assert status.DTC_count == 1
        connection.query(c.CLEAR_DTC)
        assert driving_model.state.dtcs == []
        assert connection.query(c.GET_DTC).value == []
    finally:
        connection.close()


def _exchange(fd: int, command: bytes, timeout_s: float = 5.0) -> bytes:
    os.write(fd, command + b"\r")
    out = b""
    deadline = time.monotonic() + timeout_s
    while not out.endswith(b">") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            out += os.read(fd, 1024)
    return out


def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def test_drop_and_reconnect_through_the_link(driving_model: VehicleModel,
                                              tmp_path: Path) -> None:
    link = tmp_path / "elm"
    emulator = Elm327Emulator(driving_model, link_path=link)
    with emulator as port:
        assert port == str(link)
        assert link.is_symlink()
        fd = _open_raw(port)
        try:
            assert _exchange(fd, b"ATI").endswith(b"ELM327 v1.5\r\r>")
            emulator.misbehave("drop", 0.2)
            assert not emulator.is_open
            with pytest.raises(OSError):  # noqa: PT011, PT012 - EIO or EOF, as the OS decides
                ready, _, _ = select.select([fd], [], [], 2.0)
                assert ready
                if not os.read(fd, 10):
                    raise OSError("end of file")
        finally:
            os.close(fd)
        deadline = time.monotonic() + 5.0
        while not emulator.is_open and time.monotonic() < deadline:
            time.sleep(0.05)
        fd = _open_raw(port)
        try:
            assert _exchange(fd, b"ATI").endswith(b"ELM327 v1.5\r\r>")
        finally:
            os.close(fd)


def test_offline_device_is_silent(tmp_path: Path) -> None:
    model = VehicleModel(3, start_ms=START_MS, faults=[Fault.parse("offline@0+60")])
    model.step(1.0)
    with Elm327Emulator(model) as port:
        fd = _open_raw(port)
        try:
            assert _exchange(fd, b"ATI", timeout_s=0.3) == b""
            model.step(60.0)
            assert _exchange(fd, b"ATI").endswith(b"ELM327 v1.5\r\r>")
        finally:
            os.close(fd)
