"""`fleet bench geofence`: the fence index against a PostGIS join on the same data.

Method. A throwaway database is created with the project's own helpers and migrated; 10,000
fences of several tenants (city-scale polygons with holes, multipolygons, circles and
corridors, see `deploy.bench.geodata`) are inserted into the real `geofences` table, so PostGIS
computes every zone. The index is loaded from that table with `geo.store.load_fences`, the way
the stream does. 200,000 positions (half spread over the city, half near a fence of their own
tenant) are then classified twice:

- by `FenceIndex.containing` in batches (as the dataflow calls it), timed over several rounds;
- by PostGIS: the positions are loaded into a table and joined to `geofences` on tenant and
  `ST_Covers(zone, position)` over geography (the production semantics, GiST index on zone),
  and once more over geometry (`zone::geometry`, with an expression GiST index), which is
  the faster anchor. The ratio is taken against the faster of the two, measured in this run.

`mismatches` counts (position, fence) pairs on which the index and the geography join
disagree; it must be 0. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench geofence` (`--json` is added by deploy.bench)."""
    parser.add_argument("--fences", type=int, default=10_000, help="fences in total")
    parser.add_argument("--positions", type=int, default=200_000, help="positions to classify")
    parser.add_argument("--tenants", type=int, default=4, help="tenants sharing the city")
    parser.add_argument("--batch", type=int, default=10_000,
                        help="positions per containing() call, like a dataflow batch")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the index")
    parser.add_argument("--seed", type=int, default=20_260_101)
    parser.add_argument("--grid-cell-m", type=float, default=None,
                        help="override GeofenceSettings.grid_cell_m")
    parser.add_argument("--keep-database", action="store_true",
                        help="leave the throwaway database in place for inspection")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints progress unless --json, then one JSON object."""
    def say(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    result = measure(fences=args.fences, positions=args.positions, tenants=args.tenants,
                     batch=args.batch, rounds=args.rounds, seed=args.seed,
                     grid_cell_m=args.grid_cell_m, keep_database=args.keep_database, log=say)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["mismatches"] == 0 else 1


def measure(*, fences: int, positions: int, tenants: int, batch: int,  # noqa: PLR0915
            rounds: int, seed: int, grid_cell_m: float | None, keep_database: bool,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Set up the database, run both sides and return the figures."""
    import numpy as np
    import psycopg

    from deploy.bench.geodata import make_fences, make_positions
    from deploy.bench.scratch import local_database, scratch_database
    from deploy.seed import seed_fleet
    from geo.config import GeofenceSettings
    from geo.index import FenceIndex, tenant_keys
    from geo.store import load_fences

    with scratch_database(local_database(), "geofence", keep=keep_database) as scratch:
        log(f"created database {scratch.name}")
        owner_url, ingest_url = scratch.owner_url, scratch.ingest_url
        rng = np.random.default_rng(seed)
        tenant_ids = [uuid.uuid4() for _ in range(tenants)]
        specs = make_fences(rng, tenant_ids, fences)
        t = time.perf_counter()
        for i, tid in enumerate(tenant_ids):
            seed_fleet(owner_url, f"bench{i}-{tid.hex[:6]}", [], tenant_id=tid,
                       tenant_name=f"Bench tenant {i}")
        with psycopg.connect(owner_url, autocommit=True) as conn:
            _insert_fences(conn, specs)
        insert_s = time.perf_counter() - t
        log(f"inserted {len(specs)} fences in {insert_s:.1f} s (PostGIS computed the zones)")

        settings = GeofenceSettings() if grid_cell_m is None else GeofenceSettings(
            grid_cell_m=grid_cell_m)
        t = time.perf_counter()
        snapshot = load_fences(ingest_url, settings)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        index = FenceIndex.build(snapshot.fences, settings)
        build_s = time.perf_counter() - t
        log(f"loaded {len(snapshot.fences)} fences in {load_s:.1f} s, index built in "
            f"{build_s:.1f} s: {index.grid_stats}")

        by_id = {f.id: f for f in snapshot.fences}
        pos = make_positions(rng, tenants, specs, [by_id[s.id].zone for s in specs], positions)
        keys = tenant_keys(tenant_ids)[pos.tenant]
        times, cpu_times = [], []
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            for a in range(0, positions, batch):
                index.containing(keys[a:a + batch], pos.lon[a:a + batch], pos.lat[a:a + batch])
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
        index_s = statistics.median(times)
        log(f"index: median {positions / index_s:,.0f} positions/s over {rounds} rounds "
            f"(best {positions / min(times):,.0f})")
        t = time.perf_counter()
        pidx, fidx = index.containing_pairs(keys, pos.lon, pos.lat)
        pairs_s = time.perf_counter() - t
        fence_ids = [f.id for f in index.fences()]
        ours = set(zip(pidx.tolist(), (fence_ids[f] for f in fidx.tolist()), strict=True))

        with psycopg.connect(owner_url, autocommit=True) as conn:
            _load_positions(conn, tenant_ids, pos)
        with psycopg.connect(ingest_url, autocommit=True) as conn:
            geog, geog_s = _postgis_join(conn, "geography")
            log(f"PostGIS geography ST_Covers join: {positions / geog_s:,.0f} positions/s")
            geom, geom_s = _postgis_join(conn, "geometry")
            log(f"PostGIS geometry ST_Covers join: {positions / geom_s:,.0f} positions/s")
        postgis_rate = positions / min(geog_s, geom_s)
        rate = positions / index_s
        return {
            "benchmark": "geofence",
            "fences": len(snapshot.fences), "positions": positions, "tenants": tenants,
            "batch": batch, "rounds": rounds,
            "positions_per_s": round(rate),
            "positions_per_s_best": round(positions / min(times)),
            # CPU time of this process: what the index costs when the machine is shared.
            "positions_per_cpu_s": round(positions / statistics.median(cpu_times)),
            "pairs_positions_per_s": round(positions / pairs_s),
            "postgis_positions_per_s": round(postgis_rate),
            "postgis_geography_positions_per_s": round(positions / geog_s),
            "postgis_geometry_positions_per_s": round(positions / geom_s),
            "ratio": round(rate / postgis_rate, 1),
            "mismatches": len(ours ^ geog),
            "mismatches_geometry": len(ours ^ geom),
            "hits": len(ours),
            "insert_s": round(insert_s, 2), "load_s": round(load_s, 2),
            "build_s": round(build_s, 2),
            "grid": index.grid_stats,
        }


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    return str(value)


