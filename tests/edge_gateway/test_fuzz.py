"""Random bytes never make the NMEA parser or the CAN frame path raise."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gateway.config import CanSettings, dbc_paths
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.sources.can import CanSource, load_dbc
from edge_gateway.sources.gps import NmeaParser

_DB: Any = load_dbc(dbc_paths(CanSettings()))
_KNOWN_IDS = [m.frame_id for m in _DB.messages]


def _can_source() -> CanSource:
    settings = CanSettings(interface="virtual", channel=f"f{uuid.uuid4().hex[:6]}")
    return CanSource(settings, dbc_paths(settings), Board(), Rates(), lambda: PowerMode.ACTIVE,
                     forward_raw=True, reconnect_min_s=1, reconnect_max_s=1)


_SOURCE = _can_source()


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=120),
    st.text(alphabet="$GPRMCGA,.*0123456789ABCDEFNSWV\r\n", max_size=90).map(str.encode),
))
def test_nmea_parser_never_raises(line: bytes) -> None:
    NmeaParser(lambda _what: None).parse(line)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(_KNOWN_IDS), st.integers(0, (1 << 29) - 1)),
       st.booleans(), st.binary(max_size=8))
def test_can_frames_never_raise(arbitration_id: int, extended: bool, data: bytes) -> None:
    _SOURCE.handle_frame(arbitration_id, extended, data)
