"""Values that cross between the dataflow's processes survive pickling unchanged."""

from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.protocol import Sample, Source
from stream.items import VehicleBatch
from stream.model import VehicleRef, snapshot_state


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


@snapshot_state
@dataclass(slots=True)
class Pair:
    a: int
    b: list[int] = field(default_factory=list)


@snapshot_state
@dataclass(frozen=True, slots=True)
class One:
    only: Pair


def test_snapshot_state_pickles_by_field_values_and_refuses_keyword_fields() -> None:
    value = One(Pair(1, [2, 3]))
    assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301 - our own bytes
    assert value.__reduce__() == (One, (Pair(1, [2, 3]),))
    with pytest.raises(TypeError, match="positional"):
        @snapshot_state
        @dataclass(kw_only=True)
        class Named:
            a: int


class _OneTenantIndex:
    """Fences only for tenant 1; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, float, float]] = []

    def has_fences(self, tenant_id: uuid.UUID) -> bool:
        return tenant_id == uuid.UUID(int=1)

    def containing(self, tenant_ids: Any, lons: Any, lats: Any) -> list[frozenset[uuid.UUID]]:
        self.asked.extend(zip(tenant_ids, lons, lats, strict=True))
        return [frozenset({uuid.UUID(int=7)})] * len(tenant_ids)


def test_geo_step_looks_up_only_tenants_with_fences() -> None:
    from stream.geo_step import GeoLookup

    def batch(tenant: int, offset: int) -> VehicleBatch:
        ref = VehicleRef(uuid.UUID(int=tenant), uuid.UUID(int=10 + tenant), "t", "v")
        samples = (Sample(seq=1, t_ms=1_780_000_000_000, lat_deg=52.5, lon_deg=13.4),
                   Sample(seq=2, t_ms=1_780_000_000_100))
        return VehicleBatch(ref=ref, samples=samples, source=Source.GATEWAY, topic="t",
                            received_ms=1_780_000_000_200, partition="p0", offset=offset)

    index = _OneTenantIndex()
    fenced, unfenced = GeoLookup(lambda: index)([batch(1, 1), batch(2, 2)])
    assert index.asked == [(uuid.UUID(int=1), 13.4, 52.5)]
    assert isinstance(fenced, VehicleBatch)
    assert isinstance(unfenced, VehicleBatch)
    assert fenced.fences == (frozenset({uuid.UUID(int=7)}), frozenset())
    assert unfenced.fences == ()


@dataclass(frozen=True, slots=True)
class OneMore(One):
    extra: int = 0


def test_a_subclass_of_a_snapshot_state_class_pickles_its_own_fields() -> None:
    value = OneMore(Pair(1), 5)
    assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301 - our own bytes
