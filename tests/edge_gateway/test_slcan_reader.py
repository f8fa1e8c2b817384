"""The gateway's buffered SLCAN reader: reply splitting, and an adapter unplugged and back."""

from __future__ import annotations

import time
from pathlib import Path

import simulators.can_bus as sim_can
import simulators.vehicle as sim_vehicle
from edge_gateway.config import CanSettings, dbc_paths
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.sources.can import CanSource, take_slcan_line


def test_replies_are_split_at_cr_and_bel_and_partial_ones_wait() -> None:
    buffer = bytearray(b"T18FEF1008112233445566778\rt7E8\a")
    assert take_slcan_line(buffer) == "T18FEF1008112233445566778\r"
    assert take_slcan_line(buffer) == "t7E8\a"
    assert take_slcan_line(buffer) is None
    buffer += b"T0CF004"
    assert take_slcan_line(buffer) is None
    buffer += b"00\r\r"
    assert take_slcan_line(buffer) == "T0CF00400\r"
    assert take_slcan_line(buffer) == "\r"  # a bare OK
    assert not buffer


def test_slcan_source_resumes_after_the_adapter_is_unplugged(tmp_path: Path) -> None:
    """The pty goes away (the reader sees the hang-up) and comes back under the same link."""
    model = sim_vehicle.VehicleModel(2, warm_engine=True, park_between_trips=False)
    model.step(30.0)
    board = Board()
    adapter = sim_can.SlcanAdapter(model, link_path=tmp_path / "can")
    with adapter as port:
        settings = CanSettings(interface="slcan", channel=port, bitrate=250000)
        src = CanSource(settings, dbc_paths(settings), board, Rates(),
                        lambda: PowerMode.ACTIVE, forward_raw=False, reconnect_min_s=0.2,
                        reconnect_max_s=1.0)
        src.start()
        try:
            _wait(lambda: src.health.get("frames") > 50, 20, src)
            adapter.misbehave("drop", 1.0)
            _wait(lambda: src.health.get("errors") >= 1, 10, src)
            frames = src.health.get("frames")
            _wait(lambda: src.health.get("frames") > frames + 50, 30, src)
            rpm = board.get("can_engine_speed")
        finally:
            src.stop()
    assert rpm is not None
    assert abs(rpm[1] - time.time_ns() // 1_000_000) < 5_000


def _wait(predicate: object, timeout_s: float, src: CanSource) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, src.health.summary()
        time.sleep(0.05)
