"""The geo step: which fences contain each position, for a whole batch of messages at once.

Runs before the per-vehicle step (containment depends only on the position), vectorised over
every sample of every message in the batch: one `FenceIndex.containing` call per batch.
Messages of tenants without fences are passed over.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

import numpy as np

from stream.envelopes import RejectRow, VehicleBatch

log = logging.getLogger(__name__)


class ContainmentIndex(Protocol):
    """What the geo step needs of `geo.index.FenceIndex`."""

    def containing(self, tenant_ids: Any, lons: Any, lats: Any) -> list[frozenset[UUID]]:
        """Per position, the ids of the tenant's fences whose zone contains it."""
        ...

    def has_fences(self, tenant_id: UUID) -> bool:
        """True when the tenant has at least one active fence."""
        ...


IndexProvider = Callable[[], ContainmentIndex | None]


class GeoLookup:
    """Callable batch step: fills `VehicleBatch.fences`; rejects pass through."""

    def __init__(self, index_provider: IndexProvider) -> None:
        self.index_provider = index_provider

    def __call__(self, items: list[VehicleBatch | RejectRow]) -> list[VehicleBatch | RejectRow]:
        """Look up every positioned sample of the batch in one vectorised call."""
        index = self.index_provider()
        if index is None:
            return items
        tenants: list[UUID] = []
        lons: list[float] = []
        lats: list[float] = []
        where: list[tuple[int, int]] = []
        sizes: dict[int, int] = {}
        batches: dict[int, VehicleBatch] = {}
        for i, item in enumerate(items):
            # A tenant without fences has nothing to look up (no list building per sample).
            if isinstance(item, VehicleBatch) and index.has_fences(item.ref.tenant_id):
                sizes[i] = len(item.samples)
                batches[i] = item
                for j, s in enumerate(item.samples):
                    if s.lat_deg is not None and s.lon_deg is not None:
                        tenants.append(item.ref.tenant_id)
                        lons.append(s.lon_deg)
                        lats.append(s.lat_deg)
                        where.append((i, j))
        if not where:
            return items
        try:
            found = index.containing(tenants, np.asarray(lons, dtype=np.float64),
                                     np.asarray(lats, dtype=np.float64))
        except Exception:
            # Geofencing is lost for this batch, not the data: it is stored without fences.
            log.exception("geofence lookup failed for a batch of %d positions", len(where))
            return items
        per_item: dict[int, list[frozenset[UUID]]] = {}
        for (i, j), fences in zip(where, found, strict=True):
            per_item.setdefault(i, [frozenset()] * sizes[i])[j] = fences
        out = list(items)
        for i, slots in per_item.items():
            out[i] = dataclasses.replace(batches[i], fences=tuple(slots))
        return out
