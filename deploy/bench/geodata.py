"""Synthetic city-scale fences and positions for the geofence benchmark and tests.

A 40 x 40 km city (centred on Berlin by default) with several tenants. Fences cluster around
a few hot spots like depots and customer areas do: polygons 80 m - 1.5 km across (some with
holes, some multipolygons), circles of 50 - 800 m radius and corridors (routes) 1 - 8 km long
and 20 - 120 m wide. Half the positions are spread over the whole city, half are near a fence
of their own tenant, so boundary cells and exact tests get real work.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import numpy as np
import shapely

from geo.geodesy import LocalFrame

CITY_LON_DEG = 13.40
CITY_LAT_DEG = 52.52
CITY_HALF_M = 20_000.0


@dataclass(frozen=True, slots=True)
class FenceSpec:
    """One fence as drawn, before any buffering: what an operator would insert."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    kind: str
    geometry: shapely.Geometry
    """lon/lat: (Multi)Polygon, circle centre Point or corridor LineString."""
    radius_m: float | None = None
    corridor_width_m: float | None = None
    speed_limit_kph: float | None = None
    dwell_s: int | None = None


@dataclass(frozen=True, slots=True)
class Positions:
    """Positions with their tenant (as index into `tenants`)."""

    tenant: np.ndarray
    lon: np.ndarray
    lat: np.ndarray


def _star(rng: np.random.Generator, radius_m: float, n: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius_m * rng.uniform(0.6, 1.0, n)
    return np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def make_fences(rng: np.random.Generator, tenants: list[uuid.UUID], count: int,
                frame: LocalFrame | None = None) -> list[FenceSpec]:
    """`count` fences spread over `tenants`, in the city around `frame`'s origin."""
    frame = frame or LocalFrame.at(CITY_LON_DEG, CITY_LAT_DEG)
    hotspots = rng.uniform(-CITY_HALF_M * 0.8, CITY_HALF_M * 0.8, size=(12, 2))
    out: list[FenceSpec] = []
    for i in range(count):
        tenant = tenants[i % len(tenants)]
        if rng.random() < 0.7:
            cx, cy = hotspots[rng.integers(len(hotspots))] + rng.normal(0, 3000, 2)
        else:
            cx, cy = rng.uniform(-CITY_HALF_M, CITY_HALF_M, 2)
        cx = float(np.clip(cx, -CITY_HALF_M, CITY_HALF_M))
        cy = float(np.clip(cy, -CITY_HALF_M, CITY_HALF_M))
        roll = rng.random()
        limit = float(rng.choice([30.0, 50.0, 80.0])) if rng.random() < 0.3 else None
        dwell = int(rng.integers(60, 1800)) if rng.random() < 0.5 else None
        fid = uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i)
        if roll < 0.4:
            radius = float(math.exp(rng.uniform(math.log(50), math.log(800))))
            lon, lat = frame.to_lonlat(np.array([cx]), np.array([cy]))
            out.append(FenceSpec(fid, tenant, f"circle-{i}", "circle",
                                 shapely.Point(float(lon[0]), float(lat[0])), radius_m=radius,
                                 speed_limit_kph=limit, dwell_s=dwell))
        elif roll < 0.8:
            size = float(math.exp(rng.uniform(math.log(40), math.log(750))))
            parts = []
            n_parts = 2 if rng.random() < 0.1 else 1
            for k in range(n_parts):
                shell = _star(rng, size, int(rng.integers(6, 25)))
                shell += (cx + k * size * 3.0, cy)
                hole = _star(rng, size * 0.3, 6) + np.array([cx + k * size * 3.0, cy])
                holes = [hole.tolist()] if rng.random() < 0.2 else []
                parts.append(shapely.Polygon(shell, holes))
            geom_m = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
            geom_m = shapely.make_valid(geom_m)
            if not isinstance(geom_m, shapely.Polygon | shapely.MultiPolygon):
                geom_m = shapely.MultiPolygon([g for g in shapely.get_parts(geom_m)
                                               if isinstance(g, shapely.Polygon)])
            out.append(FenceSpec(fid, tenant, f"polygon-{i}", "polygon",
                                 frame.geometry_to_lonlat(geom_m), speed_limit_kph=limit,
                                 dwell_s=dwell))
        else:
            length = rng.uniform(1000, 8000)
            n = int(rng.integers(3, 9))
            heading = rng.uniform(0, 2 * math.pi)
            steps = length / (n - 1)
            pts = [(cx, cy)]
            for _ in range(n - 1):
                heading += rng.normal(0, 0.4)
                pts.append((pts[-1][0] + steps * math.cos(heading),
                            pts[-1][1] + steps * math.sin(heading)))
            line = frame.geometry_to_lonlat(shapely.LineString(pts))
            out.append(FenceSpec(fid, tenant, f"corridor-{i}", "corridor", line,
                                 corridor_width_m=float(rng.uniform(20, 120)),
                                 speed_limit_kph=limit, dwell_s=dwell))
    return out


def make_positions(rng: np.random.Generator, n_tenants: int, fences: list[FenceSpec],
                   zones: list[shapely.Geometry], count: int, *,
                   frame: LocalFrame | None = None) -> Positions:
    """`count` positions: half uniform over the city, half near a fence of their tenant."""
    frame = frame or LocalFrame.at(CITY_LON_DEG, CITY_LAT_DEG)
    tenant_of_fence = {f.tenant_id: None for f in fences}
    tenant_ids = list(tenant_of_fence)
    tenant = rng.integers(0, n_tenants, count)
    x = rng.uniform(-CITY_HALF_M, CITY_HALF_M, count)
    y = rng.uniform(-CITY_HALF_M, CITY_HALF_M, count)
    lon, lat = frame.to_lonlat(x, y)
    near = np.flatnonzero(rng.random(count) < 0.5)
    if fences and near.size:
        pick = rng.integers(0, len(fences), near.size)
        bounds = shapely.bounds(np.asarray(zones, dtype=object))[pick]
        cx, cy = (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2
        sx, sy = (bounds[:, 2] - bounds[:, 0]) * 0.6, (bounds[:, 3] - bounds[:, 1]) * 0.6
        lon[near] = cx + rng.normal(0, 1, near.size) * sx
        lat[near] = cy + rng.normal(0, 1, near.size) * sy
        tenant[near] = [tenant_ids.index(fences[p].tenant_id) for p in pick.tolist()]
    return Positions(tenant.astype(np.int64), lon, lat)
