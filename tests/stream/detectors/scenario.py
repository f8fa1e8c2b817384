"""A seeded fleet scenario from `simulators.vehicle.VehicleModel`, with injected faults and
the simulator's ground truth, turned into the stream's `Reading`s with realistic sensor
noise, plus the precision/recall bookkeeping of the evaluation test.

Noise added on top of the model (which reports clean values): OBD quantisation (speed and
coolant in whole units, as PIDs 0x0D and 0x05 report them), fuel-level slosh while moving,
and battery voltage jitter. Speed limits reach the detectors the way production does it:
as geofences with `speed_limit_kph` (one per posted limit of the simulated streets).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from core.protocol import Sample, Source
from simulators.vehicle import Fault, FaultKind, GroundTruth, ModelState, VehicleModel
from stream.model import AnomalyRecord, Event, Reading, VehicleEvent, VehicleRef

START_MS = 1_780_000_000_000
TENANT_ID = uuid.UUID(int=1)
LIMIT_NS = uuid.UUID(int=77)


def limit_fence(limit_kph: float) -> uuid.UUID:
    """The id of the geofence that stands for all streets with this posted limit."""
    return uuid.uuid5(LIMIT_NS, f"limit-{limit_kph:g}")


class LimitIndex:
    """A stand-in geo index: speed limits of the per-limit fences (lowest wins)."""

    def __init__(self) -> None:
        self._limits: dict[uuid.UUID, float] = {}

    def register(self, limit_kph: float) -> uuid.UUID:
        fence = limit_fence(limit_kph)
        self._limits[fence] = limit_kph
        return fence

    def speed_limit_kph(self, fence_ids: Iterable[uuid.UUID]) -> float | None:
        values = [self._limits[f] for f in fence_ids if f in self._limits]
        return min(values) if values else None


@dataclass
class Trace:
    """One simulated vehicle: per simulated second, the reading (None while offline)."""

    vehicle: VehicleRef
    ticks: list[tuple[int, Reading | None]] = field(default_factory=list)
    truth: list[GroundTruth] = field(default_factory=list)


FAULT_KINDS: tuple[FaultKind, ...] = (
    FaultKind.OVERHEAT, FaultKind.MISFIRE, FaultKind.FUEL_THEFT, FaultKind.REFUEL,
    FaultKind.HARSH_BRAKE, FaultKind.SPEEDING, FaultKind.OFFLINE, FaultKind.GPS_JUMP,
    FaultKind.LOW_BATTERY)


def fault_plan(rng: random.Random, first_s: float, spacing_s: float) -> list[Fault]:
    """Every fault kind once, in a seeded order, `spacing_s` apart."""
    kinds = list(FAULT_KINDS)
    rng.shuffle(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        start = first_s + i * spacing_s + rng.uniform(0, 120)
        params: dict[str, float] = {}
        duration = None
        if kind is FaultKind.MISFIRE:
            params["cylinder"] = float(rng.randint(1, 6))
        elif kind is FaultKind.FUEL_THEFT:
            params["pct"] = rng.uniform(15, 30)
            duration = rng.uniform(60, 180)
        elif kind is FaultKind.REFUEL:
            params["to_pct"] = 95.0
        elif kind is FaultKind.OFFLINE:
            duration = rng.uniform(400, 900)
        spec = f"{kind.value}@{start:.0f}" + (f"+{duration:.0f}" if duration else "")
        if params:
            spec += ":" + ",".join(f"{k}={v:g}" for k, v in params.items())
        faults.append(Fault.parse(spec))
    return faults


def to_sample(state: ModelState, seq: int, rng: random.Random) -> Sample:
    """What a gateway would report: quantised OBD values, sloshing fuel, jittery volts."""
    moving = state.speed_kph > 3
    slosh = rng.uniform(-2.0, 2.0) if moving else rng.uniform(-0.3, 0.3)
    return Sample(
        seq=seq, t_ms=state.t_ms, lat_deg=state.lat_deg, lon_deg=state.lon_deg,
        speed_kph=float(round(state.speed_kph)), heading_deg=round(state.heading_deg, 1),
        ignition=state.ignition, rpm=round(state.rpm * 4) / 4,
        coolant_c=float(round(state.coolant_c)),
        fuel_pct=round(min(100.0, max(0.0, state.fuel_pct + slosh)), 1),
        odometer_km=round(state.odometer_km, 3),
        battery_v=round(state.battery_v + rng.gauss(0, 0.02), 2),
        engine_load_pct=round(state.engine_load_pct, 1),
        dtcs=sorted(set(state.dtcs) | set(state.pending_dtcs)),
        gps_fix=state.gps_fix, hdop=round(state.hdop, 2), sats=state.sats)


def simulate(seed: int, duration_s: int, *, model_key: str = "Compact 2.0",
             index: LimitIndex, thirst: float = 1.0) -> Trace:
    """Run one vehicle for `duration_s` simulated seconds at 1 Hz.

    `thirst` > 1 makes the vehicle report burning that much more fuel than its peers (a
    failing injector): every fall of the model's fuel level is reported `thirst` times.
    """
    rng = random.Random(seed * 7919)
    faults = fault_plan(rng, first_s=900.0, spacing_s=(duration_s - 1500) / len(FAULT_KINDS))
    model = VehicleModel(seed, faults=faults, start_ms=START_MS)
    ref = VehicleRef(TENANT_ID, uuid.UUID(int=1000 + seed), "acme", f"v{seed}", model_key)
    trace = Trace(ref)
    last_fuel, extra_burn = model.state.fuel_pct, 0.0
    for seq in range(duration_s):
        state = model.step(1.0)
        extra_burn += (thirst - 1.0) * max(0.0, last_fuel - state.fuel_pct)
        last_fuel = state.fuel_pct
        if not state.online:
            trace.ticks.append((state.t_ms, None))
            continue
        fences = frozenset({index.register(state.speed_limit_kph)})
        sample = to_sample(state, seq, rng)
        if thirst != 1.0 and sample.fuel_pct is not None:
            sample = msgspec.structs.replace(
                sample, fuel_pct=round(max(0.0, sample.fuel_pct - extra_burn), 1))
        trace.ticks.append((state.t_ms, Reading(ref, sample, Source.SIMULATOR, fences)))
    trace.truth = model.ground_truth
    return trace


# -- evaluation --------------------------------------------------------------------------------

EVENT_FAULTS: dict[str, frozenset[str]] = {
    "coolant_overheat": frozenset({"overheat"}),
    "dtc_new": frozenset({"misfire", "overheat"}),  # overheating stores P0217 too
    "fuel_drop": frozenset({"fuel_theft"}),
    "refuel": frozenset({"refuel"}),
    "harsh_braking": frozenset({"harsh_brake"}),
    "overspeed": frozenset({"speeding"}),
    "device_offline": frozenset({"offline"}),
    "low_battery": frozenset({"low_battery"}),
}
"""Which injected faults each detector event type is meant to find."""

ANOMALY_FAULTS: dict[str, frozenset[str]] = {
    "coolant_c": frozenset({"overheat"}),
    "fuel_rate_pct_per_min": frozenset({"fuel_theft", "refuel"}),
    "rpm_roughness": frozenset({"misfire"}),
    "battery_v": frozenset({"low_battery"}),
}
"""Which injected faults an anomaly event of each signal may explain (strict: a battery
anomaly during an overheat is a false positive)."""

TOLERANCE_MS = 180_000
"""An event matches a fault when its span overlaps the fault's span widened by this much
(smoothing and `consecutive_samples` delay detection; faults end gradually)."""


@dataclass
class Score:
    """Precision and recall of one family of events."""

    true_positives: int = 0
    false_positives: int = 0
    found: int = 0
    missed: int = 0
    false_details: list[str] = field(default_factory=list)
    missed_details: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else 1.0

    @property
    def recall(self) -> float:
        n = self.found + self.missed
        return self.found / n if n else 1.0


def _span(event: Event) -> tuple[int, int]:
    if isinstance(event, VehicleEvent):
        return (event.started_ms or event.t_ms, event.ended_ms or event.t_ms)
    return (event.t_ms, event.t_ms)


def _overlaps(span: tuple[int, int], truth: GroundTruth) -> bool:
    return span[0] <= truth.end_ms + TOLERANCE_MS and span[1] >= truth.start_ms - TOLERANCE_MS


IDLE_KPH = 2.0


def observable(trace: Trace, truth: GroundTruth) -> bool:
    """Whether a fault left a trace in the scored signals at all.

    A misfire only shows in rpm at idle (`rpm_roughness`); a misfire while the engine is off
    or that never idles sets a DTC (found by the DTC detector) but no signal can show it.
    Any fault needs the device online for part of it.
    """
    inside = [r for t, r in trace.ticks if r is not None and truth.start_ms <= t <= truth.end_ms]
    if truth.kind == "misfire":
        idle = [r for r in inside if r.sample.ignition and (r.sample.speed_kph or 0) <= IDLE_KPH]
        return len(idle) >= 15
    return len(inside) >= 30


def evaluate(events: Sequence[Event], truths: Sequence[GroundTruth], *,
             kind_of: dict[str, frozenset[str]], label: str,
             trace: Trace | None = None) -> Score:
    """Match events (already filtered to one vehicle) against that vehicle's ground truth.

    With `trace`, faults that are not `observable` in it do not count for recall (an event
    that matches one still counts as a true positive)."""
    score = Score()
    relevant = set().union(*kind_of.values())
    matched: set[int] = set()
    for ev in events:
        key = ev.event_type if isinstance(ev, VehicleEvent) else ev.signal
        kinds = kind_of.get(key)
        if kinds is None:
            continue
        hits = [i for i, tr in enumerate(truths) if tr.kind in kinds and _overlaps(_span(ev), tr)]
        if hits:
            score.true_positives += 1
            matched.update(hits)
        else:
            score.false_positives += 1
            score.false_details.append(f"{label} {key} at {(ev.t_ms - START_MS) / 1000:.0f}s")
    for i, tr in enumerate(truths):
        if tr.kind not in relevant or (trace is not None and not observable(trace, tr)):
            continue
        if i in matched:
            score.found += 1
        else:
            score.missed += 1
            score.missed_details.append(
                f"{label} {tr.kind} {(tr.start_ms - START_MS) / 1000:.0f}"
                f"-{(tr.end_ms - START_MS) / 1000:.0f}s {tr.details}")
    return score


def merge(scores: Iterable[Score]) -> Score:
    """Sum of scores."""
    out = Score()
    for s in scores:
        out.true_positives += s.true_positives
        out.false_positives += s.false_positives
        out.found += s.found
        out.missed += s.missed
        out.false_details += s.false_details
        out.missed_details += s.missed_details
    return out


def anomaly_events(events: Iterable[Event]) -> list[AnomalyRecord]:
    """Fired anomaly events (not plain scored samples)."""
    return [e for e in events if isinstance(e, AnomalyRecord) and e.is_event]
