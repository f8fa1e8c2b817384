"""The detectors' vocabulary: the domain values a detector reads and returns.

A detector (`stream.detectors`) is handed one `Reading` per sample of a known vehicle
(`VehicleRef`), in event-time order per vehicle with duplicates removed, and returns
`VehicleEvent`, `GeofenceEvent` and `AnomalyRecord` values (`Event`), which map one-to-one
onto the tables of the same names; `Severity` and the event type literals are the words they
use. `snapshot_state` decorates the per-vehicle state classes that Bytewax snapshots. How
these values travel between the dataflow's steps (with their inbox position, vehicle and
destination) is `stream.envelopes`.

Every vehicle's snapshot names this module (its `VehicleRef`): a class that leaves it must
stay loadable from here (`stream.vehicle._SnapshotUnpickler`).
"""

from __future__ import annotations

import copyreg
import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from uuid import UUID

import msgspec

from core.protocol import Sample, Source

Severity = Literal["info", "warning", "critical"]
VehicleEventType = Literal[
    "overspeed", "harsh_acceleration", "harsh_braking", "idling", "ignition_on", "ignition_off",
    "dtc_new", "low_battery", "fuel_drop", "refuel", "device_offline", "device_online",
    "coolant_overheat",
]
GeofenceEventType = Literal["enter", "exit", "dwell", "crossing"]

_T = TypeVar("_T")


def snapshot_state(cls: type[_T]) -> type[_T]:
    """Class decorator for the slotted dataclasses of per-vehicle state: pickle them as the
    class and its field values, taken in C (`operator.attrgetter`).

    Every vehicle's state is pickled at every snapshot. The default of a slotted dataclass,
    a Python ``__getstate__`` that calls `dataclasses.fields` per object, was most of that
    cost. Loading calls the class with the values, so every field must be an init field
    that can be passed by position, and snapshots in a recovery store are read by position:
    new fields go last, with a default; never reorder or remove one. A subclass pickles the
    default way (its fields are not these).
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__}: snapshot_state needs positional init fields only")
    get = operator.attrgetter(*(f.name for f in fields))
    single = len(fields) == 1

    def reduce(self: _T) -> Any:
        if type(self) is not cls:  # what pickle does for a slotted dataclass by default
            return copyreg.__newobj__, (type(self),), self.__getstate__()  # type: ignore[attr-defined]
        return cls, ((get(self),) if single else get(self))

    cls.__reduce__ = reduce  # type: ignore[method-assign,assignment]
    return cls


@dataclass(frozen=True, slots=True)
class VehicleRef:
    """Who a reading belongs to, resolved from the topic by the stream."""

    tenant_id: UUID
    vehicle_id: UUID
    tenant_slug: str
    vehicle_code: str
    model_key: str | None = None
    """"make model" for fleet-relative comparisons (peers of the same model)."""


class Derived(msgspec.Struct, frozen=True, gc=False):
    """A sample's share of the rollups, from the vehicle's previous in-order sample."""

    interval_s: float | None = None
    distance_m: float | None = None
    fuel_used_pct: float | None = None
    over_speed: bool | None = None
    over_rpm: bool | None = None


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One validated sample of a known vehicle, plus what the geo step found.

    A msgspec struct rather than a frozen dataclass: one is made per sample, and a frozen
    dataclass's ``__init__`` (a ``object.__setattr__`` per field) cost eight times as much.
    Not tracked by the cyclic GC (it holds no cycles)."""

    vehicle: VehicleRef
    sample: Sample
    source: Source
    fences: frozenset[UUID] = frozenset()
    """Active geofences of the vehicle's tenant whose zone contains the position."""
    derived: Derived | None = None
    """What the sample accounts for since the previous one (`stream.derived`); None when
    that cannot be known (first sample, out of event-time order)."""

    @property
    def t_ms(self) -> int:
        """Sample time, Unix milliseconds UTC."""
        return self.sample.t_ms

    @property
    def has_fix(self) -> bool:
        """True when the sample carries a usable position."""
        return self.sample.lat_deg is not None and self.sample.lon_deg is not None


@dataclass(frozen=True, slots=True)
class VehicleEvent:
    """A row of `vehicle_events`; episodes (overspeed, idling) carry start, end and duration."""

    t_ms: int
    tenant_id: UUID
    vehicle_id: UUID
    event_type: VehicleEventType
    severity: Severity = "info"
    started_ms: int | None = None
    ended_ms: int | None = None
    duration_s: float | None = None
    value: float | None = None
    threshold: float | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None
    geofence_id: UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    """A row of `geofence_events`."""

    t_ms: int
    tenant_id: UUID
    vehicle_id: UUID
    geofence_id: UUID
    event_type: GeofenceEventType
    lat_deg: float | None = None
    lon_deg: float | None = None
    speed_kph: float | None = None
    dwell_s: float | None = None
    seq: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """A row of `anomalies`: a scored sample, `is_event` when the anomaly fired."""

    t_ms: int
    tenant_id: UUID
    vehicle_id: UUID
    signal: str
    score: float
    threshold: float
    value: float | None = None
    kind: Literal["signal", "fleet_relative"] = "signal"
    is_event: bool = False
    details: dict[str, Any] = field(default_factory=dict)


Event = VehicleEvent | GeofenceEvent | AnomalyRecord
