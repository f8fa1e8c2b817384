"""`fleet bench storage`: what the schema costs and saves on the cluster's TimescaleDB edition.

Method, in a scratch database migrated like production (policies, continuous aggregates and
tenant views as on the edition in force):

1. Realistic telemetry: `--vehicles` simulated vehicles (the project's own vehicle model, the
   load generator's sample mapping) at 1 Hz for `--hours`, placed nine days back so that its
   day chunks are closed.
2. Ingest: the stream's `DatabaseWriter` (ingest role) writes recent copies of those samples
   into `telemetry`, with every policy running; the anchor is psycopg binary COPY of the same
   pre-built rows into a plain table without indexes, as the owner, in the same run. A second
   anchor, COPY into a plain table with telemetry's indexes and constraints, separates what
   the indexes cost from what the hypertable, its policies and the sink cost.
   Contenders alternate over `--rounds` rounds; medians. Goal on the Timescale edition: sink
   >= 0.85 x anchor.
3. Storage (Timescale edition only): bytes of the closed chunks (heap, indexes, TOAST) per
   sample before compression and after, and the ratio (goal >= 10 x).
4. Analyst query: per vehicle and hour over the closed range (samples, distance from the
   odometer, average and maximum speed, engine-on share), on the uncompressed chunks and again
   after compression, same rows, same answer (checked); medians of `--rounds` runs each.

On the Apache edition steps 3 and 4 report `null` with the reason (no compression there);
run it there with `FLEET_SERVICES_TIMESCALEDB_LICENSE=apache` for the ingest comparison.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

ANALYST_QUERY = """
SELECT vehicle_id, time_bucket(INTERVAL '1 hour', time) AS hour, count(*) AS samples,
       max(odometer_km) - min(odometer_km) AS distance_km, avg(speed_kph) AS avg_speed_kph,
       max(speed_kph) AS max_speed_kph, avg(CASE WHEN rpm > 0 THEN 1.0 ELSE 0.0 END) AS engine_on
  FROM telemetry
 WHERE time >= %s AND time < %s
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench storage` (`--json` is added by deploy.bench)."""
    parser.add_argument("--vehicles", type=int, default=12, help="simulated vehicles")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of 1 Hz samples each")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per ingest transaction")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.set_defaults(func=run)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def simulate(vehicles: list[uuid.UUID], hours: float, start_ms: int,
             progress: Callable[[str], None]) -> dict[uuid.UUID, list[Any]]:
    """1 Hz samples of the project's vehicle model, one model per vehicle."""
    from simulators.load import sample_of
    from simulators.vehicle import VehicleModel

    steps = int(hours * 3600)
    out: dict[uuid.UUID, list[Any]] = {}
    for i, vid in enumerate(vehicles):
        model = VehicleModel(1000 + i, start_ms=start_ms, warm_engine=True)
        out[vid] = [sample_of(model.step(1.0), seq) for seq in range(1, steps + 1)]
        progress(f"simulated vehicle {i + 1}/{len(vehicles)} ({steps} samples)")
    return out


def _items(tenant: uuid.UUID, samples: dict[uuid.UUID, list[Any]], shift_ms: int,
           seq_base: int) -> list[Any]:
    """Sink items of every vehicle's samples, times shifted, interleaved by time like a
    fleet's traffic."""
    import msgspec

    from core.protocol import Source
    from stream.envelopes import StoredSample
    from stream.model import Reading, VehicleRef

    refs = {v: VehicleRef(tenant, v, "bench", f"v{i}") for i, v in enumerate(samples)}
    rows: list[Any] = []
    for v, series in samples.items():
        for s in series:
            moved = msgspec.structs.replace(s, t_ms=s.t_ms + shift_ms, seq=s.seq + seq_base)
            rows.append(StoredSample(Reading(refs[v], moved, Source.SIMULATOR)))
    rows.sort(key=lambda item: item.reading.sample.t_ms)
    return rows


def _copy_rows(conn: Any, table: str, rows: list[tuple[Any, ...]], batch: int) -> None:
    from stream.sink import GEOGRAPHY, TELEMETRY, register_geography

    oid = register_geography(conn)
    types = [oid if t == GEOGRAPHY else t for t in TELEMETRY.types]
    cols = ", ".join(TELEMETRY.columns)
    for i in range(0, len(rows), batch):
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for r in rows[i:i + batch]:
                copy.write_row(r)


def _closed_chunk_bytes(conn: Any, start: Any, end: Any) -> tuple[int, list[str]]:
    chunks = [str(r[0]) for r in conn.execute(
        "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'telemetry' AND range_start >= %s AND range_end <= %s",
        (start, end)).fetchall()]
    total = 0
    for chunk in chunks:
        row = conn.execute("SELECT total_bytes FROM chunks_detailed_size('telemetry') "
                           "WHERE format('%%I.%%I', chunk_schema, chunk_name) = %s",
                           (chunk,)).fetchone()
        total += int(row[0]) if row else 0
    return total, chunks


def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one measurement, step by step
    """Run the benchmark; the last line of output is the JSON result."""
    import psycopg

    from core.settings import load_settings
    from deploy.bench import emit
    from deploy.bench.scratch import scratch_database
    from deploy.seed import seed_fleet
    from stream.config import StreamSettings
    from stream.sink import Batch, DatabaseWriter, telemetry_row

    def progress(message: str) -> None:
        if not args.json:
            print(f"bench storage: {message}", file=sys.stderr, flush=True)

    db = load_settings(StreamSettings, getattr(args, "config", None)).database
    result: dict[str, Any] = {}
    with scratch_database(db, "storage") as scratch:
        owner, ingest, edition = scratch.owner_url, scratch.ingest_url, scratch.edition
        fleet = seed_fleet(owner, "bench", [f"v{i}" for i in range(1, args.vehicles + 1)])
        tenant, vehicles = fleet.tenant_id, list(fleet.vehicles.values())
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("CREATE TABLE plain_telemetry (LIKE telemetry INCLUDING DEFAULTS)")
            conn.execute("CREATE TABLE indexed_telemetry (LIKE telemetry INCLUDING ALL)")
        day_ms = 86_400_000
        now_ms = time.time_ns() // 1_000_000
        closed_start_ms = (now_ms // day_ms - 9) * day_ms
        samples = simulate(vehicles, args.hours, closed_start_ms, progress)
        closed = _items(tenant, samples, 0, 0)
        n = len(closed)

        # 2. Ingest, recent copies of the same samples (into the open chunks).
        recent_shift = (now_ms // day_ms - 1) * day_ms - closed_start_ms
        sink_t: list[float] = []
        raw_t: list[float] = []
        indexed_t: list[float] = []
        for r in range(args.rounds):
            items = _items(tenant, samples, recent_shift, (r + 1) * 10_000_000)
            rows = [telemetry_row(x.reading) for x in items]
            with psycopg.connect(owner) as conn:
                raw_t.append(_timed(lambda c=conn, rw=rows: _copy_rows(  # type: ignore[misc]
                    c, "plain_telemetry", rw, args.batch)))
                conn.execute("TRUNCATE plain_telemetry")
                conn.commit()
                indexed_t.append(_timed(lambda c=conn, rw=rows: _copy_rows(  # type: ignore[misc]
                    c, "indexed_telemetry", rw, args.batch)))
                conn.execute("TRUNCATE indexed_telemetry")
                conn.commit()
            writer = DatabaseWriter(ingest)
            batches = [items[i:i + args.batch] for i in range(0, n, args.batch)]
            sink_t.append(_timed(lambda w=writer, bs=batches: [  # type: ignore[misc]
                w.write(Batch.of(b)) for b in bs]))
            writer.close()
            progress(f"ingest round {r + 1}: sink {n / sink_t[-1]:,.0f} rows/s, "
                     f"raw COPY {n / raw_t[-1]:,.0f} rows/s, "
                     f"with telemetry's indexes {n / indexed_t[-1]:,.0f} rows/s")
        sink_s, raw_s = statistics.median(sink_t), statistics.median(raw_t)
        indexed_s = statistics.median(indexed_t)
        result.update({
            "edition": edition, "vehicles": args.vehicles, "hours": args.hours,
            "rows_per_round": n, "rounds": args.rounds, "batch_rows": args.batch,
            "sink_rows_per_s": round(n / sink_s), "raw_copy_rows_per_s": round(n / raw_s),
            "ingest_ratio": round(raw_s / sink_s, 3),
            "indexed_copy_rows_per_s": round(n / indexed_s),
            "indexed_copy_ratio": round(raw_s / indexed_s, 3),
            "ingest_vs_indexed_copy": round(indexed_s / sink_s, 3),
        })

        # 3. and 4. The closed range: stored, measured, queried, compressed, measured, queried.
        with psycopg.connect(owner, autocommit=True) as conn:
            _copy_rows(conn, "telemetry", [telemetry_row(x.reading) for x in closed], args.batch)
            conn.execute("VACUUM ANALYZE telemetry")
            start = conn.execute("SELECT to_timestamp(%s / 1000.0)",
                                 (closed_start_ms,)).fetchone()[0]  # type: ignore[index]
            end = conn.execute("SELECT to_timestamp(%s / 1000.0)",
                               (closed_start_ms + 2 * day_ms,)).fetchone()[0]  # type: ignore[index]

            def query() -> list[tuple[Any, ...]]:
                return conn.execute(ANALYST_QUERY, (start, end)).fetchall()

            expected = query()
            plain_q = statistics.median(_timed(query) for _ in range(args.rounds))
            hot_bytes, chunks = _closed_chunk_bytes(conn, start, end)
            result.update({"closed_rows": n, "closed_chunks": len(chunks),
                           "hot_bytes_per_sample": round(hot_bytes / n, 1),
                           "query_uncompressed_s": round(plain_q, 4)})
            if edition != "timescale":
                result.update({"compression": None, "cold_bytes_per_sample": None,
                               "compression_ratio": None, "query_compressed_s": None,
                               "note": "no compression on the Apache edition"})
            else:
                progress(f"compressing {len(chunks)} closed chunk(s)")
                for chunk in chunks:
                    conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)",
                                 (chunk,))
                conn.execute("VACUUM ANALYZE telemetry")
                cold_row = conn.execute(
                    "SELECT sum(after_compression_total_bytes) FROM "
                    "chunk_compression_stats('telemetry') WHERE format('%%I.%%I', chunk_schema, "
                    "chunk_name) = ANY(%s)", (chunks,)).fetchone()
                cold_bytes = int(cold_row[0]) if cold_row and cold_row[0] else 0
                if query() != expected:
                    raise RuntimeError("the analyst query changed its answer after compression")
                compressed_q = statistics.median(_timed(query) for _ in range(args.rounds))
                result.update({
                    "cold_bytes_per_sample": round(cold_bytes / n, 1),
                    "compression_ratio": round(hot_bytes / cold_bytes, 2),
                    "query_compressed_s": round(compressed_q, 4),
                    "query_compressed_vs_uncompressed": round(compressed_q / plain_q, 3),
                })
    return emit(result, args.json)
