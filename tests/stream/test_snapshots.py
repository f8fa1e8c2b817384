"""A recovery store outlives upgrades: snapshots written by earlier versions still resume."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import numpy as np

from core.protocol import Sample, Source
from geo.index import FenceIndex
from stream.config import StreamSettings
from stream.dataflow import load_detectors
from stream.detectors.anomaly import SignalState
from stream.economy import EconomyAccumulator, EconomyTracker, FleetEconomyState
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
    state = FleetEconomyState()
    blob = pickle.dumps(state).replace(b"stream.economy", b"stream.anomaly")
    assert b"stream.anomaly" in blob
    assert isinstance(pickle.loads(blob), FleetEconomyState)  # noqa: S301 - our own bytes


class _EarlierSignalState:
    """Pickles as `SignalState` did before its windows pickled as bytes: the class called
    with the field values, the window a numpy array."""

    def __init__(self, values: tuple[object, ...]) -> None:
        self.values = values

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return SignalState, self.values


def test_anomaly_windows_snapshot_as_bytes_and_read_back_writable() -> None:
    """The scorer's windows pickle as their bytes (numpy's own pickling of each window was
    most of a vehicle's snapshot); they read back equal and writable, and the form written
    before still loads."""
    window = np.arange(120, dtype=np.float32) / 7
    fields = (7, 3, 1.5, 0.25, 2, 1, True, 9, 0)
    blob = pickle.dumps(SignalState(window.copy(), *fields), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"numpy" not in blob
    earlier = pickle.dumps(_EarlierSignalState((window.copy(), *fields)))
    for loaded in (pickle.loads(blob), pickle.loads(earlier)):  # noqa: S301 - our own bytes
        assert isinstance(loaded, SignalState)
        assert np.array_equal(loaded.window, window)
        assert loaded.window.dtype == np.float32
        loaded.window[0] = 42.0  # the scorer writes into its ring buffer
        assert (loaded.count, loaded.pos, loaded.center, loaded.scale, loaded.since_refresh,
                loaded.run, loaded.fired, loaded.seen, loaded.held) == fields
