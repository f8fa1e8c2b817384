"""What the Smartcar 2.0 and v3 pullers share: which vehicles are connected, one pass over
them, and where a vehicle's last location is cached (the webhook routes read it too)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import asyncpg

from api.integrations.errors import NotConnectedError, VendorError

log = logging.getLogger(__name__)


def location_cache_key(tenant_id: UUID | str, sc_vehicle_id: str) -> str:
    """Redis key of the cached last location of a Smartcar vehicle."""
    return f"fleet:smartcar:location:{tenant_id}:{sc_vehicle_id}"


def connected_vehicles_sql(table: str, *extra_columns: str) -> str:
    """Active vehicles of active tenants with a Smartcar connection in `table`.

    `table` is one of our own connection tables (never user input); its rows carry
    tenant_id, vehicle_id and smartcar_vehicle_id.
    """
    columns = ", ".join(["k.tenant_id", "t.slug", "k.smartcar_vehicle_id",
                         *(f"k.{c}" for c in extra_columns), "v.code"])
    return (f"SELECT {columns} FROM {table} k JOIN tenants t ON t.id = k.tenant_id"  # noqa: S608
            " JOIN vehicles v ON v.tenant_id = k.tenant_id"
            " AND (v.id = k.vehicle_id OR v.smartcar_id = k.smartcar_vehicle_id)"
            " WHERE t.is_active AND v.status = 'active' ORDER BY t.slug, v.code")


async def poll_each(rows: Sequence[asyncpg.Record],
                    poll: Callable[[asyncpg.Record], Awaitable[int]],
                    label: str) -> tuple[int, int]:
    """Poll every vehicle row; a vendor failure of one vehicle is logged and counted, and the
    pass goes on. Returns (samples published, failures)."""
    published = failures = 0
    for row in rows:
        try:
            published += await poll(row)
        except (VendorError, NotConnectedError) as exc:
            failures += 1
            log.warning("%s %s/%s: %s", label, row["slug"], row["code"], exc)
    return published, failures
