"""Where simulated vehicles drive: a seeded synthetic street grid or GeoJSON LineString routes.

A route source hands the vehicle model one *leg* at a time: a list of waypoints in a local
metric frame (metres east/north of the area's centre). Every waypoint carries the speed limit
of the segment that starts there, the speed at which it may be passed (turns), and how long
the vehicle stops there (traffic lights, stop signs, deliveries). The model only follows legs;
all street knowledge lives here.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from simulators.errors import RouteError

EARTH_RADIUS_M = 6_371_008.8
TURN_SPEED_KPH = 20.0
"""Speed at which a vehicle passes a corner of 60 degrees or more."""


@dataclass(frozen=True, slots=True)
class Projection:
    """Equirectangular projection around a centre: good to centimetres over a city."""

    lat0_deg: float
    lon0_deg: float
    _m_per_deg_lat: float = field(init=False, repr=False, compare=False)
    _m_per_deg_lon: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        per_lat = math.pi * EARTH_RADIUS_M / 180.0
        object.__setattr__(self, "_m_per_deg_lat", per_lat)
        object.__setattr__(self, "_m_per_deg_lon",
                           per_lat * math.cos(math.radians(self.lat0_deg)))

    def to_xy(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """Metres east and north of the centre."""
        return ((lon_deg - self.lon0_deg) * self._m_per_deg_lon,
                (lat_deg - self.lat0_deg) * self._m_per_deg_lat)

    def to_latlon(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Latitude and longitude (degrees) of a point given in metres from the centre."""
        return (self.lat0_deg + y_m / self._m_per_deg_lat,
                self.lon0_deg + x_m / self._m_per_deg_lon)


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A point of a leg; `limit_kph` applies to the segment that starts here."""

    x_m: float
    y_m: float
    limit_kph: float
    pass_kph: float = 1000.0
    """Highest speed at which the vehicle may pass this point (0 at the end of a leg)."""
    stop_s: float = 0.0
    """How long the vehicle stands still here (red light, stop sign, delivery)."""


class RouteSource(Protocol):
    """What the vehicle model needs from a road network."""

    @property
    def projection(self) -> Projection:
        """The local metric frame of the area."""
        ...

    def start(self, rng: random.Random) -> tuple[float, float]:
        """A starting position (metres)."""
        ...

    def next_leg(self, rng: random.Random, x_m: float, y_m: float,
                 leg_number: int) -> list[Waypoint]:
        """Leg number `leg_number` (0, 1, ...) of one vehicle, beginning at (or next to) the
        given position; at least two points."""
        ...


@dataclass(frozen=True)
class SyntheticCity:
    """A seeded grid city: residential streets (30/50 km/h), arterials every 4th street
    (60/70 km/h), traffic lights where arterials cross, stop signs on some side streets.

    The layout depends only on `city_seed`, so every vehicle of a fleet shares one city.
    """

    center_lat_deg: float = 48.1372
    center_lon_deg: float = 11.5756
    half_size_m: float = 2500.0
    block_m: float = 200.0
    city_seed: int = 1
    trip_nodes: tuple[int, int] = (8, 40)
    """Length of one trip in intersections (min, max)."""
    red_light_probability: float = 0.45
    delivery_stop_probability: float = 0.02
    projection: Projection = field(init=False)

    def __post_init__(self) -> None:
        if self.block_m <= 10 or self.half_size_m < 2 * self.block_m:
            raise RouteError("a city needs blocks of more than 10 m and at least 2 blocks")
        object.__setattr__(self, "projection",
                           Projection(self.center_lat_deg, self.center_lon_deg))
        # the layout is computed once: every vehicle's every trip looks it up
        n = self._n
        limits = {(axis, k): self._layout_limit_kph(axis, k)
                  for axis in (0, 1) for k in range(-n, n + 1)}
        stops = frozenset((i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)
                          if _hash01(self.city_seed, i, j, 3) < 0.25)
        object.__setattr__(self, "_limits", limits)
        object.__setattr__(self, "_stop_signs", stops)

    @property
    def _n(self) -> int:
        return int(self.half_size_m // self.block_m)

    def _layout_limit_kph(self, axis: int, index: int) -> float:
        if index % 4 == 0:
            return 70.0 if _hash01(self.city_seed, axis, index, 1) < 0.3 else 60.0
        return 50.0 if _hash01(self.city_seed, axis, index, 2) < 0.6 else 30.0

    def _street_limit_kph(self, axis: int, index: int) -> float:
        limits: dict[tuple[int, int], float] = self.__dict__["_limits"]
        return limits[(axis, index)]

    def _is_arterial(self, index: int) -> bool:
        return index % 4 == 0

    def _has_stop_sign(self, i: int, j: int) -> bool:
        return (i, j) in self.__dict__["_stop_signs"]

    def start(self, rng: random.Random) -> tuple[float, float]:
        """A random intersection of the grid."""
        n = self._n
        return (rng.randint(-n, n) * self.block_m, rng.randint(-n, n) * self.block_m)

    def next_leg(self, rng: random.Random, x_m: float, y_m: float,
                 leg_number: int = 0) -> list[Waypoint]:
        """A random walk over the grid from the intersection nearest to the position."""
        n = self._n
        i = max(-n, min(n, round(x_m / self.block_m)))
        j = max(-n, min(n, round(y_m / self.block_m)))
        nodes = [(i, j)]
        direction = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
        for _ in range(rng.randint(*self.trip_nodes)):
            options = []
            for cand, weight in ((direction, 6), ((direction[1], -direction[0]), 2),
                                 ((-direction[1], direction[0]), 2)):
                ni, nj = i + cand[0], j + cand[1]
                if -n <= ni <= n and -n <= nj <= n:
                    options.append((cand, weight))
            if not options:  # a corner of the city: turn back
                options = [((-direction[0], -direction[1]), 1)]
            direction = rng.choices([o[0] for o in options], [o[1] for o in options])[0]
            i, j = i + direction[0], j + direction[1]
            nodes.append((i, j))
        return self._waypoints(rng, nodes)

    def _waypoints(self, rng: random.Random, nodes: list[tuple[int, int]]) -> list[Waypoint]:
        points: list[Waypoint] = []
        for k, (i, j) in enumerate(nodes):
            last = k == len(nodes) - 1
            if last:
                limit = points[-1].limit_kph
            else:
                ni, nj = nodes[k + 1]
                # moving east-west runs along street j (axis 0), north-south along street i
                limit = (self._street_limit_kph(0, j) if nj == j else self._street_limit_kph(1, i))
            pass_kph, stop_s = 1000.0, 0.0
            if k > 0 and not last:
                pi_, pj = nodes[k - 1]
                ni, nj = nodes[k + 1]
                turning = (ni - i, nj - j) != (i - pi_, j - pj)
                if turning:
                    pass_kph = TURN_SPEED_KPH
                on_arterial = self._is_arterial(i) if pi_ == i else self._is_arterial(j)
                if self._is_arterial(i) and self._is_arterial(j):
                    if rng.random() < self.red_light_probability:
                        stop_s = rng.uniform(8.0, 45.0)
                elif not on_arterial and self._has_stop_sign(i, j):
                    stop_s = rng.uniform(1.0, 3.0)
                if rng.random() < self.delivery_stop_probability:
                    stop_s = max(stop_s, rng.uniform(60.0, 240.0))
            if last:
                pass_kph = 0.0
            points.append(Waypoint(i * self.block_m, j * self.block_m, limit, pass_kph, stop_s))
        return points


@dataclass(frozen=True)
class GeoJsonRoutes:
    """Routes from GeoJSON LineStrings, driven in order, back and forth.

    A Feature may carry `speed_limit_kph` in its properties (default `default_limit_kph`);
    corners sharper than 60 degrees are taken at 20 km/h.
    """

    lines: tuple[tuple[tuple[float, float], ...], ...]
    """Each line as (lat, lon) points."""
    limits_kph: tuple[float, ...]
    projection: Projection = field(init=False)

    def __post_init__(self) -> None:
        if not self.lines or any(len(line) < 2 for line in self.lines):
            raise RouteError("a GeoJSON route needs LineStrings of at least two points")
        lat0, lon0 = self.lines[0][0]
        object.__setattr__(self, "projection", Projection(lat0, lon0))

    @classmethod
    def load(cls, source: str | Path | dict[str, Any],
             default_limit_kph: float = 50.0) -> GeoJsonRoutes:
        """Read a LineString, Feature or FeatureCollection (a dict, JSON text or a file)."""
        if isinstance(source, dict):
            doc = source
        else:
            text = str(source)
            try:
                raw = text if text.lstrip().startswith("{") else Path(text).read_text()
                doc = json.loads(raw)
            except (OSError, ValueError) as exc:
                raise RouteError(f"cannot read GeoJSON route {text[:80]!r}: {exc}") from exc
        lines: list[tuple[tuple[float, float], ...]] = []
        limits: list[float] = []
        for geometry, props in _linestrings(doc):
            try:
                coords = tuple((float(c[1]), float(c[0])) for c in geometry["coordinates"])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise RouteError(f"bad LineString coordinates: {exc}") from exc
            lines.append(coords)
            limits.append(float(props.get("speed_limit_kph", default_limit_kph)))
        return cls(tuple(lines), tuple(limits))

    def start(self, rng: random.Random) -> tuple[float, float]:
        """The first point of the first line."""
        lat, lon = self.lines[0][0]
        return self.projection.to_xy(lat, lon)

    def next_leg(self, rng: random.Random, x_m: float, y_m: float,
                 leg_number: int = 0) -> list[Waypoint]:
        """The lines in order, then in reverse order backwards, and so on; a straight
        connector leads from the position to the start of the line when they differ."""
        count = len(self.lines)
        backwards = (leg_number // count) % 2 == 1
        index = count - 1 - leg_number % count if backwards else leg_number % count
        pts = [self.projection.to_xy(lat, lon) for lat, lon in self.lines[index]]
        if backwards:
            pts.reverse()
        limit = self.limits_kph[index]
        if math.dist(pts[0], (x_m, y_m)) > 1.0:
            pts.insert(0, (x_m, y_m))
        return polyline_leg(pts, limit)


def polyline_leg(points: Sequence[tuple[float, float]], limit_kph: float) -> list[Waypoint]:
    """Waypoints along a polyline with corner speeds and a stop at the end."""
    out: list[Waypoint] = []
    for k, (x, y) in enumerate(points):
        pass_kph = 1000.0
        if k == len(points) - 1:
            pass_kph = 0.0
        elif k > 0:
            a = math.atan2(y - points[k - 1][1], x - points[k - 1][0])
            b = math.atan2(points[k + 1][1] - y, points[k + 1][0] - x)
            turn = abs((math.degrees(b - a) + 180.0) % 360.0 - 180.0)
            if turn >= 60.0:
                pass_kph = TURN_SPEED_KPH
            elif turn >= 25.0:
                pass_kph = 40.0
        out.append(Waypoint(x, y, limit_kph, pass_kph))
    return out


def _linestrings(doc: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    kind = doc.get("type")
    if kind == "LineString":
        return [(doc, {})]
    if kind == "Feature":
        geometry = doc.get("geometry") or {}
        if geometry.get("type") != "LineString":
            return []
        return [(geometry, doc.get("properties") or {})]
    if kind == "FeatureCollection":
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for feature in doc.get("features", []):
            found.extend(_linestrings(feature))
        return found
    raise RouteError(f"GeoJSON type {kind!r} is not LineString, Feature or FeatureCollection")


def _hash01(*parts: int) -> float:
    """A stable pseudo-random number in [0, 1) from integers (layout must not use the rng)."""
    h = 2166136261
    for p in parts:
        for byte in int(p).to_bytes(8, "little", signed=True):
            h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h / 2**32
