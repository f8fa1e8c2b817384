"""How Samsara stat types become wire-contract sample fields: one table, `STAT_TYPES`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from api.integrations.publisher import make_sample, vendor_seq
from core.protocol import Sample

MPH_TO_KPH = 1.609344


def _t_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _engine_on(value: Any) -> bool:
    return str(value).lower() != "off"


@dataclass(frozen=True)
class StatType:
    """How one Samsara stat type becomes sample fields."""

    slot: int
    """Sub-millisecond slot of the sequence number (see publisher.vendor_seq)."""
    convert: Callable[[Mapping[str, Any]], dict[str, Any]]


def _gps(point: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"lat_deg": point["latitude"], "lon_deg": point["longitude"]}
    if point.get("speedMilesPerHour") is not None:
        out["speed_kph"] = float(point["speedMilesPerHour"]) * MPH_TO_KPH
    if point.get("headingDegrees") is not None:
        out["heading_deg"] = float(point["headingDegrees"]) % 360
    return out


# The one table of supported stat types; anything else in a feed is ignored with a log line.
STAT_TYPES: dict[str, StatType] = {
    "gps": StatType(0, _gps),
    "engineStates": StatType(1, lambda p: {"ignition": _engine_on(p["value"])}),
    "obdOdometerMeters": StatType(2, lambda p: {"odometer_km": float(p["value"]) / 1000}),
    "gpsOdometerMeters": StatType(2, lambda p: {"odometer_km": float(p["value"]) / 1000}),
    "fuelPercents": StatType(3, lambda p: {"fuel_pct": float(p["value"])}),
    "obdEngineSeconds": StatType(4, lambda p: {"engine_hours_h": float(p["value"]) / 3600}),
    "engineRpm": StatType(5, lambda p: {"rpm": float(p["value"])}),
    "engineCoolantTemperatureMilliC": StatType(
        6, lambda p: {"coolant_c": float(p["value"]) / 1000}),
    "batteryMilliVolts": StatType(7, lambda p: {"battery_v": float(p["value"]) / 1000}),
}


@dataclass
class Conversion:
    """Samples per vendor vehicle id, and what could not be converted."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    invalid: list[tuple[str, str, Any]] = field(default_factory=list)
    """(vehicle id, reason, point) of points that violate the wire contract."""


def convert_vehicle_stats(vehicles: Sequence[Mapping[str, Any]]) -> Conversion:
    """Turn the `data` of a feed page into wire-contract samples per Samsara vehicle id."""
    out = Conversion()
    for vehicle in vehicles:
        vid = str(vehicle.get("id", ""))
        for name, points in vehicle.items():
            kind = STAT_TYPES.get(name)
            if kind is None or not isinstance(points, list):
                continue
            for point in points:
                try:
                    t_ms = _t_ms(point["time"])
                    fields = {"seq": vendor_seq(t_ms, kind.slot), "t_ms": t_ms,
                              **kind.convert(point)}
                    sample = make_sample(fields)
                except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
                    out.invalid.append((vid, f"{name}: {exc}", point))
                    continue
                out.samples.setdefault(vid, []).append(sample)
    return out
