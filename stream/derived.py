"""What a sample accounts for in the rollups, from the vehicle's previous in-order sample.

Continuous aggregates see one row at a time (no window functions), so the part that needs the
neighbour is computed here, where the vehicle's state holds it anyway, and stored with the row
(telemetry.interval_s, distance_m, fuel_used_pct, over_speed, over_rpm; migration 0013).
"""

from __future__ import annotations

from core.protocol import Sample
from stream.config import RollupSettings
from stream.filters import Fix, haversine_m
from stream.model import Derived

MAX_ODOMETER_MPS = 100.0
"""An odometer step faster than 360 km/h is a reset or a glitch, not distance."""


def derive(sample: Sample, previous: Sample | None, last_fix: Fix | None,
           cfg: RollupSettings) -> Derived:
    """The derived signals of `sample` (position already filtered), given the previous
    released in-order sample and the last accepted fix before it."""
    over_speed = None if sample.speed_kph is None else sample.speed_kph > cfg.overspeed_kph
    over_rpm = None if sample.rpm is None else sample.rpm > cfg.high_rpm
    if previous is None:
        return Derived(over_speed=over_speed, over_rpm=over_rpm)
    dt_s = (sample.t_ms - previous.t_ms) / 1000.0
    observed = 0.0 <= dt_s <= cfg.max_gap_s
    distance: float | None = None
    if sample.odometer_km is not None and previous.odometer_km is not None:
        step_m = (sample.odometer_km - previous.odometer_km) * 1000.0
        if 0.0 <= step_m <= max(dt_s, 1.0) * MAX_ODOMETER_MPS:
            distance = step_m
    elif (last_fix is not None and sample.lat_deg is not None and sample.lon_deg is not None
          and 0 <= sample.t_ms - last_fix.t_ms <= cfg.max_gap_s * 1000):
        distance = haversine_m(last_fix.lat_deg, last_fix.lon_deg, sample.lat_deg,
                               sample.lon_deg)
    fuel: float | None = None
    if sample.fuel_pct is not None and previous.fuel_pct is not None:
        fuel = max(previous.fuel_pct - sample.fuel_pct, 0.0)  # a refuel is not use
    return Derived(interval_s=dt_s if observed else None, distance_m=distance,
                   fuel_used_pct=fuel, over_speed=over_speed, over_rpm=over_rpm)
