"""Which vehicles exist, in which tenant, and whether they are active: a refreshed cache.

The decode step asks it for every message, so it answers from memory; the tables are re-read
every `directory_refresh_s`, and earlier (at most every `directory_miss_refresh_s`) when a
message names a vehicle the cache does not know, so a newly registered vehicle is accepted
within seconds. Shared by the worker threads of one process, hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

import psycopg

from core.protocol import Reject, RejectReason
from stream.errors import StreamSourceError
from stream.model import VehicleRef

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    """One row of vehicles joined with its tenant."""

    tenant_id: UUID
    tenant_slug: str
    tenant_active: bool
    vehicle_id: UUID
    code: str
    status: str
    model_key: str | None


Loader = Callable[[], Iterable[VehicleRecord]]

_QUERY = """
SELECT t.id, t.slug, t.is_active, v.id, v.code, v.status,
       NULLIF(concat_ws(' ', v.make, v.model), '')
  FROM vehicles v JOIN tenants t ON t.id = v.tenant_id
"""


def postgres_loader(url: str, connect_timeout_s: float = 10.0) -> Loader:
    """A loader reading vehicles and tenants with the ingest role."""

    def load() -> list[VehicleRecord]:
        try:
            with psycopg.connect(url, connect_timeout=int(connect_timeout_s)) as conn:
                rows = conn.execute(_QUERY).fetchall()
        except psycopg.Error as exc:
            raise StreamSourceError(f"cannot read the vehicle directory: {exc}") from exc
        return [VehicleRecord(*row) for row in rows]

    return load


class VehicleDirectory:
    """Resolve topic (tenant slug, vehicle code) pairs to `VehicleRef`s, or a reject."""

    def __init__(self, loader: Loader, *, refresh_s: float, miss_refresh_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], VehicleRecord] = {}
        self._tenants_by_code: dict[str, set[str]] = {}
        self._tenant_ids: dict[str, UUID] = {}
        self._loaded_at: float | None = None

    def _reload(self) -> None:
        try:
            records = list(self._loader())
        except Exception:
            # Keep serving the old cache: a database blip must not reject every message.
            log.exception("vehicle directory refresh failed; keeping the cached copy")
            self._loaded_at = self._clock()
            return
        by_key: dict[tuple[str, str], VehicleRecord] = {}
        by_code: dict[str, set[str]] = {}
        tenant_ids: dict[str, UUID] = {}
        for rec in records:
            tenant_ids[rec.tenant_slug] = rec.tenant_id
            by_key[(rec.tenant_slug, rec.code)] = rec
            by_code.setdefault(rec.code, set()).add(rec.tenant_slug)
        self._by_key, self._tenants_by_code, self._tenant_ids = by_key, by_code, tenant_ids
        self._loaded_at = self._clock()

    def _ensure_fresh(self, *, missed: bool) -> None:
        now = self._clock()
        age = None if self._loaded_at is None else now - self._loaded_at
        if age is None or age >= self._refresh_s or (missed and age >= self._miss_refresh_s):
            self._reload()

    def resolve(self, tenant_slug: str, vehicle_code: str) -> VehicleRef | Reject:
        """The vehicle of a topic, or why its messages are rejected."""
        with self._lock:
            self._ensure_fresh(missed=False)
            rec = self._by_key.get((tenant_slug, vehicle_code))
            if rec is None:
                self._ensure_fresh(missed=True)
                rec = self._by_key.get((tenant_slug, vehicle_code))
            if rec is None:
                if self._tenants_by_code.get(vehicle_code):
                    return Reject(RejectReason.VEHICLE_NOT_IN_TENANT,
                                  f"vehicle {vehicle_code!r} is not registered in tenant "
                                  f"{tenant_slug!r}")
                return Reject(RejectReason.UNKNOWN_VEHICLE,
                              f"no vehicle {vehicle_code!r} in tenant {tenant_slug!r}")
        if not rec.tenant_active:
            return Reject(RejectReason.INACTIVE_VEHICLE, f"tenant {tenant_slug!r} is inactive")
        if rec.status != "active":
            return Reject(RejectReason.INACTIVE_VEHICLE,
                          f"vehicle {vehicle_code!r} has status {rec.status!r}")
        return VehicleRef(tenant_id=rec.tenant_id, vehicle_id=rec.vehicle_id,
                          tenant_slug=rec.tenant_slug, vehicle_code=rec.code,
                          model_key=rec.model_key)

    def tenant_id(self, tenant_slug: str) -> UUID | None:
        """The id of a tenant known to the cache (for rejects), if any."""
        with self._lock:
            return self._tenant_ids.get(tenant_slug)
