"""The per-vehicle step: dedupe, reorder, GPS filters, motion/ignition, then the detectors.

One `VehicleLogic` per vehicle (Bytewax keyed state). Its whole state is the explicit value
`VehicleState`, which Bytewax snapshots for recovery, so a restart resumes dedupe windows,
held samples and every detector's state exactly where the last snapshot left them.

Order inside the step, per sample:
1. dedupe by ``seq`` (a window of recent sequence numbers; redeliveries end here);
2. time filters (too far in the future/past of the receive time) -> dead letter;
3. reorder buffer: a sample is released when it is the next ``seq`` after the last released
   one (the normal, in-order case: no waiting); after a gap, when the event-time watermark
   (newest sample time - ``reorder_window_ms``) has passed it and it has waited
   ``min_hold_ms``, or when it has waited ``max_hold_ms`` of processing time whatever the
   watermark (a quiet vehicle). Released samples go in time order;
4. duplicate and position filters against the previous released sample / last good fix;
5. motion and ignition state;
6. store the sample;
7. the samples released in event-time order by this activation go through the detectors, in
   their one list: each detector gets the whole run at once (``on_readings``) when it has
   that method, otherwise reading by reading.

A sample released *after* a newer one (it arrived later than the reorder window allowed) is
stored but not shown to the detectors, which require event-time order.
"""

from __future__ import annotations

import bisect
import io
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from uuid import UUID

import msgspec
from bytewax.operators import StatefulBatchLogic

from core.protocol import Channel, RejectReason, Sample, Source, topic_for
from stream.config import DataflowSettings, FilterSettings, RollupSettings
from stream.derived import derive
from stream.detectors.base import Detector
from stream.economy import EconomyAccumulator
from stream.envelopes import (
    EconomyItem,
    EmittedEvent,
    RejectRow,
    SinkItem,
    StoredSample,
    VehicleBatch,
    VehicleOutput,
    VehicleStateRow,
)
from stream.filters import Fix, check_position, check_time, is_duplicate, strip_position
from stream.model import Event, Reading, VehicleRef, snapshot_state
from stream.seqset import SeqSet

log = logging.getLogger(__name__)

_failures: dict[str, int] = {}


def _log_detector_failure(name: str, vehicle: UUID, what: str) -> None:
    """Log a detector's exception with its traceback at the 1st, 2nd, 4th, 8th, ... failure.

    A detector bug hits every reading; logging each would bury everything else.
    """
    n = _failures[name] = _failures.get(name, 0) + 1
    if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... failure
        log.exception("detector %s failed on %s of vehicle %s (%d failures so far)", name, what,
                      vehicle, n)


def reject_row(ref: VehicleRef, sample: Sample, received_ms: int, partition: str,  # noqa: PLR0917
               offset: int, detail: str) -> RejectRow:
    """A ``gps_filtered`` dead letter for one sample (its JSON is the payload)."""
    return RejectRow(
        time_ms=received_ms, reason=RejectReason.GPS_FILTERED.value, detail=detail,
        topic=topic_for(ref.tenant_slug, ref.vehicle_code, Channel.TELEMETRY),
        payload=msgspec.json.encode(sample), tenant_id=ref.tenant_id,
        vehicle_code=ref.vehicle_code, partition=partition, offset=offset,
        sample_seq=sample.seq)


@snapshot_state
@dataclass(slots=True)
class Held:
    """A sample waiting in the reorder buffer."""

    ref: VehicleRef
    sample: Sample
    fences: frozenset[UUID]
    source: Source
    received_ms: int
    partition: str
    offset: int
    held_since_ms: int
    """Processing time it entered the buffer (wall clock, ms)."""

    def reject(self, detail: str) -> RejectRow:
        """A gps_filtered dead letter for this sample."""
        return reject_row(self.ref, self.sample, self.received_ms, self.partition, self.offset,
                          detail)

    @property
    def order(self) -> tuple[int, int]:
        """Release order: event time, then seq."""
        return (self.sample.t_ms, self.sample.seq)


