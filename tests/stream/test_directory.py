"""The vehicle directory cache: refreshes, misses, reasons."""

from __future__ import annotations

import uuid

from core.protocol import Reject, RejectReason
from stream.directory import VehicleDirectory, VehicleRecord

TENANT = uuid.UUID(int=1)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_unknown_vehicle_forces_a_rate_limited_refresh() -> None:
    rows: list[VehicleRecord] = []
    loads = []

    def loader() -> list[VehicleRecord]:
        loads.append(1)
        return list(rows)

    clock = Clock()
    d = VehicleDirectory(loader, refresh_s=30, miss_refresh_s=2, clock=clock)
    r = d.resolve("acme", "v1")
    assert isinstance(r, Reject)
    assert r.reason is RejectReason.UNKNOWN_VEHICLE
    rows.append(VehicleRecord(TENANT, "acme", True, uuid.UUID(int=2), "v1", "active", None))
    clock.t = 1.0  # too soon for another forced refresh
    assert isinstance(d.resolve("acme", "v1"), Reject)
    clock.t = 2.5
    ref = d.resolve("acme", "v1")
    assert not isinstance(ref, Reject)
    assert ref.vehicle_id == uuid.UUID(int=2)
    assert d.tenant_id("acme") == TENANT
    n = len(loads)
    d.resolve("acme", "v1")  # known: no refresh
    assert len(loads) == n


def test_failed_refresh_keeps_the_cache() -> None:
    clock = Clock()
    calls = []

    def loader() -> list[VehicleRecord]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("database down")
        return [VehicleRecord(TENANT, "acme", False, uuid.UUID(int=2), "v1", "active", None)]

    d = VehicleDirectory(loader, refresh_s=1, miss_refresh_s=1, clock=clock)
    d.resolve("acme", "v1")
    clock.t = 5
    r = d.resolve("acme", "v1")
    assert isinstance(r, Reject)
    assert r.reason is RejectReason.INACTIVE_VEHICLE  # tenant inactive, from the kept copy
    assert len(calls) == 2
