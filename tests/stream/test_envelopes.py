"""The envelopes that cross between the dataflow's processes survive pickling unchanged, and
pickles of the earlier module path (`stream.items`) still load."""

from __future__ import annotations

import pickle
import pickletools
import uuid
from pathlib import Path

from core.protocol import Sample, Source
from stream.economy import EconomySample
from stream.envelopes import (
    EconomyItem,
    EmittedEvent,
    InboxMessage,
    RejectRow,
    StoredSample,
    VehicleBatch,
    VehicleOutput,
    VehicleStateRow,
)
from stream.model import VehicleRef

OLD = Path(__file__).parent / "data" / "envelopes_76b7c76.pickle"
"""(InboxMessage, VehicleBatch, EconomyItem, VehicleOutput of every sink item) as commit
76b7c76 pickled them, when the envelopes were `stream.items`."""
T0 = 1_780_000_000_000


def test_a_vehicle_batch_pickles_to_an_equal_batch() -> None:
    ref = VehicleRef(uuid.UUID(int=1), uuid.UUID(int=2), "acme", "v1", "Ford Transit")
    full = Sample(seq=1, t_ms=1_780_000_000_000, lat_deg=52.5, lon_deg=13.4, alt_m=34.5,
                  speed_kph=0.1 + 0.2, heading_deg=359.9, hdop=0.7, sats=11, gps_fix=1,
                  ignition=True, rpm=812.25, coolant_c=-3.5, fuel_pct=61.0,
                  odometer_km=123_456.789, engine_hours_h=4321.5, battery_v=13.8,
                  throttle_pct=12.5, engine_load_pct=33.3, dtcs=["P0301", "U0100"],
                  extra={"intake_temp_c": 21.5})
    bare = Sample(seq=2, t_ms=1_780_000_000_100)
    fence = frozenset({uuid.UUID(int=7), uuid.UUID(int=8)})
    batch = VehicleBatch(ref=ref, samples=(full, bare), source=Source.GATEWAY,
                         topic="fleet/acme/v1/telemetry", received_ms=1_780_000_000_200,
                         partition="p0", offset=42, sent_ms=1_780_000_000_150,
                         fences=(fence, frozenset()))
    back = pickle.loads(pickle.dumps(batch))  # noqa: S301 - our own bytes
    assert back == batch
    assert back.samples[0].speed_kph == full.speed_kph  # floats exactly, not rounded
    assert type(back.samples) is tuple
    assert back.source is Source.GATEWAY


def test_envelopes_pickled_under_the_earlier_module_path_load() -> None:
    """Bytewax unpickles what crosses between processes with plain pickle: a process of the
    version before the rename names `stream.items` (and `_unpack_batch` there)."""
    blob = OLD.read_bytes()
    named = {arg for _op, arg, _pos in pickletools.genops(blob) if isinstance(arg, str)}
    assert {"stream.items", "_unpack_batch", "EconomyItem"} <= named
    assert "stream.envelopes" not in named

    inbox, batch, economy, output = pickle.loads(blob)  # noqa: S301 - our own bytes
    ref = VehicleRef(uuid.UUID(int=1), uuid.UUID(int=2), "acme", "v1", "Ford Transit")
    assert inbox == InboxMessage("p0", 42, T0 + 200, "fleet/v1/acme/v1/telemetry", b"{}")
    assert type(batch) is VehicleBatch
    assert batch.ref == ref
    assert [s.seq for s in batch.samples] == [1, 2]
    assert batch.samples[0].extra == {"intake_temp_c": 21.5}
    assert batch.fences == (frozenset({uuid.UUID(int=7)}), frozenset())
    assert economy == EconomyItem(ref, EconomySample(T0, ref.tenant_id, ref.vehicle_id,
                                                     "Ford Transit", 12.0, 1.5, 8.0))
    assert type(output) is VehicleOutput
    assert [type(i) for i in output.items] == [StoredSample, EmittedEvent, RejectRow,
                                               VehicleStateRow]
    assert output.economy == (economy,)
    # Pickled again, they name the module they live in now.
    assert b"stream.envelopes" in pickle.dumps(batch)
    assert b"stream.items" not in pickle.dumps((inbox, batch, economy, output))
