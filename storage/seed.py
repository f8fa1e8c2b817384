"""Seeding tenants and vehicles: the one place that writes them outside the API.

Used by `fleet sim --seed-db`, the demo, the benchmarks and the tests (through `deploy.seed`,
which adds users, drivers and geofences the API's way). It connects as the schema owner and
is idempotent: an existing tenant or vehicle is found, not duplicated, and left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from storage.errors import StorageError


@dataclass(frozen=True)
class SeededFleet:
    """A tenant and its vehicles, as rows."""

    tenant_id: uuid.UUID
    slug: str
    vehicles: dict[str, uuid.UUID]
    """vehicle code -> vehicles.id, in the order asked for"""


VehicleSpec = Mapping[str, Any]
"""Columns of a vehicle beyond its tenant and code (make, vin, samsara_id, status, ...)."""


def seed_fleet(owner_url: str, slug: str,
               vehicles: Sequence[str] | Mapping[str, VehicleSpec], *,
               tenant_name: str | None = None, tenant_id: uuid.UUID | None = None,
               defaults: VehicleSpec | None = None) -> SeededFleet:
    """Insert (idempotently) a tenant and its vehicles; returns their ids.

    `vehicles` is a list of codes, or codes mapped to their own columns; `defaults` are
    columns every new vehicle gets unless its own say otherwise. `tenant_id` fixes the new
    tenant's id (tests that need a known one). Raises StorageError when the database refuses.
    """
    specs: dict[str, VehicleSpec] = (dict(vehicles) if isinstance(vehicles, Mapping)
                                     else {code: {} for code in vehicles})
    try:
        with psycopg.connect(owner_url) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO tenants (id, slug, name) VALUES (coalesce(%s, gen_random_uuid()),"
                " %s, %s) ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
                (tenant_id, slug, tenant_name or slug))
            row = cur.fetchone()
            if row is None:
                raise StorageError(f"tenant {slug!r} was not inserted")
            tenant = row[0]
            # One statement per column set, all its vehicles in one round trip (a bench
            # seeds 5,000): psycopg pipelines `executemany`.
            groups: dict[tuple[str, ...], list[list[object]]] = {}
            for code, own in specs.items():
                columns = {**(defaults or {}), **own}
                groups.setdefault(tuple(columns), []).append(
                    [tenant, code, *columns.values()])
            for names, rows in groups.items():
                cols = ("tenant_id", "code", *names)
                marks = ", ".join(["%s"] * len(cols))
                cur.executemany(
                    f"INSERT INTO vehicles ({', '.join(cols)}) VALUES ({marks})"  # noqa: S608 - column names are the caller's code
                    " ON CONFLICT (tenant_id, code) DO NOTHING", rows)
            cur.execute("SELECT code, id FROM vehicles WHERE tenant_id = %s AND code = ANY(%s)",
                        (tenant, list(specs)))
            ids: dict[str, uuid.UUID] = dict(cur.fetchall())
            conn.commit()
    except psycopg.Error as exc:
        raise StorageError(f"cannot seed tenant {slug!r}: {exc}") from exc
    return SeededFleet(tenant, slug, {code: ids[code] for code in specs})