@snapshot_state
@dataclass(slots=True)
class VehicleState:
    """Everything the stream remembers about one vehicle (picklable; snapshotted)."""

    ref: VehicleRef | None = None
    last_seq: int | None = None
    """Highest seq released in order."""
    last_t_ms: int | None = None
    """Event time of the newest released sample."""
    max_t_ms: int | None = None
    """Newest event time received (drives the watermark)."""
    seen: SeqSet = field(default_factory=lambda: SeqSet(window=4096))
    """Released or held seqs (the dedupe window)."""
    held: list[Held] = field(default_factory=list)
    """The reorder buffer, sorted by (t_ms, seq)."""
    previous: Sample | None = None
    last_fix: Fix | None = None
    moving: bool | None = None
    ignition: bool | None = None
    inside: frozenset[UUID] = frozenset()
    detectors: dict[str, Any] = field(default_factory=dict)
    economy: Any = None
    """State of the fuel-economy tracker (`stream.economy.EconomyTracker`), when enabled."""
    last_tick_ms: int = 0
    duplicates: int = 0
    late: int = 0


class _Legacy:
    """Stand-in for a value pickled as a frozen slotted dataclass (class, then its field
    values as a list) whose class is a msgspec struct now, which that form cannot build."""

    target: Any
    values: list[Any]

    def __new__(cls, *args: Any) -> Any:
        # The current form, (class, field values), names the same class: build the struct.
        # The old one creates an empty instance, then hands the values to __setstate__.
        return cls.target(*args) if args else super().__new__(cls)

    def __setstate__(self, state: list[Any]) -> None:
        self.values = state

    def upgrade(self) -> Any:
        """The value as the current class (same fields, same order)."""
        return self.target(*self.values)


class _LegacyFix(_Legacy):
    target = Fix


class _LegacyEconomy(_Legacy):
    target = EconomyAccumulator


class _SnapshotUnpickler(pickle.Unpickler):
    """Reads snapshots of this and earlier versions (`Fix` and `EconomyAccumulator` were
    frozen dataclasses before 2026-11-27's third session)."""

    _LEGACY: ClassVar[dict[tuple[str, str], type[_Legacy]]] = {
        ("stream.filters", "Fix"): _LegacyFix,
        ("stream.anomaly", "EconomyAccumulator"): _LegacyEconomy,
    }

    _MOVED: ClassVar[dict[str, str]] = {
        # Moved on 2026-12-07 (#14) into the foundation package (stream.anomaly stays as a
        # module of its own: Bytewax unpickles the fleet economy step's state without us).
        "edge_gateway.protocol": "core.protocol",
        "stream.live": "core.live",
        # Not stream.items (now stream.envelopes): no snapshot holds an envelope, and that
        # module stays for the pickles Bytewax reads itself (items routed between processes).
    }

    def find_class(self, module: str, name: str, /) -> Any:
        """Our classes, with the stand-ins for the old forms and their modules' new homes."""
        legacy = self._LEGACY.get((module, name))
        if legacy is not None:
            return legacy
        return super().find_class(self._MOVED.get(module, module), name)


def load_snapshot(blob: bytes) -> VehicleState:
    """A `VehicleLogic.snapshot`, of this version or an earlier one (a recovery store
    outlives upgrades: an unreadable one would stop the stream)."""
    state = cast("VehicleState", _SnapshotUnpickler(io.BytesIO(blob)).load())
    # Old forms of the struct classes hold values here only (the detectors keep neither).
    if isinstance(state.last_fix, _Legacy):
        state.last_fix = state.last_fix.upgrade()
    if isinstance(state.economy, _Legacy):
        state.economy = state.economy.upgrade()
    return state


BatchFn = Callable[[Any, Sequence[Reading]], tuple[Any, Sequence[Event]]]