def _insert_fences(conn: Any, specs: list[Any]) -> None:
    import shapely

    with conn.cursor() as cur:
        buf = io.StringIO()
        for s in specs:
            wkt = shapely.to_wkt(s.geometry, rounding_precision=-1)
            fields = [s.id, s.tenant_id, s.name, s.kind, f"SRID=4326;{wkt}", s.radius_m,
                      s.corridor_width_m, s.speed_limit_kph, s.dwell_s]
            buf.write("\t".join(_copy_text(v) for v in fields) + "\n")
        with cur.copy("COPY geofences (id, tenant_id, name, kind, geometry, radius_m, "
                      "corridor_width_m, speed_limit_kph, dwell_s) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        cur.execute("CREATE INDEX bench_geofences_zone_geom ON geofences USING gist "
                    "((zone::geometry))")
        cur.execute("ANALYZE geofences")


def _load_positions(conn: Any, tenant_ids: list[uuid.UUID], pos: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE bench_positions (i integer PRIMARY KEY, tenant_id uuid NOT NULL,"
                    " lon double precision NOT NULL, lat double precision NOT NULL)")
        with cur.copy("COPY bench_positions (i, tenant_id, lon, lat) FROM STDIN") as copy:
            for i, (t, lon, lat) in enumerate(zip(pos.tenant.tolist(), pos.lon.tolist(),
                                                  pos.lat.tolist(), strict=True)):
                copy.write_row((i, tenant_ids[t], repr(lon), repr(lat)))
        # Both forms stored, so the timed joins do no per-row conversion of the positions.
        cur.execute("ALTER TABLE bench_positions ADD COLUMN pos geography(Point, 4326),"
                    " ADD COLUMN pos_geom geometry(Point, 4326)")
        cur.execute("UPDATE bench_positions"
                    " SET pos_geom = ST_SetSRID(ST_MakePoint(lon, lat), 4326),"
                    " pos = ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography")
        cur.execute("GRANT SELECT ON bench_positions TO fleet_ingest")
        cur.execute("ANALYZE bench_positions")


def _postgis_join(conn: Any, form: str) -> tuple[set[tuple[int, uuid.UUID]], float]:
    if form == "geography":
        on = "ST_Covers(g.zone, p.pos)"
    else:
        on = "ST_Covers(g.zone::geometry, p.pos_geom)"
    sql = (f"SELECT p.i, g.id FROM bench_positions p JOIN geofences g"  # noqa: S608 - constant
           f" ON g.tenant_id = p.tenant_id AND g.is_active AND {on}")
    t = time.perf_counter()
    rows = conn.execute(sql).fetchall()
    elapsed = time.perf_counter() - t
    return {(int(i), fid) for i, fid in rows}, elapsed
