"""Insert a tenant and its vehicles so that the stream accepts a simulated fleet's telemetry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulators.errors import SimulatorError


@dataclass(frozen=True)
class SeededFleet:
    """Ids of what `seed_fleet` inserted or found."""

    tenant_id: str
    vehicle_ids: dict[str, str]
    """vehicle code -> vehicles.id"""


def seed_fleet(owner_url: str, tenant_slug: str, vehicle_codes: Sequence[str], *,
               vins: Mapping[str, str] | None = None, tenant_name: str | None = None,
               tank_capacity_l: float = 60.0) -> SeededFleet:
    """Insert (idempotently) the tenant and active vehicles, connecting as the schema owner.

    Existing rows are kept; a vehicle that exists is left as it is. `vins` maps codes to the
    simulated VINs so that the inventory matches what the OBD front-ends report.
    """
    import psycopg

    vins = vins or {}
    try:
        with psycopg.connect(owner_url, autocommit=False) as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO tenants (slug, name) VALUES (%s, %s) "
                    "ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
                    (tenant_slug, tenant_name or f"Simulated fleet {tenant_slug}"))
                row = cur.fetchone()
                if row is None:
                    raise SimulatorError(f"tenant {tenant_slug!r} was not inserted")
                tenant_id = row[0]
                cur.executemany(
                    "INSERT INTO vehicles (tenant_id, code, vin, make, model, year, fuel_type, "
                    "tank_capacity_l, status) VALUES (%s, %s, %s, 'Simulated', 'Fleet sim', "
                    "2024, 'gasoline', %s, 'active') ON CONFLICT (tenant_id, code) DO NOTHING",
                    [(tenant_id, code, vins.get(code), tank_capacity_l)
                     for code in vehicle_codes])
                cur.execute("SELECT code, id FROM vehicles WHERE tenant_id = %s", (tenant_id,))
                ids = {code: str(vid) for code, vid in cur.fetchall()}
            conn.commit()
    except psycopg.Error as exc:
        raise SimulatorError(f"cannot seed tenant {tenant_slug!r}: {exc}") from exc
    return SeededFleet(str(tenant_id), {c: ids[c] for c in vehicle_codes})
