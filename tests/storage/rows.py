"""Rows the storage tests need before telemetry can be written."""

from __future__ import annotations

import uuid

import psycopg


def tenant_and_vehicle(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[uuid.UUID,
                                                                               uuid.UUID]:
    """A new tenant with one vehicle ('v1'); returns their ids."""
    tenant, vehicle = uuid.uuid4(), uuid.uuid4()
    conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, %s, 't')",
                 (tenant, f"t{tenant.hex[:8]}"))
    conn.execute("INSERT INTO vehicles (id, tenant_id, code) VALUES (%s, %s, 'v1')",
                 (vehicle, tenant))
    return tenant, vehicle
