"""The required evaluation: precision and recall on a seeded simulator scenario with faults.

Eight simulated vehicles drive three hours each through the synthetic city (1 Hz, OBD
quantisation, fuel slosh, voltage jitter; see `scenario`). Each vehicle gets every fault
kind once at a seeded time: overheat, misfire, fuel theft, refuel, harsh braking, speeding,
device offline and a GPS jump (the last is the stream's GPS filters' job, not a detector's).
The simulator's `ground_truth` says what really happened and when.

A ninth vehicle of the same model reports twice the fuel burn: the fleet-relative economy
score must single it out (and nobody else).

Matching: an event is a true positive when its span overlaps a ground-truth fault of a kind
it is meant to find (`EVENT_FAULTS`, `ANOMALY_FAULTS`) within `TOLERANCE_MS`; recall is over
the faults of those kinds (for anomalies: those the scored signals can show at all, see
`scenario.observable`). Both must be >= 0.9.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from stream.detectors import build_detectors
from stream.detectors.anomaly import AnomalySettings
from stream.detectors.config import DetectorSettings
from stream.economy import EconomySample, EconomyTracker, FleetEconomy
from stream.model import AnomalyRecord, Event, VehicleEvent

from .scenario import (
    ANOMALY_FAULTS,
    EVENT_FAULTS,
    LimitIndex,
    Score,
    anomaly_events,
    evaluate,
    merge,
    simulate,
)

SEEDS = range(1, 9)
THIRSTY_SEED = 9
"""A ninth vehicle of the same model that burns twice the fuel of its peers (a leak)."""
THIRST = 2.0
DURATION_S = 3 * 3600
ECONOMY = AnomalySettings(economy_window_km=5.0)
"""City driving covers about 20-40 km in three hours: windows of 5 km give a few samples."""


@dataclass
class Result:
    detectors: Score
    anomalies: Score
    readings: int
    economy: list[AnomalyRecord]
    thirsty_id: uuid.UUID


class Clock:
    now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(scope="module")
def result() -> Result:
    index = LimitIndex()
    clock = Clock()
    dets = [d for d in build_detectors(DetectorSettings(), lambda: index, clock=clock)
            if d.name != "geofence"]
    tracker = EconomyTracker(ECONOMY)
    det_scores, anomaly_scores, readings = [], [], 0
    economy_samples: list[EconomySample] = []
    thirsty_id = uuid.UUID(int=0)
    for seed in [*SEEDS, THIRSTY_SEED]:
        thirst = THIRST if seed == THIRSTY_SEED else 1.0
        trace = simulate(seed, DURATION_S, index=index, thirst=thirst)
        if seed == THIRSTY_SEED:
            thirsty_id = trace.vehicle.vehicle_id
        states = {d.name: d.initial_state() for d in dets}
        economy_state = tracker.initial_state()
        events: list[Event] = []
        for t_ms, reading in trace.ticks:
            # Replayed in simulated real time: processing time is the sample time.
            clock.now_ms = t_ms
            for det in dets:
                if reading is not None:
                    states[det.name], out = det.on_reading(states[det.name], reading)
                    events.extend(out)
                states[det.name], out = det.on_tick(states[det.name], t_ms)
                events.extend(out)
            if reading is not None:
                readings += 1
                economy_state, samples = tracker.on_reading(economy_state, reading)
                economy_samples.extend(samples)
        label = f"v{seed}"
        det_scores.append(evaluate([e for e in events if isinstance(e, VehicleEvent)],
                                   trace.truth, kind_of=EVENT_FAULTS, label=label))
        anomaly_scores.append(evaluate(anomaly_events(events), trace.truth,
                                       kind_of=ANOMALY_FAULTS, label=label, trace=trace))
    # The keyed-by-model step sees the samples of all vehicles in time order.
    fleet = FleetEconomy(ECONOMY)
    fleet_state = fleet.initial_state()
    economy: list[AnomalyRecord] = []
    for sample in sorted(economy_samples, key=lambda s: s.t_ms):
        fleet_state, records = fleet.on_sample(fleet_state, sample)
        economy.extend(records)
    return Result(merge(det_scores), merge(anomaly_scores), readings, economy, thirsty_id)


def _report(name: str, score: Score) -> str:
    return (f"{name}: precision {score.precision:.3f} ({score.true_positives} true, "
            f"{score.false_positives} false), recall {score.recall:.3f} ({score.found} found, "
            f"{score.missed} missed); false: {score.false_details}; missed: "
            f"{score.missed_details}")


def test_detector_events_precision_and_recall(result: Result) -> None:
    print(f"{result.readings} readings;", _report("detector events", result.detectors))
    assert result.detectors.precision >= 0.9, _report("detectors", result.detectors)
    assert result.detectors.recall >= 0.9, _report("detectors", result.detectors)


def test_anomaly_events_precision_and_recall(result: Result) -> None:
    print(_report("anomaly events", result.anomalies))
    assert result.anomalies.precision >= 0.9, _report("anomalies", result.anomalies)
    assert result.anomalies.recall >= 0.9, _report("anomalies", result.anomalies)


def test_fleet_relative_economy_finds_the_thirsty_vehicle_only(result: Result) -> None:
    print("fleet economy (vehicle, km per %, peer median, z, event):",
          [(str(r.vehicle_id)[-4:], r.value, r.details["peer_median"], r.details["z"],
            r.is_event) for r in result.economy])
    thirsty = [r for r in result.economy if r.vehicle_id == result.thirsty_id]
    others = [r for r in result.economy if r.vehicle_id != result.thirsty_id]
    assert len(others) >= 10  # enough scored samples to mean something
    assert thirsty
    assert not any(r.is_event for r in others)
    assert any(r.is_event for r in thirsty)
    # Every score of the thirsty vehicle is worse than any score of a normal one.
    assert max(r.details["z"] for r in thirsty) < min(r.details["z"] for r in others)


def test_scenario_is_big_enough_to_mean_something(result: Result) -> None:
    assert result.readings > 75_000
    assert result.detectors.found >= 50
    assert result.anomalies.found >= 24
