"""A recovery store outlives upgrades: snapshots written by earlier versions still resume."""

from __future__ import annotations

import uuid
from pathlib import Path

from core.protocol import Sample, Source
from geo.index import FenceIndex
from stream.config import StreamSettings
from stream.dataflow import load_detectors
from stream.economy import EconomyAccumulator, EconomyTracker
from stream.envelopes import StoredSample, VehicleBatch
from stream.filters import Fix
from stream.model import VehicleRef
from stream.vehicle import VehicleLogic, VehicleStepConfig, load_snapshot

OLD = Path(__file__).parent / "data" / "vehicle_snapshot_48fa970.pickle"
"""One vehicle after 60 samples (seq 0-59), as commit 48fa970 pickled it: `Fix` and
`EconomyAccumulator` were frozen dataclasses then."""
T0 = 1_780_000_000_000


def test_a_snapshot_of_the_previous_version_resumes() -> None:
    blob = OLD.read_bytes()
    state = load_snapshot(blob)
    assert state.last_fix == Fix(T0, 52.5059, 13.4)
    assert isinstance(state.economy, EconomyAccumulator)
    assert state.economy.fuel_start_pct == 60.0
    assert state.last_seq == 59

    settings = StreamSettings()
    index = FenceIndex([], settings.geofence, 1)
    clock = [T0 + 60_000]
    cfg = VehicleStepConfig(settings.stream, settings.filters,
                            load_detectors(settings, lambda: index, clock_ms=lambda: clock[0]),
                            clock_ms=lambda: clock[0], economy=EconomyTracker(settings.anomaly))
    logic = VehicleLogic(cfg, blob)
    ref = VehicleRef(uuid.UUID(int=1), uuid.UUID(int=2), "acme", "v1", "Ford Transit")
    samples = tuple(Sample(seq=i, t_ms=T0 + (i - 59) * 1000, lat_deg=52.5 + i * 1e-4,
                           lon_deg=13.4, speed_kph=40.0, fuel_pct=59.0, ignition=True)
                    for i in range(55, 65))
    out, _ = logic.on_batch([VehicleBatch(ref=ref, samples=samples, source=Source.GATEWAY,
                                          topic="t", received_ms=clock[0], partition="p0",
                                          offset=2)])
    stored = [item.reading.sample.seq for o in out for item in o.items
              if isinstance(item, StoredSample)]
    assert stored == [60, 61, 62, 63, 64]  # 55-59 were seen before the snapshot
    assert logic.state.last_fix == Fix(T0 + 5000, 52.5064, 13.4)
    assert load_snapshot(logic.snapshot()).last_seq == 64


def test_the_fleet_economy_state_of_a_store_from_before_the_move_loads() -> None:
    """Bytewax unpickles the fleet economy step's state with plain pickle: a recovery store
    written before #14 names `stream.anomaly.FleetEconomyState`."""
    import pickle

    from stream.economy import FleetEconomyState

    state = FleetEconomyState()
    blob = pickle.dumps(state).replace(b"stream.economy", b"stream.anomaly")
    assert b"stream.anomaly" in blob
    assert isinstance(pickle.loads(blob), FleetEconomyState)  # noqa: S301 - our own bytes
