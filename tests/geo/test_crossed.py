"""`FenceIndex.crossed`: the segment between two fixes is the great circle, as in PostGIS."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely

from geo.fence import Fence
from geo.index import FenceIndex
from geo.store import load_fences
from tests.conftest import TestDatabase

TENANT = uuid.UUID(int=7)


def _midpoint_lat(lat_deg: float, dlon_deg: float) -> float:
    """Latitude of the great circle halfway between two points of equal latitude."""
    return math.degrees(math.atan(math.tan(math.radians(lat_deg))
                                  / math.cos(math.radians(dlon_deg / 2))))


def test_long_segment_follows_the_great_circle_not_the_parallel() -> None:
    lat = 60.0
    on_arc = Fence.circle(id=uuid.uuid4(), tenant_id=TENANT, name="arc", lon_deg=10.5,
                          lat_deg=_midpoint_lat(lat, 1.0), radius_m=30.0)
    on_chord = Fence.circle(id=uuid.uuid4(), tenant_id=TENANT, name="chord", lon_deg=10.5,
                            lat_deg=lat, radius_m=30.0)
    index = FenceIndex.build([on_arc, on_chord])
    assert index.crossed(TENANT, 10.0, lat, 11.0, lat) == {on_arc.id}
    assert index.crossed(TENANT, 11.0, lat, 10.0, lat) == {on_arc.id}
    assert index.crossed(TENANT, 10.0, lat, 11.0, lat, endpoint_fences=frozenset()) == {
        on_arc.id}


def test_short_arc_is_searched_in_its_own_cells_not_its_ends() -> None:
    # A 210 m east-west segment at 85 N (densified: over 100 m) bulges 1 cm north of the
    # parallel. The parallel is put a quarter of that below a row of grid cells and a fence
    # just above the row: only the arc reaches it, and the grid search (16 cells or fewer) must
    # look in the cells of the arc's box, not only those of its two ends.
    lat0 = 85.0
    provisional = FenceIndex.build([Fence.circle(id=uuid.uuid4(), tenant_id=TENANT, name="p",
                                                 lon_deg=10.0, lat_deg=lat0, radius_m=10.0)])
    cdx, cdy = provisional._cell_deg  # the lattice the test aims at
    row = round(lat0 / cdy) * cdy
    dlon = 7 * cdx
    bulge = _midpoint_lat(row, dlon) - row
    assert 0.005 < bulge * 111_700 < 0.02
    lat = row - bulge / 4
    mid = 10.0 + dlon / 2
    square = Fence.polygon(id=uuid.uuid4(), tenant_id=TENANT, name="sq", geometry=shapely.box(
        mid - cdx / 6, row + bulge / 4, mid + cdx / 6, row + cdy / 2))
    index = FenceIndex.build([square], previous=provisional)  # same lattice
    assert index._cell_deg == (cdx, cdy)
    assert index.crossed(TENANT, 10.0, lat, 10.0 + dlon, lat,
                         endpoint_fences=frozenset()) == {square.id}
    assert index.crossed(TENANT, 10.0, lat - bulge, 10.0 + dlon, lat - bulge,
                         endpoint_fences=frozenset()) == frozenset()


@pytest.mark.services
def test_crossed_agrees_with_postgis_geography(database: TestDatabase) -> None:
    rng = np.random.default_rng(9)
    # Small circles far north, where a degree of longitude's great circle bulges 80-110 m
    # north of the parallel: smaller than that, so the arc and the straight line in degrees
    # never touch the same one.
    centres = [(float(rng.uniform(10.0, 12.0)), float(rng.uniform(58.0, 70.0)),
                float(rng.uniform(20.0, 60.0))) for _ in range(40)]
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'gc', 'GC')", (TENANT,))
        for lon, lat, radius in centres:
            conn.execute("INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m) "
                         "VALUES (%s, 'c', 'circle', ST_MakePoint(%s, %s)::geography, %s)",
                         (TENANT, lon, lat, radius))
    index = FenceIndex.build(load_fences(database.ingest_url).fences)
    segments: list[tuple[float, float, float, float]] = []
    for lon, lat, _ in centres:
        # One whose arc passes through the centre (the parallel lies south of it) and one
        # along the centre's own parallel (the arc passes north of it).
        base = math.degrees(math.atan(math.tan(math.radians(lat)) * math.cos(math.radians(0.5))))
        segments += [(lon - 0.5, base, lon + 0.5, base), (lon - 0.5, lat, lon + 0.5, lat)]
    for _ in range(200):
        lon0, lat0 = float(rng.uniform(10.0, 12.0)), float(rng.uniform(58.0, 70.0))
        segments.append((lon0, lat0, lon0 + float(rng.uniform(-1, 1)),
                         lat0 + float(rng.uniform(-0.3, 0.3))))
    mismatches = []
    with psycopg.connect(database.ingest_url) as conn:
        for i, seg in enumerate(segments):
            rows: list[Any] = conn.execute(
                "SELECT id, ST_Intersects(zone, line), ST_Intersects(ST_Buffer(zone, -0.01), line)"
                " FROM geofences, (SELECT ST_MakeLine(ST_MakePoint(%s, %s), "
                "ST_MakePoint(%s, %s))::geography AS line) l WHERE ST_DWithin(zone, line, 0.01)",
                seg).fetchall()
            expect = {r[0] for r in rows if r[1]}
            # Chords of 100 m stay within 0.2 mm of their arcs: only a fence the segment passes
            # within a centimetre of its edge (near, but not 1 cm deep) may be judged otherwise.
            grazed = {r[0] for r in rows if not r[2]}
            got = index.crossed(TENANT, *seg)
            mismatches += [(seg, f) for f in (got ^ expect) - grazed]
            if i < 2 * len(centres) and i % 2 == 0:
                assert expect, seg  # an arc through a centre: PostGIS must see that fence
    assert mismatches == []
