"""Small geodesy helpers: WGS84 radii, a local metric frame, great-circle densification.

Fences are stored and tested in longitude/latitude (WGS84 degrees). Anything measured in
metres (circle radii, corridor widths) is built in a `LocalFrame`: an equirectangular plane
tangent at the fence, scaled by the ellipsoid's radii of curvature at its origin. Over a
city-scale fence (a few kilometres) its distance error stays in the centimetres, far below GPS
noise and below the 64-gon approximation of a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

WGS84_A_M = 6_378_137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
MEAN_EARTH_RADIUS_M = 6_371_008.8
"""IUGG mean radius; used for great-circle lengths (the sphere PostGIS geography edges follow)."""

FloatArray = NDArray[np.float64]


def radii_of_curvature_m(lat_deg: float) -> tuple[float, float]:
    """Meridional (north-south) and prime-vertical (east-west) radii of curvature, metres."""
    s = math.sin(math.radians(lat_deg))
    w = math.sqrt(1 - WGS84_E2 * s * s)
    meridional = WGS84_A_M * (1 - WGS84_E2) / (w * w * w)
    prime_vertical = WGS84_A_M / w
    return meridional, prime_vertical


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """A local metric plane: x east, y north, metres from (lon0_deg, lat0_deg)."""

    lon0_deg: float
    lat0_deg: float
    m_per_deg_x: float
    m_per_deg_y: float

    @classmethod
    def at(cls, lon_deg: float, lat_deg: float) -> LocalFrame:
        """The frame tangent at a point."""
        meridional, prime_vertical = radii_of_curvature_m(lat_deg)
        rad = math.pi / 180
        # Near the poles the east-west scale vanishes; clamp so the inverse stays finite.
        cos_lat = max(math.cos(math.radians(lat_deg)), 1e-6)
        return cls(lon_deg, lat_deg, prime_vertical * cos_lat * rad, meridional * rad)

    def to_local(self, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Degrees to metres in this frame."""
        dlon = (np.asarray(lon, dtype=np.float64) - self.lon0_deg + 180.0) % 360.0 - 180.0
        dlat = np.asarray(lat, dtype=np.float64) - self.lat0_deg
        return dlon * self.m_per_deg_x, dlat * self.m_per_deg_y

    def to_lonlat(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Metres in this frame to degrees."""
        return (self.lon0_deg + np.asarray(x) / self.m_per_deg_x,
                self.lat0_deg + np.asarray(y) / self.m_per_deg_y)

    def geometry_to_local(self, geom: BaseGeometry) -> BaseGeometry:
        """A lon/lat geometry in this frame's metres."""
        def fn(xy: FloatArray) -> FloatArray:
            x, y = self.to_local(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])
        return shapely.transform(geom, fn)

    def geometry_to_lonlat(self, geom: BaseGeometry) -> BaseGeometry:
        """A geometry in this frame's metres back to lon/lat."""
        def fn(xy: FloatArray) -> FloatArray:
            lon, lat = self.to_lonlat(xy[:, 0], xy[:, 1])
            return np.column_stack([lon, lat])
        return shapely.transform(geom, fn)


def _unit_vectors(lon: FloatArray, lat: FloatArray) -> FloatArray:
    lam, phi = np.radians(lon), np.radians(lat)
    cos_phi = np.cos(phi)
    return np.column_stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)])


def great_circle_m(lon0: FloatArray, lat0: FloatArray, lon1: FloatArray,
                   lat1: FloatArray) -> FloatArray:
    """Great-circle distance on the mean sphere, metres (haversine)."""
    p0, p1 = np.radians(lat0), np.radians(lat1)
    dp, dl = p1 - p0, np.radians(np.asarray(lon1) - np.asarray(lon0))
    h = np.sin(dp / 2) ** 2 + np.cos(p0) * np.cos(p1) * np.sin(dl / 2) ** 2
    return np.asarray(2 * MEAN_EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))),
                      dtype=np.float64)


def great_circle_m_scalar(lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """`great_circle_m` for one pair in plain Python: cheaper than numpy for a single value."""
    p0, p1 = math.radians(lat0), math.radians(lat1)
    h = (math.sin((p1 - p0) / 2) ** 2
         + math.cos(p0) * math.cos(p1) * math.sin(math.radians(lon1 - lon0) / 2) ** 2)
    return 2 * MEAN_EARTH_RADIUS_M * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def _densify_ring(coords: FloatArray, max_edge_m: float) -> FloatArray:
    """Split long edges of a ring or line at points on the great circle between their ends."""
    a, b = coords[:-1], coords[1:]
    length = great_circle_m(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    pieces = np.maximum(np.ceil(length / max_edge_m).astype(np.int64), 1)
    if int(pieces.max(initial=1)) == 1:
        return coords
    edge = np.repeat(np.arange(len(a)), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    frac = (np.arange(int(pieces.sum())) - first) / pieces[edge]
    va, vb = _unit_vectors(a[:, 0], a[:, 1]), _unit_vectors(b[:, 0], b[:, 1])
    omega = np.arccos(np.clip(np.einsum("ij,ij->i", va, vb), -1.0, 1.0))[edge]
    sin_omega = np.sin(omega)
    safe = sin_omega > 1e-15
    wa = np.where(safe, np.sin((1 - frac) * omega) / np.where(safe, sin_omega, 1.0), 1 - frac)
    wb = np.where(safe, np.sin(frac * omega) / np.where(safe, sin_omega, 1.0), frac)
    v = wa[:, None] * va[edge] + wb[:, None] * vb[edge]
    lon = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    lat = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    # Keep the original vertices bit for bit: only the inserted points are computed.
    at_vertex = frac == 0
    lon[at_vertex] = a[edge[at_vertex], 0]
    lat[at_vertex] = a[edge[at_vertex], 1]
    out = np.column_stack([lon, lat])
    return np.vstack([out, coords[-1:]])


def densify_geodesic(geom: BaseGeometry, max_edge_m: float) -> BaseGeometry:
    """Polygon, MultiPolygon or LineString whose edges are at most `max_edge_m` long, on
    great circles (other geometries are returned as they are).

    PostGIS geography joins vertices by great-circle arcs; a planar test in lon/lat joins them
    by straight lines. Over a 100 m edge the two differ by well under a millimetre.
    """
    if isinstance(geom, shapely.LineString):
        return shapely.LineString(_densify_ring(shapely.get_coordinates(geom), max_edge_m))
    if isinstance(geom, shapely.Polygon):
        shell = _densify_ring(shapely.get_coordinates(geom.exterior), max_edge_m)
        holes = [_densify_ring(shapely.get_coordinates(r), max_edge_m) for r in geom.interiors]
        return shapely.Polygon(shell, holes)
    if isinstance(geom, shapely.MultiPolygon):
        parts = [densify_geodesic(p, max_edge_m) for p in geom.geoms]
        return shapely.MultiPolygon(parts)
    return geom
