"""Fences loaded from the real PostGIS, checked against ST_Covers / ST_DWithin, and live reload."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely

from geo.config import GeofenceSettings
from geo.index import FenceIndex
from geo.store import FenceWatcher, load_fences
from tests.conftest import TestDatabase
from tests.geo.helpers import CITY, lonlat, ring_points, square_m

pytestmark = pytest.mark.services


def _wkt_m(geom_m: shapely.Geometry) -> str:
    return shapely.to_wkt(CITY.geometry_to_lonlat(geom_m), rounding_precision=-1)


@pytest.fixture
def owner(database: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        yield conn


def _tenant(conn: psycopg.Connection[Any]) -> uuid.UUID:
    row = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, 'T') RETURNING id",
                       (f"t{uuid.uuid4().hex[:8]}",)).fetchone()
    assert row is not None
    tid = row[0]
    assert isinstance(tid, uuid.UUID)
    return tid


def _insert(conn: psycopg.Connection[Any], tenant: uuid.UUID, kind: str, wkt: str,
            **extra: Any) -> uuid.UUID:
    cols = ", ".join(["tenant_id", "name", "kind", "geometry", *extra])
    vals = ", ".join(["%s", "%s", "%s", "ST_GeogFromText(%s)"] + ["%s"] * len(extra))
    row = conn.execute(f"INSERT INTO geofences ({cols}) VALUES ({vals}) RETURNING id",
                       (tenant, kind, kind, f"SRID=4326;{wkt}", *extra.values())).fetchone()
    assert row is not None
    fid = row[0]
    assert isinstance(fid, uuid.UUID)
    return fid


def _fixture_fences(
        conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID, dict[str, uuid.UUID]]:
    t1, t2 = _tenant(conn), _tenant(conn)
    ids = {
        "holed": _insert(conn, t1, "polygon", _wkt_m(
            shapely.Polygon(square_m(0, 0, 600), [square_m(0, 0, 250)])), speed_limit_kph=30.0),
        "multi": _insert(conn, t1, "polygon", _wkt_m(shapely.MultiPolygon(
            [shapely.Polygon(square_m(-2000, 0, 150)), shapely.Polygon(square_m(2000, 0, 150))]))),
        "circle": _insert(conn, t1, "circle", _wkt_m(shapely.Point(1500, 1500)), radius_m=400.0),
        "corridor": _insert(conn, t1, "corridor", _wkt_m(shapely.LineString(
            [(-3000, -1500), (0, -1200), (3000, -2500)])), corridor_width_m=80.0),
        "other_tenant": _insert(conn, t2, "polygon", _wkt_m(shapely.Polygon(square_m(0, 0, 600)))),
    }
    return t1, t2, ids


def _postgis_covers(conn: psycopg.Connection[Any], tenant: uuid.UUID, lon: np.ndarray,
                    lat: np.ndarray) -> list[frozenset[uuid.UUID]]:
    rows = conn.execute(
        "SELECT p.i, g.id FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS p(lon, lat, i)"
        " JOIN geofences g ON g.tenant_id = %s AND g.is_active"
        " AND ST_Covers(g.zone, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography)",
        (lon.tolist(), lat.tolist(), tenant)).fetchall()
    out: list[set[uuid.UUID]] = [set() for _ in range(lon.size)]
    for i, fid in rows:
        out[i - 1].add(fid)
    return [frozenset(s) for s in out]


def _near_boundaries(zones: list[shapely.Geometry], rng: np.random.Generator,
                     jitter_m: float, per_zone: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for zone in zones:
        coords = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(zone)))
        pick = rng.integers(0, len(coords) - 1, per_zone)
        t = rng.random(per_zone)
        p = coords[pick] + t[:, None] * (coords[pick + 1] - coords[pick])
        xs.append(p[:, 0] + rng.normal(0, jitter_m / CITY.m_per_deg_x, per_zone))
        ys.append(p[:, 1] + rng.normal(0, jitter_m / CITY.m_per_deg_y, per_zone))
    return np.concatenate(xs), np.concatenate(ys)


def test_index_agrees_with_postgis_st_covers_near_every_edge(
        database: TestDatabase, owner: psycopg.Connection[Any]) -> None:
    t1, t2, ids = _fixture_fences(owner)
    snapshot = load_fences(database.ingest_url)
    assert {f.id for f in snapshot.fences} == set(ids.values())
    assert not snapshot.skipped
    index = FenceIndex.build(snapshot.fences)
    rng = np.random.default_rng(1)
    zones = [f.zone for f in snapshot.fences]
    jx, jy = _near_boundaries(zones, rng, 2.0, 300)  # GPS-like jitter across every edge
    fx, fy = _near_boundaries(zones, rng, 0.01, 100)  # a centimetre from the edge
    ux, uy = CITY.to_lonlat(rng.uniform(-3500, 3500, 2000), rng.uniform(-3000, 2500, 2000))
    lon = np.concatenate([jx, fx, ux])
    lat = np.concatenate([jy, fy, uy])
    with psycopg.connect(database.ingest_url) as conn:
        for tenant in (t1, t2):
            expect = _postgis_covers(conn, tenant, lon, lat)
            got = index.containing([tenant] * lon.size, lon, lat)
            assert sum(1 for g in got if g) > 500
            # Geography edges are great-circle arcs; the index follows them with chords of at
            # most densify_max_edge_m (100 m), which stay within 0.2 mm of the arc. Only a
            # position closer than that to an edge may be judged differently.
            for i in (i for i in range(lon.size) if got[i] != expect[i]):
                fid = next(iter(got[i] ^ expect[i]))
                x, y = CITY.to_local(lon[i : i + 1], lat[i : i + 1])
                edge = CITY.geometry_to_local(index.fence(fid).zone.boundary)
                assert shapely.distance(edge, shapely.Point(x[0], y[0])) < 0.001
    # Holes and multipolygons: spot checks with known answers.
    probes = [lonlat(0, 0), lonlat(400, 0), lonlat(-2000, 0), lonlat(2000, 0), lonlat(0, 1000)]
    px, py = np.array([p[0] for p in probes]), np.array([p[1] for p in probes])
    got = index.containing([t1] * 5, px, py)
    assert got == [frozenset(), {ids["holed"]}, {ids["multi"]}, {ids["multi"]}, frozenset()]
    assert index.speed_limit_kph(got[1]) == 30.0


def test_circles_and_corridors_match_st_dwithin_in_metres(
        database: TestDatabase, owner: psycopg.Connection[Any]) -> None:
    t1, _, ids = _fixture_fences(owner)
    index = FenceIndex.build(load_fences(database.ingest_url).fences)
    circle = index.fence(ids["circle"])
    corridor = index.fence(ids["corridor"])
    clon, clat = circle.shape.x, circle.shape.y
    lon, lat = [], []
    for d in (0, 350, 395, 398, 399.6, 400.4, 402, 405, 450):
        x, y = ring_points(clon, clat, d, 48)
        lon.append(x)
        lat.append(y)
    rng = np.random.default_rng(2)
    line = corridor.shape
    for _ in range(600):
        p = line.interpolate(rng.random(), normalized=True)
        lon.append(np.array([p.x + rng.normal(0, 60 / CITY.m_per_deg_x)]))
        lat.append(np.array([p.y + rng.normal(0, 60 / CITY.m_per_deg_y)]))
    lons, lats = np.concatenate(lon), np.concatenate(lat)
    with psycopg.connect(database.ingest_url) as conn:
        rows = conn.execute(
            "SELECT p.i, ST_Distance(g.geometry, p.pos),"
            " ST_DWithin(g.geometry, p.pos, coalesce(g.radius_m, g.corridor_width_m / 2)), g.id"
            " FROM (SELECT i, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography AS pos"
            "       FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS u(lon, lat, i)) p"
            " JOIN geofences g ON g.id = ANY(%s)",
            (lons.tolist(), lats.tolist(), [ids["circle"], ids["corridor"]])).fetchall()
    got = index.containing([t1] * lons.size, lons, lats)
    checked = 0
    for i, dist_m, within, fid in rows:
        fence = index.fence(fid)
        limit_m = fence.radius_m or (fence.corridor_width_m or 0) / 2
        # The zone is a polygon inscribed in the exact buffer: 64 segments for circles
        # (0.12 % short), 32 for corridor ends/joins (1.9 %), plus projection scale.
        margin_m = limit_m * (0.0013 if fence.kind == "circle" else 0.02) + 0.1
        if abs(dist_m - limit_m) <= margin_m:
            continue
        assert (fid in got[i - 1]) == within, (fence.kind, dist_m)
        checked += 1
    assert checked > 900


def test_watcher_reloads_on_notify_and_by_polling(
        database: TestDatabase, owner: psycopg.Connection[Any]) -> None:
    tenant = _tenant(owner)
    first = _insert(owner, tenant, "polygon", _wkt_m(shapely.Polygon(square_m(0, 0, 100))))
    lon, lat = lonlat(0, 0)
    far_lon, far_lat = lonlat(5000, 0)
    logs: list[str] = []
    settings = GeofenceSettings(reload_poll_s=0.5, reload_settle_s=0.05)
    with FenceWatcher(database.ingest_url, settings, log=logs.append) as watcher:
        v1 = watcher.current().version
        assert watcher.current().containing([tenant], np.array([lon]), np.array([lat])) == [{first}]

        # NOTIFY path: a new fence appears without a restart.
        second = _insert(owner, tenant, "circle", _wkt_m(shapely.Point(5000, 0)), radius_m=50.0)
        assert watcher.wait_for_version(v1 + 1, timeout_s=15)
        got = watcher.current().containing([tenant], np.array([far_lon]), np.array([far_lat]))
        assert got == [{second}]

        # Deactivation removes it.
        v2 = watcher.current().version
        owner.execute("UPDATE geofences SET is_active = false WHERE id = %s", (second,))
        assert watcher.wait_for_version(v2 + 1, timeout_s=15)
        assert watcher.current().get(second) is None

        # Polling fallback: with the trigger off no NOTIFY comes, the fingerprint still changes.
        owner.execute("ALTER TABLE geofences DISABLE TRIGGER geofences_notify")
        v3 = watcher.current().version
        owner.execute("DELETE FROM geofences WHERE id = %s", (first,))
        assert watcher.wait_for_version(v3 + 1, timeout_s=15)
        assert watcher.current().containing([tenant], np.array([lon]), np.array([lat])) == [set()]
        assert math.isfinite(len(watcher.current()))
    assert all("skipped" not in m for m in logs)


def test_watcher_survives_a_dropped_connection(
        database: TestDatabase, owner: psycopg.Connection[Any]) -> None:
    tenant = _tenant(owner)
    logs: list[str] = []
    settings = GeofenceSettings(reload_poll_s=60.0, reload_settle_s=0.05,
                                reconnect_backoff_s=0.2)
    with FenceWatcher(database.ingest_url, settings, log=logs.append) as watcher:
        v1 = watcher.current().version
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND usename = 'fleet_ingest') k").fetchone()
        assert killed is not None
        assert killed[0] >= 1
        # A change made while the watcher is down is caught by the check after reconnecting.
        fid = _insert(owner, tenant, "polygon", _wkt_m(shapely.Polygon(square_m(0, 0, 100))))
        assert watcher.wait_for_version(v1 + 1, timeout_s=15)
        assert watcher.current().get(fid) is not None
    assert any("retrying" in m for m in logs)
