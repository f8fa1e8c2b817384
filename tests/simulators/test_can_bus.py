"""The CAN front-end: J1939 broadcasts and OBD-II over ISO-TP, on the virtual bus and SLCAN."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import can
import cantools
import pytest

from simulators import dbc
from simulators.can_bus import CanEcu, CanSimulator, Frame, SlcanAdapter
from simulators.vehicle import Fault, ModelState, VehicleModel
from tests.simulators.conftest import START_MS

J1939 = cantools.database.load_file(str(dbc.J1939_DBC))
OBD2 = cantools.database.load_file(str(dbc.OBD2_DBC))


def expected_j1939(s: ModelState) -> dict[str, tuple[float, float]]:
    """DBC signal -> (model value, tolerance = half a DBC step)."""
    return {
        "EngSpeed": (s.rpm, 0.0625),
        "WheelBasedVehicleSpeed": (s.speed_kph, 0.002),
        "EngCoolantTemp": (s.coolant_c, 0.5),
        "EngOilTemp1": (s.oil_temp_c, 0.016),
        "FuelLevel1": (s.fuel_pct, 0.2),
        "EngFuelRate": (s.fuel_rate_lph, 0.025),
        "BatteryPotentialPowerInput1": (s.battery_v, 0.025),
        "HighResTotalVehicleDistance": (s.odometer_km * 1000, 2.5),
        "EngTotalHoursOfOperation": (s.engine_hours_h, 0.025),
        "AmbientAirTemp": (s.ambient_c, 0.016),
        "EngPercentLoadAtCurrentSpeed": (s.engine_load_pct, 0.5),
    }


def decode_broadcasts(messages: list[can.Message]) -> dict[str, float]:
    values: dict[str, float] = {}
    for m in messages:
        if m.is_extended_id:
            values.update(J1939.decode_message(m.arbitration_id, m.data))
    return values


def collect(bus: can.BusABC, seconds: float) -> list[can.Message]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = bus.recv(0.05)
        if m is not None:
            out.append(m)
    return out


def recv_from(bus: can.BusABC, arbitration_id: int, timeout_s: float = 2.0) -> can.Message:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = bus.recv(0.1)
        if m is not None and m.arbitration_id == arbitration_id:
            return m
    raise AssertionError(f"no frame from {arbitration_id:#x} within {timeout_s} s")


def obd_request(bus: can.BusABC, *payload: int, arbitration_id: int = 0x7DF) -> None:
    data = bytes([len(payload), *payload]).ljust(8, b"\x00")
    bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False))


def read_isotp(bus: can.BusABC, block_size: int = 0, stmin: int = 0) -> bytes:
    """A minimal ISO-TP receiver (the tester side), sending flow control on 0x7E0."""
    first = recv_from(bus, 0x7E8)
    if first.data[0] >> 4 == 0:
        return bytes(first.data[1:1 + first.data[0]])
    length = ((first.data[0] & 0x0F) << 8) | first.data[1]
    payload = bytearray(first.data[2:])
    expected_index = 1
    while len(payload) < length:
        bus.send(can.Message(arbitration_id=0x7E0, is_extended_id=False,
                             data=bytes([0x30, block_size, stmin, 0, 0, 0, 0, 0])))
        for _ in range(block_size or 4096):
            cf = recv_from(bus, 0x7E8)
            assert cf.data[0] == 0x20 | (expected_index & 0x0F)
            expected_index += 1
            payload += cf.data[1:]
            if len(payload) >= length:
                break
    return bytes(payload[:length])


@pytest.fixture
def channel() -> str:
    return f"sim-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tester(driving_model: VehicleModel, channel: str) -> Iterator[can.BusABC]:
    with CanSimulator(driving_model, channel=channel), \
            can.Bus(interface="virtual", channel=channel) as bus:
        yield bus


def test_j1939_broadcasts_match_the_model(tester: can.BusABC,
                                          driving_model: VehicleModel) -> None:
    messages = collect(tester, 1.2)
    ids = {m.arbitration_id for m in messages}
    assert {0x0CF00400, 0x18FEF100, 0x18FEEE00, 0x18FEFC00, 0x18FEC100, 0x18FEE500,
            0x18FEF700} <= ids
    values = decode_broadcasts(messages)
    for name, (value, tolerance) in expected_j1939(driving_model.state).items():
        assert values[name] == pytest.approx(value, abs=tolerance), name
    assert all(m.dlc == 8 for m in messages)


def test_cycle_times_come_from_the_dbc(driving_model: VehicleModel) -> None:
    ecu = CanEcu(driving_model, periods_ms={"AMB": 0, "DD1": 500})
    counts: dict[int, int] = {}
    for tick in range(200):  # one simulated second in 5 ms ticks
        for f in ecu.due(now=1000.0 + tick * 0.005):
            counts[f.arbitration_id] = counts.get(f.arbitration_id, 0) + 1
    assert counts[0x0CF00400] == 50  # EEC1, 20 ms
    assert counts[0x0CF00300] == 20  # EEC2, 50 ms
    assert counts[0x18FEF100] == 10  # CCVS1, 100 ms
    assert counts[0x18FEEE00] == 1  # ET1, 1 s
    assert counts[0x18FEFC00] == 2  # DD1, overridden to 500 ms
    assert 0x18FEF500 not in counts  # AMB switched off
    assert counts[0x18FECA00] == 1  # DM1, 1 s
    assert sum(counts.values()) == 50 + 20 + 10 + 10 + 1 + 2 + 1 + 1 + 1 + 1


def test_obd_single_frame_and_multi_frame_vin(tester: can.BusABC,
                                              driving_model: VehicleModel) -> None:
    obd_request(tester, 0x01, 0x0D)
    answer = recv_from(tester, 0x7E8)
    decoded = OBD2.decode_message(0x7E8, answer.data)
    assert decoded["PID"] == 0x0D
    assert decoded["S01PID0D_VehicleSpeed"] == round(driving_model.state.speed_kph)
    obd_request(tester, 0x01, 0x0C, arbitration_id=0x7E0)
    rpm = OBD2.decode_message(0x7E8, recv_from(tester, 0x7E8).data)["S01PID0C_EngineRPM"]
    assert rpm == pytest.approx(driving_model.state.rpm, abs=0.125)
    obd_request(tester, 0x09, 0x02)
    assert read_isotp(tester) == b"\x49\x02\x01" + driving_model.vin.encode()
    obd_request(tester, 0x09, 0x02)
    assert read_isotp(tester, block_size=1, stmin=5) == b"\x49\x02\x01" + driving_model.vin.encode()
    obd_request(tester, 0x03)
    assert read_isotp(tester) == b"\x43\x01\x03\x01"


def test_unsupported_pid_gets_no_answer(tester: can.BusABC) -> None:
    obd_request(tester, 0x01, 0x99)
    obd_request(tester, 0x01, 0x05)
    answer = recv_from(tester, 0x7E8)
    assert answer.data[2] == 0x05, "the first answer is for the supported PID"


def test_flow_control_timeout_abandons_the_transfer(driving_model: VehicleModel) -> None:
    ecu = CanEcu(driving_model, j1939=False)
    first = ecu.on_frame(Frame(0x7DF, bytes([2, 9, 2, 0, 0, 0, 0, 0]), False), now=0.0)
    assert first[0].data[0] == 0x10
    assert ecu.due(now=2.0) == []
    late_fc = ecu.on_frame(Frame(0x7E0, bytes([0x30, 0, 0, 0, 0, 0, 0, 0]), False), now=2.1)
    assert late_fc == []


def test_garbage_and_silence(driving_model: VehicleModel) -> None:
    ecu = CanEcu(driving_model)
    ecu.misbehave("silence", 10.0, now=0.0)
    assert ecu.due(now=1.0) == []
    ecu.misbehave("garbage", 10.0, now=1.0)
    frames = ecu.due(now=2.0)
    known = {m.frame_id for m in J1939.messages}
    odd = [f for f in frames if f.arbitration_id not in known or len(f.data) != 8]
    assert odd
    with pytest.raises(ValueError, match="unknown"):
        ecu.misbehave("explode", 1.0)  # type: ignore[arg-type]


def test_ignition_off_bus_is_quiet() -> None:
    model = VehicleModel(11, start_ms=START_MS, parking_s=(3000.0, 3000.0))
    while model.state.ignition:
        model.step(1.0)
    ecu = CanEcu(model)
    assert ecu.due(now=100.0) == []
    assert ecu.on_frame(Frame(0x7DF, bytes([2, 1, 0x0D, 0, 0, 0, 0, 0]), False), 100.0) == []


def test_slcan_adapter_with_python_can(driving_model: VehicleModel) -> None:
    with SlcanAdapter(driving_model) as port:
        bus = can.Bus(interface="slcan", channel=port, bitrate=250000, sleep_after_open=0)
        try:
            messages = collect(bus, 1.2)
            values = decode_broadcasts(messages)
            for name, (value, tolerance) in expected_j1939(driving_model.state).items():
                assert values[name] == pytest.approx(value, abs=tolerance), name
            obd_request(bus, 0x01, 0x2F)
            decoded = OBD2.decode_message(0x7E8, recv_from(bus, 0x7E8).data)
            assert decoded["S01PID2F_FuelTankLevel"] == pytest.approx(
                driving_model.state.fuel_pct, abs=0.2)
            obd_request(bus, 0x09, 0x02)
            assert read_isotp(bus) == b"\x49\x02\x01" + driving_model.vin.encode()
        finally:
            bus.shutdown()


def test_slcan_command_replies(driving_model: VehicleModel) -> None:
    adapter = SlcanAdapter(driving_model)
    assert adapter._command("V") == b"V1013\r"
    assert adapter._command("N") == b"NA123\r"
    assert adapter._command("S9") == b"\a"
    assert adapter._command("S6") == b"\r"
    assert adapter._command("t7DF80201") == b"\a", "closed channel refuses to transmit"
    assert adapter._command("O") == b"\r"
    assert adapter._command("O") == b"\a"
    assert adapter._command("S5") == b"\a", "bitrate only while closed"
    assert adapter._command("t7DF3") == b"\a", "data shorter than the DLC"
    reply = adapter._command("t7DF802010D0000000000")
    assert reply.startswith(b"z\rt7E8803410D")
    assert adapter._command("T18DB33F1802010D0000000000").startswith(b"Z\rT18DAF1108")
    assert adapter._command("C") == b"\r"
    assert adapter._command("C") == b"\a"
    assert adapter._command("L") == b"\r"
    assert adapter._command("t7DF802010D0000000000") == b"\a", "listen-only"
    assert adapter._command("?") == b"\a"


def test_slcan_drop_reopens_closed(driving_model: VehicleModel) -> None:
    adapter = SlcanAdapter(driving_model)
    with adapter:
        adapter.on_input(b"O\r")
        assert adapter.is_channel_open
        adapter.misbehave("drop", 0.05)
        deadline = time.monotonic() + 5.0
        while not adapter.is_open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert adapter.is_open
        assert not adapter.is_channel_open


def test_offline_fault_silences_the_bus() -> None:
    model = VehicleModel(3, start_ms=START_MS, warm_engine=True,
                         faults=[Fault.parse("offline@10+10")])
    model.step(11.0)
    assert CanEcu(model).due(now=0.0) == []


def _dm1_frames(model: VehicleModel) -> list[Frame]:
    others = ("EEC1", "EEC2", "CCVS1", "LFE1", "ET1", "DD1", "VEP1", "VDHR", "HOURS", "AMB")
    ecu = CanEcu(model, periods_ms=dict.fromkeys(others, 0))
    frames: list[Frame] = []
    for tick in range(40):  # 2 s in 50 ms ticks
        frames += ecu.due(now=500.0 + tick * 0.05)
    return frames


def test_dm1_single_frame_decodes_with_the_dbc(driving_model: VehicleModel) -> None:
    frames = _dm1_frames(driving_model)
    assert [f.arbitration_id for f in frames] == [0x18FECA00, 0x18FECA00]
    decoded = J1939.decode_message(0x18FECA00, frames[0].data)
    assert decoded["MalfunctionIndicatorLampStatus"] == 1
    assert decoded["DTC1_SPN"] + (decoded["DTC1_SPN_High"] << 16) == 1323  # misfire cyl 1
    assert decoded["DTC1_FMI"] == 31
    assert decoded["DTC1_OccurrenceCount"] == 1
    assert frames[0].data[6:] == b"\xff\xff"


def test_dm1_without_dtcs_and_with_several_by_bam() -> None:
    quiet = VehicleModel(3, start_ms=START_MS, warm_engine=True)
    quiet.step(5.0)
    decoded = J1939.decode_message(0x18FECA00, _dm1_frames(quiet)[0].data)
    assert decoded["MalfunctionIndicatorLampStatus"] == 0
    assert decoded["DTC1_SPN"] == 0
    assert decoded["DTC1_FMI"] == 0
    model = VehicleModel(3, start_ms=START_MS, warm_engine=True, faults=[
        Fault.parse("misfire@0+100:cylinder=2"), Fault.parse("misfire@0+100:cylinder=5")])
    model.step(1.0)
    frames = _dm1_frames(model)
    announce = frames[0]
    assert announce.arbitration_id == 0x1CECFF00
    assert announce.data == bytes([0x20, 10, 0, 2, 0xFF, 0xCA, 0xFE, 0x00])
    packets = frames[1:3]
    assert [f.arbitration_id for f in packets] == [0x1CEBFF00, 0x1CEBFF00]
    assert [f.data[0] for f in packets] == [1, 2]
    payload = (packets[0].data[1:] + packets[1].data[1:])[:10]
    assert payload[0] >> 6 == 1  # MIL on
    spns = [payload[2 + 4 * k] | payload[3 + 4 * k] << 8 for k in range(2)]
    assert spns == [1324, 1327]
