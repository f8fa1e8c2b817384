"""Fences and positions for the geo tests, built in metres around one city point."""

from __future__ import annotations

import math
import uuid

import numpy as np
import shapely

from geo.fence import Fence
from geo.geodesy import LocalFrame

CITY = LocalFrame.at(13.40, 52.52)


def lonlat(x_m: float, y_m: float, frame: LocalFrame = CITY) -> tuple[float, float]:
    """A point `x_m` east and `y_m` north of the frame's origin, as lon/lat."""
    lon, lat = frame.to_lonlat(np.array([x_m]), np.array([y_m]))
    return float(lon[0]), float(lat[0])


def square_m(cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    """A square ring in local metres."""
    return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
            (cx - half, cy + half)]


def polygon_fence(tenant: uuid.UUID, shell_m: list[tuple[float, float]],
                  holes_m: list[list[tuple[float, float]]] | None = None,
                  **rules: object) -> Fence:
    """A polygon fence from rings in local metres."""
    geom = CITY.geometry_to_lonlat(shapely.Polygon(shell_m, holes_m or []))
    return Fence.polygon(id=uuid.uuid4(), tenant_id=tenant, name="poly", geometry=geom,
                         **rules)


def circle_fence(tenant: uuid.UUID, cx: float, cy: float, radius_m: float,
                 **rules: object) -> Fence:
    """A circle fence centred `cx`, `cy` metres from the city origin."""
    lon, lat = lonlat(cx, cy)
    return Fence.circle(id=uuid.uuid4(), tenant_id=tenant, name="circle", lon_deg=lon,
                        lat_deg=lat, radius_m=radius_m, **rules)


def ring_points(lon: float, lat: float, distance_m: float,
                n: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """`n` points at `distance_m` around a lon/lat centre (local frame at the centre)."""
    frame = LocalFrame.at(lon, lat)
    ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return frame.to_lonlat(distance_m * np.cos(ang), distance_m * np.sin(ang))
