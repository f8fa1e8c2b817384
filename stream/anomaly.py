"""The anomaly scorer's and the fleet economy step's module path before 2026-12-07 (#14).

Bytewax pickles the fleet economy step's state with plain `pickle`, so a recovery store
written before the move names `stream.anomaly.FleetEconomyState` (and the vehicle snapshots
name `stream.anomaly.EconomyAccumulator`): this module keeps those names loadable. The next
snapshot names the new modules; remove this once no recovery store from before then remains.
"""

from __future__ import annotations

from stream.detectors.anomaly import (
    AnomalyScorer,
    AnomalySettings,
    AnomalyState,
    SignalSpec,
    SignalState,
)
from stream.economy import (
    EconomyAccumulator,
    EconomySample,
    EconomyTracker,
    FleetEconomy,
    FleetEconomyState,
)

__all__ = ["AnomalyScorer", "AnomalySettings", "AnomalyState", "EconomyAccumulator",
           "EconomySample", "EconomyTracker", "FleetEconomy", "FleetEconomyState", "SignalSpec",
           "SignalState"]
