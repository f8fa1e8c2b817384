"""How Smartcar bodies become wire-contract samples: the signal table of each API version,
and the samples in webhook deliveries of either format."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from api.integrations.publisher import make_sample, vendor_seq
from api.integrations.smartcar.client import data_age_ms
from core.protocol import Sample

log = logging.getLogger(__name__)

_MILES_KM = 1.609344


# API 2.0: signal -> (sample fields from the 2.0 body, sequence slot). Unknown fields are ignored.
def _location(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"lat_deg": float(body["latitude"]), "lon_deg": float(body["longitude"])}


def _odometer(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"odometer_km": float(body["distance"])}


def _fuel(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"fuel_pct": float(body["percentRemaining"]) * 100}


def _battery(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schema stores an EV's state of charge as fuel_level_pct (0002_hypertables.sql).
    return {"fuel_pct": float(body["percentRemaining"]) * 100,
            "extra": {"ev_range_km": float(body.get("range") or 0.0)}}


SIGNALS: dict[str, tuple[Any, int]] = {
    "location": (_location, 0),
    "odometer": (_odometer, 2),
    "fuel": (_fuel, 3),
    "battery": (_battery, 5),
}


def to_sample(signal: str, body: Mapping[str, Any], t_ms: int) -> Sample:
    """One wire-contract sample from one Smartcar 2.0 signal body."""
    convert, slot = SIGNALS[signal]
    return make_sample({"seq": vendor_seq(t_ms, slot), "t_ms": t_ms, **convert(body)})


def webhook_samples(payload: Mapping[str, Any]) -> list[tuple[str, Sample]]:
    """Samples in a 2.0 webhook delivery: ``payload.vehicles[].data[]`` with path and body."""
    out: list[tuple[str, Sample]] = []
    vehicles: Sequence[Mapping[str, Any]] = (payload.get("payload") or {}).get("vehicles") or []
    for vehicle in vehicles:
        vid = str(vehicle.get("vehicleId") or "")
        for item in vehicle.get("data") or []:
            signal = str(item.get("path") or "").strip("/")
            if signal not in SIGNALS or item.get("code", 200) != 200:
                continue
            t_ms = data_age_ms(item.get("headers") or {}, int(time.time() * 1000))
            try:
                out.append((vid, to_sample(signal, item.get("body") or {}, t_ms)))
            except (KeyError, TypeError, ValueError, msgspec.ValidationError):
                continue
    return out


# API v3: signal code -> (sample fields from the signal body, sequence slot). The slots are
# those of the 2.0 table (`SIGNALS` above), so both versions give a vehicle the same sequence
# numbers for the same kind of reading. Codes not listed are ignored.
def _distance_km(body: Mapping[str, Any]) -> float:
    value = float(body["value"])
    return value * _MILES_KM if str(body.get("unit", "")).lower() in ("miles", "mi") else value


def _v3_location(body: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"lat_deg": float(body["latitude"]),
                              "lon_deg": float(body["longitude"])}
    heading = body.get("heading")
    # An out-of-range heading must not cost the position: it is dropped on its own.
    if isinstance(heading, int | float) and 0 <= heading <= 360:
        fields["heading_deg"] = float(heading)
    return fields


def _v3_odometer(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"odometer_km": _distance_km(body)}


def _v3_fuel(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"fuel_pct": float(body["value"])}


def _soc(body: Mapping[str, Any]) -> dict[str, Any]:
    # The schema stores an EV's state of charge as fuel_level_pct (0002_hypertables.sql).
    return {"fuel_pct": float(body["value"])}


V3_SIGNALS: dict[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], int]] = {
    "location-preciselocation": (_v3_location, 0),
    "odometer-traveleddistance": (_v3_odometer, 2),
    "internalcombustionengine-fuellevel": (_v3_fuel, 3),
    "tractionbattery-stateofcharge": (_soc, 5),
}
LOCATION_CODE = "location-preciselocation"


def _epoch_ms(value: Any, fallback_ms: int) -> int:
    """Epoch seconds or milliseconds (both appear in Smartcar's v3 examples) -> ms."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return fallback_ms
    return int(number if number > 1e11 else number * 1000)


def signal_sample(code: str, body: Mapping[str, Any], t_ms: int) -> Sample:
    """One wire-contract sample from one v3 signal body (raises on unusable bodies)."""
    convert, slot = V3_SIGNALS[code]
    return make_sample({"seq": vendor_seq(t_ms, slot), "t_ms": t_ms, **convert(body)})


def signals_to_samples(items: Iterable[Mapping[str, Any]], *, default_ms: int
                       ) -> tuple[list[Sample], dict[str, Any] | None]:
    """Samples from ``/signals`` items, and the location (for the cache) if present.

    An item whose ``status.value`` is not SUCCESS (e.g. a signal the make does not support)
    or whose body fails the wire contract's range checks is skipped with a log line.
    """
    samples: list[Sample] = []
    location: dict[str, Any] | None = None
    for item in items:
        attrs = item.get("attributes") or item
        code = str(attrs.get("code") or "")
        if code not in V3_SIGNALS:
            continue
        status = str((attrs.get("status") or {}).get("value") or "SUCCESS")
        if status != "SUCCESS":
            continue
        meta = item.get("meta") or {}
        t_ms = _epoch_ms(meta.get("oemUpdatedAt") or meta.get("retrievedAt"), default_ms)
        body = attrs.get("body") or {}
        try:
            samples.append(signal_sample(code, body, t_ms))
        except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
            log.warning("smartcar v3 %s: unusable body: %s", code, exc)
            continue
        if code == LOCATION_CODE:
            location = {"latitude": float(body["latitude"]),
                        "longitude": float(body["longitude"]), "t_ms": t_ms}
    return samples, location


def webhook_v3_samples(payload: Mapping[str, Any]) -> list[tuple[str, Sample]]:
    """Samples in a v3 ``VEHICLE_STATE`` delivery (one vehicle per delivery)."""
    if str(payload.get("eventType") or "").upper() != "VEHICLE_STATE":
        return []
    data = payload.get("data") or {}
    vid = str((data.get("vehicle") or {}).get("id") or "")
    if not vid:
        return []
    delivered = _epoch_ms((payload.get("meta") or {}).get("deliveredAt"),
                          int(time.time() * 1000))
    samples, _ = signals_to_samples(data.get("signals") or [], default_ms=delivered)
    return [(vid, s) for s in samples]
