"""FenceIndex against brute-force GEOS tests: holes, multipolygons, circles, corridors, jitter."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
import shapely

from deploy.bench.geodata import FenceSpec, make_fences, make_positions
from geo.config import GeofenceSettings
from geo.fence import Fence
from geo.geodesy import great_circle_m
from geo.index import FenceIndex, tenant_keys
from tests.geo.helpers import CITY, circle_fence, lonlat, polygon_fence, ring_points, square_m

T1, T2 = uuid.uuid4(), uuid.uuid4()


def _brute(fences: list[Fence], tenants: list[uuid.UUID], lon: np.ndarray,
           lat: np.ndarray) -> list[frozenset[uuid.UUID]]:
    out: list[set[uuid.UUID]] = [set() for _ in range(lon.size)]
    for f in fences:
        hit = shapely.intersects_xy(f.zone, lon, lat)
        for i in np.flatnonzero(hit):
            if tenants[i] == f.tenant_id:
                out[i].add(f.id)
    return [frozenset(s) for s in out]


def _boundary_jitter(fences: list[Fence], rng: np.random.Generator, per_fence: int,
                     scale_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Points on and within `scale_deg` of every fence's boundary (vertices and edges)."""
    xs, ys = [], []
    for f in fences:
        coords = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(f.zone)))
        pick = rng.integers(0, len(coords) - 1, per_fence)
        t = rng.random(per_fence)
        t[: per_fence // 4] = 0.0  # exactly at vertices
        p = coords[pick] + t[:, None] * (coords[pick + 1] - coords[pick])
        p += rng.normal(0, scale_deg, p.shape)
        xs.append(p[:, 0])
        ys.append(p[:, 1])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("cell_m", [10.0, 30.0, 80.0])
def test_city_matches_brute_force_including_boundary_jitter(cell_m: float) -> None:
    rng = np.random.default_rng(11)
    tenants = [T1, T2]
    specs = make_fences(rng, tenants, 150)
    fences = [_from_spec(s) for s in specs]
    index = FenceIndex.build(fences, GeofenceSettings(grid_cell_m=cell_m))
    pos = make_positions(rng, 2, specs, [f.zone for f in fences], 20_000)
    jx, jy = _boundary_jitter(fences, rng, 40, 1e-7)  # ~1 cm of GPS jitter
    kx, ky = _boundary_jitter(fences, rng, 10, 1e-12)  # nanometres: the robustness margin
    lon = np.concatenate([pos.lon, jx, kx])
    lat = np.concatenate([pos.lat, jy, ky])
    owner = [tenants[t] for t in pos.tenant.tolist()]
    owner += [tenants[i % 2] for i in range(jx.size + kx.size)]
    got = index.containing(owner, lon, lat)
    assert got == _brute(fences, owner, lon, lat)
    assert sum(1 for g in got if g) > 1000


def _from_spec(spec: object) -> Fence:
    assert isinstance(spec, FenceSpec)
    common = {"id": spec.id, "tenant_id": spec.tenant_id, "name": spec.name}
    if spec.kind == "circle":
        assert spec.radius_m is not None
        return Fence.circle(lon_deg=spec.geometry.x, lat_deg=spec.geometry.y,
                            radius_m=spec.radius_m, **common)  # type: ignore[arg-type]
    if spec.kind == "corridor":
        assert spec.corridor_width_m is not None
        return Fence.corridor(line=spec.geometry, width_m=spec.corridor_width_m,
                              **common)  # type: ignore[arg-type]
    return Fence.polygon(geometry=spec.geometry, **common)  # type: ignore[arg-type]


def test_hole_is_outside_and_its_edge_is_inside() -> None:
    fence = polygon_fence(T1, square_m(0, 0, 500), [square_m(0, 0, 200)])
    index = FenceIndex.build([fence])
    pts = [lonlat(0, 0), lonlat(199, 0), lonlat(201, 0), lonlat(499, 0), lonlat(501, 0)]
    lon, lat = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    got = index.containing([T1] * 5, lon, lat)
    assert [fence.id in g for g in got] == [False, False, True, True, False]


def test_multipolygon_parts_and_tenant_isolation() -> None:
    parts = [shapely.Polygon(square_m(-1000, 0, 100)), shapely.Polygon(square_m(1000, 0, 100))]
    geom = CITY.geometry_to_lonlat(shapely.MultiPolygon(parts))
    fence = Fence.polygon(id=uuid.uuid4(), tenant_id=T1, name="two sites", geometry=geom)
    other = polygon_fence(T2, square_m(-1000, 0, 100))
    index = FenceIndex.build([fence, other])
    pts = [lonlat(-1000, 0), lonlat(1000, 0), lonlat(0, 0)]
    lon, lat = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    assert index.containing([T1] * 3, lon, lat) == [frozenset({fence.id}), frozenset({fence.id}),
                                                     frozenset()]
    assert index.containing([T2] * 3, lon, lat) == [frozenset({other.id}), frozenset(),
                                                     frozenset()]
    # Keys from tenant_keys are the fast form of the same query.
    assert index.containing(tenant_keys([T2] * 3), lon, lat) == index.containing([T2] * 3, lon, lat)


@pytest.mark.parametrize("radius_m", [30.0, 250.0, 2000.0])
def test_circle_is_measured_in_metres(radius_m: float) -> None:
    fence = circle_fence(T1, 300, -200, radius_m)
    index = FenceIndex.build([fence])
    clon, clat = lonlat(300, -200)
    # The zone is a 64-gon inscribed in the circle: it is short of the radius by at most
    # r * (1 - cos(pi / 64)), 0.12 % of it; beyond that margin, inside means within radius.
    margin = radius_m * (1 - math.cos(math.pi / 64)) + 0.05
    for d, expect in ((radius_m - margin - 0.2, True), (radius_m + 0.2, False)):
        lon, lat = ring_points(clon, clat, d, 72)
        got = index.containing([T1] * lon.size, lon, lat)
        assert all((fence.id in g) == expect for g in got), d
        dist = great_circle_m(np.full(lon.size, clon), np.full(lon.size, clat), lon, lat)
        assert np.allclose(dist, d, rtol=5e-3)


def test_corridor_width_in_metres_and_round_ends() -> None:
    a, b = lonlat(-2000, 0), lonlat(2000, 1000)
    fence = Fence.corridor(id=uuid.uuid4(), tenant_id=T1, name="route",
                           line=shapely.LineString([a, b]), width_m=60)
    index = FenceIndex.build([fence])
    # Perpendicular offsets from the midpoint (0, 500) of the centre line.
    ux, uy = -1000 / math.hypot(4000, 1000), 4000 / math.hypot(4000, 1000)
    offsets = [0, 25, 29.5, 30.5, 40, -29.5, -30.5]
    pts = [lonlat(ux * o, 500 + uy * o) for o in offsets]
    # Beyond the end: the round cap reaches 30 m past the end point along the line.
    ex, ey = 4000 / math.hypot(4000, 1000), 1000 / math.hypot(4000, 1000)
    pts += [lonlat(2000 + ex * 29, 1000 + ey * 29), lonlat(2000 + ex * 31, 1000 + ey * 31)]
    lon, lat = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    got = [fence.id in g for g in index.containing([T1] * len(pts), lon, lat)]
    assert got == [True, True, True, False, False, True, False, True, False]


def test_large_fences_use_the_fallback_and_agree() -> None:
    rng = np.random.default_rng(3)
    specs = make_fences(rng, [T1], 60)
    fences = [_from_spec(s) for s in specs]
    small = FenceIndex.build(fences, GeofenceSettings(max_cells_per_fence=50))
    assert small.grid_stats["large_fences"] > 10
    pos = make_positions(rng, 1, specs, [f.zone for f in fences], 5000)
    owner = [T1] * pos.lon.size
    assert small.containing(owner, pos.lon, pos.lat) == _brute(fences, owner, pos.lon, pos.lat)


def test_nan_positions_and_unknown_tenants_are_in_no_fence() -> None:
    fence = polygon_fence(T1, square_m(0, 0, 100))
    index = FenceIndex.build([fence])
    lon0, lat0 = lonlat(0, 0)
    got = index.containing([T1, T1, uuid.uuid4()], np.array([math.nan, lon0, lon0]),
                           np.array([lat0, math.nan, lat0]))
    assert got == [frozenset(), frozenset(), frozenset()]
    empty = FenceIndex.build([])
    assert empty.containing([T1], np.array([lon0]), np.array([lat0])) == [frozenset()]


def test_crossed_matches_brute_force_segments() -> None:
    rng = np.random.default_rng(5)
    specs = make_fences(rng, [T1, T2], 80)
    fences = [_from_spec(s) for s in specs]
    index = FenceIndex.build(fences)
    pos = make_positions(rng, 1, specs, [f.zone for f in fences], 1500)
    step = rng.normal(0, 1, (pos.lon.size, 2)) * np.array([[0.0004, 0.0003]])  # ~25 m
    step[::3] *= 30  # and some long jumps
    step[1::3] /= 20  # and many within one grid cell
    ends = index.containing([T1] * pos.lon.size, pos.lon, pos.lat)
    ends_next = index.containing([T1] * pos.lon.size, pos.lon + step[:, 0], pos.lat + step[:, 1])
    for i, (lon0, lat0, (dx, dy)) in enumerate(zip(pos.lon, pos.lat, step, strict=True)):
        seg = shapely.LineString([(lon0, lat0), (lon0 + dx, lat0 + dy)])
        expect = frozenset(f.id for f in fences if f.tenant_id == T1 and seg.intersects(f.zone))
        assert index.crossed(T1, lon0, lat0, lon0 + dx, lat0 + dy) == expect
        known = ends[i] | ends_next[i]
        assert index.crossed(T1, lon0, lat0, lon0 + dx, lat0 + dy,
                             endpoint_fences=known) == expect - known


def test_speed_limit_is_the_lowest_applicable() -> None:
    a = polygon_fence(T1, square_m(0, 0, 100), speed_limit_kph=50.0)
    b = polygon_fence(T1, square_m(0, 0, 50), speed_limit_kph=30.0)
    c = polygon_fence(T1, square_m(0, 0, 20))
    index = FenceIndex.build([a, b, c])
    assert index.speed_limit_kph({a.id, b.id, c.id}) == 30.0
    assert index.speed_limit_kph({a.id, c.id}) == 50.0
    assert index.speed_limit_kph({c.id, uuid.uuid4()}) is None
    assert index.fence(a.id) is a
    assert index.version < FenceIndex.build([]).version


def test_rebuild_from_previous_reuses_unchanged_fences_and_stays_exact() -> None:
    rng = np.random.default_rng(8)
    specs = make_fences(rng, [T1, T2], 120)
    fences = [_from_spec(s) for s in specs]
    first = FenceIndex.build(fences)
    moved = polygon_fence(T1, square_m(30_000, 0, 300))  # widens the grid's extent
    changed = Fence.polygon(id=fences[5].id, tenant_id=fences[5].tenant_id, name="edited",
                            geometry=CITY.geometry_to_lonlat(shapely.Polygon(square_m(0, 0, 700))))
    edited = [*fences[:5], changed, *fences[6:-3], moved]
    second = FenceIndex.build(edited, previous=first)
    assert second._rasters[fences[0].id][5] is first._rasters[fences[0].id][5]
    assert second._rasters[changed.id][5] is not first._rasters[changed.id][5]
    pos = make_positions(rng, 2, specs, [f.zone for f in fences], 20_000)
    lon = np.concatenate([pos.lon, [lonlat(30_000, 0)[0]]])
    lat = np.concatenate([pos.lat, [lonlat(30_000, 0)[1]]])
    owner = [[T1, T2][t] for t in pos.tenant.tolist()] + [T1]
    got = second.containing(owner, lon, lat)
    assert got == _brute(edited, owner, lon, lat)
    assert got == FenceIndex.build(edited).containing(owner, lon, lat)
    assert got[-1] == {moved.id}


def test_fence_smaller_than_one_cell() -> None:
    tiny = circle_fence(T1, 10, 10, 3.0)  # 6 m across, inside one 30 m cell
    index = FenceIndex.build([tiny])
    clon, clat = lonlat(10, 10)
    lon, lat = ring_points(clon, clat, 2.5, 12)
    far_lon, far_lat = ring_points(clon, clat, 3.5, 12)
    assert all(g == {tiny.id} for g in index.containing([T1] * 12, lon, lat))
    assert not any(index.containing([T1] * 12, far_lon, far_lat))