@dataclass(frozen=True)
class VehicleStepConfig:
    """What every VehicleLogic shares: settings, the detector list and the clock."""

    dataflow: DataflowSettings
    filters: FilterSettings
    detectors: Sequence[Detector]
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    economy: Any = None
    """`stream.economy.EconomyTracker` feeding the fleet-relative score; None disables it."""
    rollups: RollupSettings = field(default_factory=RollupSettings)
    batch_detectors: tuple[tuple[Detector, BatchFn | None], ...] = field(init=False)
    """The detectors in order, each with its ``on_readings`` when it has one."""
    tick_detectors: tuple[Detector, ...] = field(init=False)
    """The detectors in order whose `on_tick` does something (not ``ticks = False``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_detectors", tuple(
            (d, getattr(d, "on_readings", None)) for d in self.detectors))
        object.__setattr__(self, "tick_detectors", tuple(
            d for d in self.detectors if getattr(d, "ticks", True)))


class VehicleLogic(StatefulBatchLogic[VehicleBatch, VehicleOutput, bytes]):
    """Bytewax logic of one vehicle; see the module docstring for the order of work."""

    def __init__(self, config: VehicleStepConfig, resume: bytes | VehicleState | None) -> None:
        self.cfg = config
        if isinstance(resume, bytes):
            # Our own snapshot (see snapshot()), read back from Bytewax's recovery store.
            resume = load_snapshot(resume)
        self.state: VehicleState = resume if resume is not None else VehicleState(
            seen=SeqSet(window=config.dataflow.dedupe_window_samples))
        for det in config.detectors:
            if det.name not in self.state.detectors:
                self.state.detectors[det.name] = det.initial_state()
        if config.economy is not None and self.state.economy is None:
            self.state.economy = config.economy.initial_state()
        self._economy: list[EconomyItem] = []

    # -- Bytewax hooks -------------------------------------------------------------------------
    def on_batch(self, values: list[VehicleBatch]) -> tuple[Iterable[VehicleOutput], bool]:
        """Take in the messages of this vehicle that arrived together."""
        out: list[SinkItem] = []
        now_ms = self.cfg.clock_ms()
        for batch in values:
            self._admit(batch, now_ms, out)
        self._release(now_ms, out)
        return self._output(out), StatefulBatchLogic.RETAIN

    def _output(self, out: list[SinkItem]) -> list[VehicleOutput]:
        economy, self._economy = tuple(self._economy), []
        return [VehicleOutput(tuple(out), economy)] if out or economy else []

    def on_notify(self) -> tuple[Iterable[VehicleOutput], bool]:
        """Processing-time tick: release long-held samples, run the detectors' time-outs."""
        out: list[SinkItem] = []
        now_ms = self.cfg.clock_ms()
        self._release(now_ms, out)
        st = self.state
        if now_ms - st.last_tick_ms >= self.cfg.dataflow.tick_interval_s * 1000 and st.ref:
            st.last_tick_ms = now_ms
            for det in self.cfg.tick_detectors:
                try:
                    st.detectors[det.name], events = det.on_tick(st.detectors[det.name], now_ms)
                except Exception:  # noqa: BLE001 - logged by _log_detector_failure
                    _log_detector_failure(det.name, st.ref.vehicle_id, "a tick")
                    continue
                out.extend(EmittedEvent(st.ref, ev) for ev in events)
        return self._output(out), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """The next tick, or earlier when a held sample's hold time runs out."""
        st = self.state
        due_ms = st.last_tick_ms + int(self.cfg.dataflow.tick_interval_s * 1000)
        if st.held:
            oldest = min(h.held_since_ms for h in st.held)
            hold = self.cfg.dataflow.min_hold_ms
            if self.cfg.clock_ms() >= oldest + hold:
                hold = self.cfg.dataflow.max_hold_ms
            due_ms = min(due_ms, oldest + hold)
        return datetime.fromtimestamp(due_ms / 1000.0, tz=UTC)

    def snapshot(self) -> bytes:
        """The state, pickled now: an independent copy (detectors may mutate their state
        objects in place) that costs a tenth of `copy.deepcopy`, which was the largest single
        cost of the step with 500 vehicles per worker."""
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    # -- steps ---------------------------------------------------------------------------------
    def _admit(self, batch: VehicleBatch, now_ms: int, out: list[SinkItem]) -> None:
        st = self.state
        st.ref = batch.ref
        if st.last_tick_ms == 0:
            st.last_tick_ms = now_ms
        fences = batch.fences or (frozenset(),) * len(batch.samples)
        for sample, inside in zip(batch.samples, fences, strict=True):
            seq = sample.seq
            # Below the window a duplicate cannot be told from a very late sample; such a
            # sample is let through and the database's unique key decides.
            if not st.seen.add(seq):
                st.duplicates += 1
                continue
            reason = check_time(sample, batch.received_ms, self.cfg.filters)
            if reason is not None:
                # Remembered as seen above, so a redelivered copy is not a second dead letter.
                out.append(reject_row(batch.ref, sample, batch.received_ms, batch.partition,
                                      batch.offset, reason))
                continue
            held = Held(batch.ref, sample, inside, batch.source, batch.received_ms, batch.partition,
                        batch.offset, now_ms)
            if not st.held or st.held[-1].order <= held.order:
                st.held.append(held)  # the usual case: arriving in order
            else:
                bisect.insort(st.held, held, key=lambda h: h.order)
            if st.max_t_ms is None or sample.t_ms > st.max_t_ms:
                st.max_t_ms = sample.t_ms

    def _release(self, now_ms: int, out: list[SinkItem]) -> None:
        st = self.state
        cfg = self.cfg.dataflow
        readings: list[Reading] = []
        while st.held:
            head = st.held[0]
            held_ms = now_ms - head.held_since_ms
            in_sequence = st.last_seq is None or head.sample.seq == st.last_seq + 1
            watermark_passed = (st.max_t_ms is not None
                                and head.sample.t_ms <= st.max_t_ms - cfg.reorder_window_ms)
            if not (in_sequence or (watermark_passed and held_ms >= cfg.min_hold_ms)
                    or held_ms >= cfg.max_hold_ms):
                break
            st.held.pop(0)
            reading = self._process(head, out)
            if reading is not None:
                readings.append(reading)
        if readings and st.ref is not None:
            self._detect(st.ref, readings, out)
            out.append(VehicleStateRow(st.ref, readings[-1].sample, st.moving, st.ignition,
                                       st.inside))

    def _process(self, held: Held, out: list[SinkItem]) -> Reading | None:
        """Filter and store one released sample (and feed the economy tracker); the reading
        if it was in event-time order, for `_detect`."""
        st = self.state
        ref = held.ref
        sample = held.sample
        in_order = st.last_t_ms is None or sample.t_ms >= st.last_t_ms
        if st.last_seq is None or sample.seq > st.last_seq:
            st.last_seq = sample.seq
        if self.cfg.filters.duplicate and is_duplicate(sample, st.previous):
            out.append(held.reject("duplicate: same time and position as the previous sample"))
            return None
        reason = check_position(sample, st.last_fix if in_order else None, self.cfg.filters)
        fences = held.fences
        if reason is not None:
            out.append(held.reject(reason))
            sample = strip_position(sample)
            fences = frozenset()
        derived = derive(sample, st.previous, st.last_fix, self.cfg.rollups) if in_order else None
        reading = Reading(vehicle=ref, sample=sample, source=held.source, fences=fences,
                          derived=derived)
        out.append(StoredSample(reading))
        if not in_order:
            st.late += 1
            return None
        st.last_t_ms = sample.t_ms
        st.previous = held.sample
        if sample.lat_deg is not None and sample.lon_deg is not None:
            st.last_fix = Fix(sample.t_ms, sample.lat_deg, sample.lon_deg)
            st.inside = fences
        self._update_motion(sample)
        if self.cfg.economy is not None:
            st.economy, windows = self.cfg.economy.on_reading(st.economy, reading)
            self._economy.extend(EconomyItem(ref, w) for w in windows)
        return reading

    def _detect(self, ref: VehicleRef, readings: list[Reading], out: list[SinkItem]) -> None:
        """Run the detectors, in their order, over this activation's in-order readings.

        A detector with ``on_readings`` gets them at once (it settles a quiet batch without a
        state per reading); if that raises, the batch is replayed reading by reading from the
        unchanged state, so one bad reading costs only its own events, as for the others.
        """
        states = self.state.detectors
        for det, on_readings in self.cfg.batch_detectors:
            name = det.name
            if on_readings is not None:
                try:
                    states[name], events = on_readings(states[name], readings)
                except Exception:  # noqa: BLE001 - replayed below, failures logged there
                    events = self._one_by_one(det, ref, readings)
            else:
                events = self._one_by_one(det, ref, readings)
            if events:  # mostly empty: skip building a list per detector
                out.extend([EmittedEvent(ref, ev) for ev in events])

    def _one_by_one(self, det: Detector, ref: VehicleRef,
                    readings: list[Reading]) -> list[Event]:
        states = self.state.detectors
        name = det.name
        events: list[Event] = []
        for reading in readings:
            try:
                states[name], found = det.on_reading(states[name], reading)
            except Exception:  # noqa: BLE001 - logged by _log_detector_failure
                # A detector bug must not stop the vehicle's data: log it and go on.
                _log_detector_failure(name, ref.vehicle_id, f"seq {reading.sample.seq}")
                continue
            if found:
                events.extend(found)
        return events

    def _update_motion(self, sample: Sample) -> None:
        st = self.state
        if sample.speed_kph is not None:
            st.moving = sample.speed_kph >= self.cfg.dataflow.moving_speed_kph
        if sample.ignition is not None:
            st.ignition = sample.ignition
        elif sample.rpm is not None:
            # No ignition line: a turning engine means the ignition is on.
            st.ignition = sample.rpm > 0


def vehicle_logic_builder(
    config: VehicleStepConfig,
) -> Callable[[bytes | VehicleState | None], VehicleLogic]:
    """The `stateful_batch` builder: a new or resumed logic per vehicle key."""

    def build(resume: bytes | VehicleState | None) -> VehicleLogic:
        return VehicleLogic(config, resume)

    return build
