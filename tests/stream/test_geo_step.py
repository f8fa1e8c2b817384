"""The geo step: fences per position, looked up only for tenants that have any."""

from __future__ import annotations

import uuid
from typing import Any

from core.protocol import Sample, Source
from stream.envelopes import VehicleBatch
from stream.geo_step import GeoLookup
from stream.model import VehicleRef


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
