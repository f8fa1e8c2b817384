"""ISO-TP segmentation and the real-time driver."""

from __future__ import annotations

import time

import pytest

from simulators import isotp
from simulators.runner import RealtimeDriver
from simulators.vehicle import VehicleModel
from tests.simulators.conftest import START_MS


def test_single_frame_is_padded() -> None:
    assert isotp.segment(b"\x41\x0d\x32") == [bytes.fromhex("03410d3255555555")]
    assert isotp.segment(b"\x01" * 7) == [bytes.fromhex("0701010101010101")]


def test_multi_frame_sequence_wraps_after_f() -> None:
    payload = bytes(range(256))
    frames = isotp.segment(payload)
    assert frames[0][:2] == b"\x11\x00"
    assert frames[0][2:] == payload[:6]
    assert [f[0] for f in frames[1:18]] == [0x20 | (k & 0x0F) for k in range(1, 18)]
    rebuilt = frames[0][2:] + b"".join(f[1:] for f in frames[1:])
    assert rebuilt[:256] == payload
    assert all(len(f) == 8 for f in frames)


def test_segment_limits() -> None:
    with pytest.raises(ValueError, match="payload"):
        isotp.segment(b"")
    with pytest.raises(ValueError, match="payload"):
        isotp.segment(b"\x00" * 4096)


@pytest.mark.parametrize(("frame", "payload"), [
    (bytes.fromhex("0201 0d00 0000 0000"), b"\x01\x0d"),
    (bytes.fromhex("0000000000000000"), None),
    (bytes.fromhex("1014490201000000"), None),
    (bytes.fromhex("09010d"), None),
    (b"", None),
])
def test_single_frame_payload(frame: bytes, payload: bytes | None) -> None:
    assert isotp.single_frame_payload(frame) == payload


def test_realtime_driver_advances_the_model() -> None:
    model = VehicleModel(1, start_ms=START_MS)
    with RealtimeDriver(model, step_s=0.01, speedup=10.0):
        deadline = time.monotonic() + 10.0
        while model.t_s < 0.5 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert model.t_s >= 0.5
    stopped_at = model.t_s
    time.sleep(0.05)
    assert model.t_s == stopped_at
    with pytest.raises(ValueError, match="positive"):
        RealtimeDriver(model, step_s=0)
