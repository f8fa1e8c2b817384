"""`fleet bench ingest`: the stream's telemetry sink against raw binary COPY, same rows, same run.

Method: a scratch database is created and migrated; N telemetry samples of 100 vehicles are
generated once. Each contender writes them in batches of `--batch` rows, one transaction per
batch, into an empty `telemetry` hypertable (truncated between contenders); the contenders
alternate for `--rounds` rounds and each reports its median:

- ``raw_copy``: psycopg binary COPY of pre-built row tuples straight into the hypertable (as
  the table owner: the ingest role may not COPY into a table with row-level security);
- ``sink``: the stream's `DatabaseWriter` as the ingest role, from `StoredSample` items
  (row building, staging COPY and ``INSERT ... ON CONFLICT DO NOTHING`` included);
- ``sink_direct``: the same writer as a role not subject to RLS (direct COPY path);
- ``sink_replay``: the sink again over rows that are all stored already (a full replay).

Prints one JSON object last: sink_rows_per_s, raw_copy_rows_per_s, ratio (+ the extras).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench ingest` (`--json` is added by deploy.bench)."""
    parser.add_argument("--rows", type=int, default=300_000, help="samples per contender")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per transaction")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.set_defaults(func=run)


def bench_items(n: int, tenant_id: uuid.UUID, vehicles: list[uuid.UUID]) -> list[Any]:
    from core.protocol import Sample, Source
    from stream.envelopes import StoredSample
    from stream.model import Reading, VehicleRef

    refs = [VehicleRef(tenant_id, v, "bench", f"v{i}") for i, v in enumerate(vehicles)]
    t0 = (time.time_ns() // 1_000_000) - 86_400_000
    out = []
    for k in range(n):
        ref = refs[k % len(refs)]
        seq = k // len(refs) + 1
        s = Sample(seq=seq, t_ms=t0 + seq * 1000, lat_deg=52.5 + (k % 997) * 1e-5,
                   lon_deg=13.4 + (k % 991) * 1e-5, speed_kph=42.0, heading_deg=90.0,
                   rpm=1800.0, coolant_c=88.0, fuel_pct=61.5, odometer_km=12_345.6,
                   battery_v=13.9, ignition=True, gps_fix=1, hdop=0.9, sats=9)
        out.append(StoredSample(Reading(ref, s, Source.SIMULATOR)))
    return out


def raw_copy_rows_per_s(owner_url: str, items: list[Any], batch: int) -> float:
    """The anchor: psycopg binary COPY of pre-built telemetry rows straight into the hypertable,
    `batch` rows per transaction, as the table owner; rows/s. The rows stay (truncate after)."""
    import psycopg

    from stream.sink import GEOGRAPHY, TELEMETRY, register_geography, telemetry_row

    rows = [telemetry_row(x.reading) for x in items]
    chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    cols = ", ".join(TELEMETRY.columns)
    with psycopg.connect(owner_url) as conn:
        oid = register_geography(conn)
        types = [oid if t == GEOGRAPHY else t for t in TELEMETRY.types]

        def go() -> None:
            for chunk in chunks:
                with conn.transaction(), conn.cursor() as cur, cur.copy(
                        f"COPY telemetry ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for r in chunk:
                        copy.write_row(r)

        return len(rows) / _timed(go)


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; the last line of output is the JSON result."""

    from core.settings import load_settings
    from deploy.bench.scratch import scratch_database
    from deploy.seed import seed_fleet
    from stream.config import StreamSettings
    settings = load_settings(StreamSettings, getattr(args, "config", None))
    with scratch_database(settings.database, "ingest") as db:
        fleet = seed_fleet(db.owner_url, "bench", [f"v{i}" for i in range(1, 101)])
        tenant_id, vehicles = fleet.tenant_id, list(fleet.vehicles.values())
        result = _contest(db.owner_url, db.ingest_url,
                          bench_items(args.rows, tenant_id, vehicles), args)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    print(json.dumps(result))
    return 0


def _contest(owner: str, ingest: str, items: list[Any],
             args: argparse.Namespace) -> dict[str, Any]:
    """Time every contender over the same rows; rows/s per contender."""
    import psycopg

    from stream.sink import Batch, DatabaseWriter

    chunks = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]

    def truncate() -> None:
        with psycopg.connect(owner) as conn:
            conn.execute("TRUNCATE telemetry")

    def sink_with(url: str) -> Any:
        writer = DatabaseWriter(url)

        def go() -> None:
            for chunk in chunks:
                writer.write(Batch.of(chunk))
        return writer, go

    # The machine is shared: contenders alternate over several rounds and each keeps
    # its median, so a burst of foreign load does not decide the ratio.
    raw_t: list[float] = []
    sink_t: list[float] = []
    replay_t: list[float] = []
    direct_t: list[float] = []
    sink_writer, sink_go = sink_with(ingest)
    direct_writer, direct_go = sink_with(owner)
    n = len(items)
    for _ in range(args.rounds):
        truncate()
        raw_t.append(n / raw_copy_rows_per_s(owner, items, args.batch))
        truncate()
        sink_t.append(_timed(sink_go))
        replay_t.append(_timed(sink_go))
        truncate()
        direct_t.append(_timed(direct_go))
    sink_writer.close()
    direct_writer.close()
    raw_s, sink_s = statistics.median(raw_t), statistics.median(sink_t)
    replay_s, direct_s = statistics.median(replay_t), statistics.median(direct_t)
    with psycopg.connect(owner) as conn:
        stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return {
        "rows": n,
        "batch_rows": args.batch,
        "rounds": args.rounds,
        "sink_rows_per_s": round(n / sink_s),
        "raw_copy_rows_per_s": round(n / raw_s),
        "ratio": round(raw_s / sink_s, 3),
        "sink_direct_rows_per_s": round(n / direct_s),
        "sink_replay_rows_per_s": round(n / replay_s),
        "sink_path": "direct" if sink_writer.writers["telemetry"].direct else "staged",
        "stored_after_direct": int(stored[0]) if stored else 0,
    }
