"""The DBC files shared with the edge gateway (`edge_gateway/dbc/`), loaded once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Final

import cantools

import edge_gateway

DBC_DIR: Final = Path(edge_gateway.__file__).resolve().parent / "dbc"
J1939_DBC: Final = DBC_DIR / "j1939.dbc"
"""J1939-71 broadcasts (EEC1, EEC2, CCVS1, ET1, LFE1, DD1, VEP1, VDHR, HOURS, AMB)."""
OBD2_DBC: Final = DBC_DIR / "obd2.dbc"
"""OBD-II service 01 over ISO 15765-4 (0x7DF/0x7E0 requests, 0x7E8 responses)."""


@functools.cache
def load(path: Path) -> Any:
    """A cantools database (cached: parsing takes milliseconds, encoding microseconds)."""
    return cantools.database.load_file(str(path))
