"""`stream.envelopes`' module path before 2026-12-07 (#14): keeps pickles naming it loadable.

Bytewax pickles the envelopes it routes between a cluster's processes, so a process of the
earlier version names `stream.items.VehicleBatch`, `stream.items._unpack_batch` (how a
`VehicleBatch` pickles) and `stream.items.EconomyItem`; this module keeps those names, and
the benchmarks' imports, working. New code imports `stream.envelopes`.
"""

from __future__ import annotations

from stream.envelopes import (
    EconomyItem,
    EmittedEvent,
    InboxMessage,
    RejectRow,
    SinkInput,
    SinkItem,
    StoredSample,
    VehicleBatch,
    VehicleOutput,
    VehicleStateRow,
    _unpack_batch,
    unbundle,
)

__all__ = ["EconomyItem", "EmittedEvent", "InboxMessage", "RejectRow", "SinkInput", "SinkItem",
           "StoredSample", "VehicleBatch", "VehicleOutput", "VehicleStateRow", "_unpack_batch",
           "unbundle"]
