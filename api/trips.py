"""Trips and stops from a day of samples (motion and ignition), as a pure function.

A trip starts at the first moving sample (speed >= `moving_kph`, ignition not off) and ends
when the ignition goes off, when the vehicle stands still for `min_stop_s`, or at a data gap
longer than `max_gap_s`. Stops are the pauses between trips that last at least `min_stop_s`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Point:
    """One telemetry sample as trip detection needs it."""

    time: datetime
    speed_kph: float | None
    ignition: bool | None
    lat: float | None = None
    lon: float | None = None
    odometer_km: float | None = None


@dataclass(frozen=True)
class TripSettings:
    """Thresholds of trip detection."""

    moving_kph: float = 5.0
    min_stop_s: float = 180.0
    min_trip_s: float = 60.0
    max_gap_s: float = 300.0


@dataclass
class Trip:
    """One journey."""

    start: Point
    end: Point
    max_speed_kph: float = 0.0
    distance_km: float = 0.0
    points: list[Point] = field(default_factory=list, repr=False)

    @property
    def duration_s(self) -> float:
        """Length of the trip, seconds."""
        return (self.end.time - self.start.time).total_seconds()

    def as_json(self) -> dict[str, object]:
        """API representation."""
        return {"start_time": self.start.time, "end_time": self.end.time,
                "duration_s": round(self.duration_s, 1),
                "distance_km": round(self.distance_km, 3),
                "max_speed_kph": round(self.max_speed_kph, 1),
                "avg_speed_kph": round(self.distance_km / self.duration_s * 3600, 1)
                if self.duration_s > 0 else 0.0,
                "start": _pos(self.start), "end": _pos(self.end)}


@dataclass(frozen=True)
class Stop:
    """A pause between two trips (or before the first / after the last)."""

    start_time: datetime
    end_time: datetime
    lat: float | None
    lon: float | None

    def as_json(self) -> dict[str, object]:
        """API representation."""
        return {"start_time": self.start_time, "end_time": self.end_time,
                "duration_s": round((self.end_time - self.start_time).total_seconds(), 1),
                "lat": self.lat, "lon": self.lon}


def _pos(p: Point) -> dict[str, float | None]:
    return {"lat": p.lat, "lon": p.lon}


def haversine_km(a: Point, b: Point) -> float:
    """Great-circle distance between two samples with positions, km (0 without)."""
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        return 0.0
    r = 6371.0088
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(min(1.0, math.sqrt(h)))


def _distance(points: Sequence[Point]) -> float:
    odo = [p.odometer_km for p in points if p.odometer_km is not None]
    if len(odo) >= 2 and odo[-1] >= odo[0]:
        return odo[-1] - odo[0]
    return sum(haversine_km(a, b) for a, b in itertools.pairwise(points))


def detect_trips(samples: Iterable[Point], settings: TripSettings | None = None
                 ) -> tuple[list[Trip], list[Stop]]:
    """Split time-ordered samples into trips and the stops between them."""
    s = settings or TripSettings()
    trips: list[Trip] = []
    current: list[Point] = []
    last_moving: Point | None = None
    prev: Point | None = None

    def close(end: Point) -> None:
        nonlocal current, last_moving
        pts = [p for p in current if p.time <= end.time]
        if pts and (end.time - pts[0].time).total_seconds() >= s.min_trip_s:
            trip = Trip(start=pts[0], end=end, points=pts,
                        max_speed_kph=max((p.speed_kph or 0.0) for p in pts),
                        distance_km=_distance(pts))
            trips.append(trip)
        current, last_moving = [], None

    for p in samples:
        moving = (p.speed_kph or 0.0) >= s.moving_kph and p.ignition is not False
        if current and prev is not None and \
                (p.time - prev.time).total_seconds() > s.max_gap_s:
            close(prev)
        if current:
            current.append(p)
            if moving:
                last_moving = p
            elif p.ignition is False:
                close(p)
            elif last_moving is not None and \
                    (p.time - last_moving.time).total_seconds() >= s.min_stop_s:
                # The trip ended where the vehicle last moved.
                close(last_moving)
        elif moving:
            current, last_moving = [p], p
        prev = p
    if current and last_moving is not None:
        close(last_moving)
    stops = [Stop(a.end.time, b.start.time, a.end.lat, a.end.lon)
             for a, b in itertools.pairwise(trips)
             if (b.start.time - a.end.time).total_seconds() >= s.min_stop_s]
    return trips, stops
