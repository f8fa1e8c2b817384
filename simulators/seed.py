"""A simulated fleet's rows, so that the stream accepts its telemetry (`fleet sim --seed-db`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from simulators.errors import SimulatorError
from storage.errors import StorageError
from storage.seed import SeededFleet, seed_fleet

SIMULATED_VEHICLE = {"make": "Simulated", "model": "Fleet sim", "year": 2024,
                     "fuel_type": "gasoline", "tank_capacity_l": 60.0, "status": "active"}
"""Columns of a simulated vehicle (its VIN comes from its model)."""


def seed_simulated_fleet(owner_url: str, tenant_slug: str, vehicle_codes: Sequence[str], *,
                         vins: Mapping[str, str] | None = None) -> SeededFleet:
    """Insert (idempotently) the tenant and its active simulated vehicles, as the schema owner.
    `vins` maps codes to the simulated VINs, so the inventory matches what the OBD front-ends
    report. Raises SimulatorError when the database refuses."""
    vins = vins or {}
    try:
        return seed_fleet(owner_url, tenant_slug,
                          {code: {"vin": vins.get(code)} for code in vehicle_codes},
                          tenant_name=f"Simulated fleet {tenant_slug}",
                          defaults=SIMULATED_VEHICLE)
    except StorageError as exc:
        raise SimulatorError(str(exc)) from exc
