"""GPS sanity filters, like Traccar's ``filter.*`` keys: pure functions over samples.

Time filters (`check_time`) and the duplicate filter drop the whole sample; position filters
(`check_position`) only strip the position (`strip_position`), so the engine signals of a
sample with a bad fix are still stored. The caller records every removal as a dead letter.
"""

from __future__ import annotations

import math

import msgspec

from core.protocol import Sample
from stream.config import FilterSettings

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres: plenty for an implied-speed plausibility check."""
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
BOUND_MARGIN = 1 - 1e-9
"""Keeps the shortcut of `check_position` strictly inside the limit, clear of rounding."""
MIN_IMPLIED_DT_S = 1.0
"""Implied speed divides by at least this, so fix jitter between 10 Hz samples is not a jump."""


class Fix(msgspec.Struct, frozen=True, gc=False):
    """The last accepted position of a vehicle (a struct: one is made per fix)."""

    t_ms: int
    lat_deg: float
    lon_deg: float


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance, metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def check_time(sample: Sample, received_ms: int, cfg: FilterSettings) -> str | None:
    """Why the sample's timestamp is implausible, relative to when it was received, or None."""
    ahead_s = (sample.t_ms - received_ms) / 1000.0
    if cfg.max_future_s and ahead_s > cfg.max_future_s:
        return (f"future: stamped {ahead_s:.0f} s after it was received "
                f"(max {cfg.max_future_s:.0f} s)")
    if cfg.max_past_s and -ahead_s > cfg.max_past_s:
        return f"past: stamped {-ahead_s:.0f} s before it was received (max {cfg.max_past_s:.0f} s)"
    return None


def is_duplicate(sample: Sample, previous: Sample | None) -> bool:
    """Same time and same position as the previous sample: a repeated fix under a new seq."""
    return (previous is not None and sample.lat_deg is not None
            and sample.t_ms == previous.t_ms
            and sample.lat_deg == previous.lat_deg and sample.lon_deg == previous.lon_deg)


def check_position(sample: Sample, last: Fix | None,  # noqa: PLR0911 - one return per filter
                   cfg: FilterSettings) -> str | None:
    """Why the sample's position cannot be trusted, or None (also None without a position)."""
    lat, lon = sample.lat_deg, sample.lon_deg
    if lat is None or lon is None:
        return None
    if cfg.invalid_fix and sample.gps_fix == 0:
        return "invalid_fix: gps_fix is 0"
    if cfg.zero_position and lat == 0.0 and lon == 0.0:
        return "zero_position: 0,0"
    if cfg.max_hdop and sample.hdop is not None and sample.hdop > cfg.max_hdop:
        return f"hdop: {sample.hdop} > {cfg.max_hdop}"
    if cfg.min_satellites and sample.sats is not None and sample.sats < cfg.min_satellites:
        return f"satellites: {sample.sats} < {cfg.min_satellites}"
    if cfg.max_implied_speed_kph and last is not None:
        dt_s = max(abs(sample.t_ms - last.t_ms) / 1000.0, MIN_IMPLIED_DT_S)
        # Going along the meridian and then along the parallel is never shorter than the
        # great circle, and never longer than R(|dlat| + |dlon|): within that bound the
        # fix is plausible without the trigonometry (almost every fix, every sample).
        bound_m = (abs(lat - last.lat_deg) + abs(lon - last.lon_deg)) * METRES_PER_DEGREE
        if bound_m / dt_s * 3.6 <= cfg.max_implied_speed_kph * BOUND_MARGIN:
            return None
        kph = haversine_m(last.lat_deg, last.lon_deg, lat, lon) / dt_s * 3.6
        if kph > cfg.max_implied_speed_kph:
            return (f"implied_speed: {kph:.0f} km/h from the last fix "
                    f"(max {cfg.max_implied_speed_kph:.0f})")
    return None


def strip_position(sample: Sample) -> Sample:
    """The sample without its GPS fields; engine signals (and OBD speed) are kept."""
    return msgspec.structs.replace(sample, lat_deg=None, lon_deg=None, alt_m=None,
                                   heading_deg=None, hdop=None, sats=None)
