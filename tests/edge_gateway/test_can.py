"""CAN decoding from the shipped DBC files, and the CAN source on python-can's virtual bus."""

from __future__ import annotations

import time
import uuid
from typing import Any

import can
import pytest

from edge_gateway.config import CanSettings, dbc_paths
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.sources.can import CanSource, FrameDecoder, j1939_available, j1939_pgn, load_dbc


@pytest.fixture(scope="module")
def db() -> Any:
    return load_dbc(dbc_paths(CanSettings()))


def _j1939_id(pgn: int, source: int, priority: int = 6) -> int:
    return (priority << 26) | (pgn << 8) | source


def test_pgn_of_pdu1_and_pdu2_ids() -> None:
    assert j1939_pgn(0x0CF00400) == 61444  # EEC1 from the engine (SA 0)
    assert j1939_pgn(0x18FEF117) == 65265  # CCVS1 from SA 0x17
    assert j1939_pgn(0x18EA00F9) == 0xEA00  # PDU1: destination byte is not PGN


def test_not_available_ranges() -> None:
    assert j1939_available(0xFA, 8)
    assert not j1939_available(0xFF, 8)
    assert j1939_available(0xFAFF, 16)
    assert not j1939_available(0xFE00, 16)
    assert not j1939_available(3, 2)


def test_j1939_broadcasts_decode_from_any_source_address(db: Any) -> None:
    dec = FrameDecoder(db)
    eec1 = db.get_message_by_name("EEC1")
    data = eec1.encode({s.name: 0 for s in eec1.signals} | {"EngSpeed": 1500.0,
                                                            "DriversDemandEngPercentTorque": 0,
                                                            "ActualEngPercentTorque": 0,
                                                            "EngDemandPercentTorque": 0})
    msg = dec.message_for(_j1939_id(61444, 0x21, priority=3), extended=True)
    assert msg is not None
    assert dec.decode(msg, data) == {"can_engine_speed": 1500.0}

    vdhr = db.get_message_by_name("VDHR")
    data = vdhr.encode({"HighResTotalVehicleDistance": 123_455, "HighResTripDistance": 10})
    values = dec.decode(dec.message_for(_j1939_id(65217, 0x00), True), data)
    assert values["can_odometer"] == pytest.approx(123.455)  # metres in the DBC, km out


def test_not_available_values_are_skipped(db: Any) -> None:
    dec = FrameDecoder(db)
    msg = dec.message_for(_j1939_id(65265, 0x00), True)
    data = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    assert dec.decode(msg, data) == {}


def test_obd_over_can_response_decodes_and_other_services_are_ignored(db: Any) -> None:
    dec = FrameDecoder(db)
    msg = dec.message_for(0x7E8, extended=False)
    assert msg is not None
    # 41 0C 1A F8 = 1726 rpm (0x1AF8 / 4)
    assert dec.decode(msg, bytes([0x04, 0x41, 0x0C, 0x1A, 0xF8, 0x55, 0x55, 0x55])) == {
        "can_engine_speed": 1726.0}
    assert dec.decode(msg, bytes([0x06, 0x43, 0x01, 0x03, 0x01, 0, 0, 0])) == {}
    assert dec.obd_pids["can_engine_speed"] == 0x0C


def _source(channel: str, **kw: Any) -> tuple[CanSource, Board]:
    board = Board()
    settings = CanSettings(interface="virtual", channel=channel, **kw)
    src = CanSource(settings, dbc_paths(settings), board, Rates(), lambda: PowerMode.ACTIVE,
                    forward_raw=True, reconnect_min_s=0.1, reconnect_max_s=0.5)
    return src, board


def _wait(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_source_on_virtual_bus_survives_garbage_and_counts_unknown(db: Any) -> None:
    channel = f"t{uuid.uuid4().hex[:8]}"
    src, board = _source(channel)
    src.start()
    try:
        with can.Bus(interface="virtual", channel=channel) as bus:
            _wait(lambda: src.health.summary().startswith("listening"))
            ccvs = db.get_message_by_name("CCVS1")
            good = ccvs.encode({"WheelBasedVehicleSpeed": 42.5, "TwoSpeedAxleSwitch": 0,
                                "ParkingBrakeSwitch": 0, "CruiseCtrlActive": 0,
                                "BrakeSwitch": 0, "ClutchSwitch": 0})
            bus.send(can.Message(arbitration_id=_j1939_id(65265, 0), data=b"\x01",
                                 is_extended_id=True))  # truncated: malformed
            bus.send(can.Message(arbitration_id=0x123, data=b"\x01\x02\x03",
                                 is_extended_id=False))  # in no DBC: unknown
            bus.send(can.Message(arbitration_id=_j1939_id(65265, 0), data=good,
                                 is_extended_id=True))
            _wait(lambda: board.get("can_wheel_speed") is not None)
        wheel = board.get("can_wheel_speed")
        assert wheel is not None
        assert wheel[0] == pytest.approx(42.5, abs=0.01)
        assert src.health.get("malformed") == 1
        assert src.health.get("unknown_frames") == 1
        raw = board.get("can_raw_123")
        assert raw is not None
        assert raw[0] == float(0x010203)
    finally:
        src.stop()


def test_source_requests_obd_pids_over_can(db: Any) -> None:
    channel = f"t{uuid.uuid4().hex[:8]}"
    src, board = _source(channel, obd_requests=True)
    src.rates.set("can_engine_speed", 10.0)
    src.start()
    try:
        with can.Bus(interface="virtual", channel=channel) as ecu:
            deadline = time.monotonic() + 10
            answered = False
            while time.monotonic() < deadline and not answered:
                req = ecu.recv(timeout=0.5)
                if req is None or req.arbitration_id != 0x7DF:
                    continue
                assert req.data[0] == 2
                assert req.data[1] == 1
                if req.data[2] == 0x0C:
                    ecu.send(can.Message(arbitration_id=0x7E8, is_extended_id=False,
                                         data=bytes([4, 0x41, 0x0C, 0x0F, 0xA0, 0, 0, 0])))
                    answered = True
            assert answered
            _wait(lambda: board.get("can_engine_speed") is not None)
        rpm = board.get("can_engine_speed")
        assert rpm is not None
        assert rpm[0] == 1000.0
    finally:
        src.stop()
