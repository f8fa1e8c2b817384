"""`fleet bench e2e`: publisher -> Mosquitto -> `fleet stream` -> TimescaleDB, end to end.

Method: a scratch database is created and migrated with one tenant of `--vehicles`
vehicles. The stream runs as a real subprocess (``python -m stream.cli``; `--processes` x
`--workers`, one MQTT source partition per process) with every detector on, subscribed to
this tenant only. A publisher thread in this process sends QoS 1 telemetry at `--rate`
samples/s for `--duration` seconds, `--batch` samples per message, round-robin over the
vehicles, like gateways that sample in real time and upload a batch at a time: each vehicle
samples at ``rate / vehicles`` Hz (10 Hz with the defaults), so a message holds the last
``batch`` samples, spaced accordingly and ending at its publish time. The latency of a stored
row is ``received_at`` (the writing transaction's start, a few ms before its commit) minus the
publish time of its message, which is its time plus its distance from the batch's end
(known from its ``seq``). After the publisher stops, the bench waits for the stream to
drain.

Anchor, measured first in the same run: raw binary COPY of `--anchor-rows` telemetry rows
into the same hypertable (`db_raw_copy_rows_per_s`, what the database alone takes here), and
`ratio_to_raw_copy` = samples_per_s / that.

Figures (JSON, last line): samples_per_s, the sustained rate: rows committed while the
publisher ran, after a warm-up of `STEADY_WARMUP_S` (at most a sixth of the run), per second
of that window; when the stream keeps up it is the offered rate, when it falls behind it is
what the stream managed. samples_per_s_overall (rows committed / (last commit - first
publish), so it includes the start and the drain), offered_per_s (what the publisher
achieved), latency_p50_ms, latency_p99_ms, lost (acknowledged by the broker but not stored
once the stream stopped making progress, or when `--drain-timeout` ran out: see `drained`),
duplicated (stored twice: impossible by the unique key, checked anyway), and the stream's CPU
seconds.

Every `--sample-s` a sampler records where the backlog waits and what it costs: samples the
broker acknowledged but the stream has not yet taken into its inbox (`in_broker`), taken but
not yet stored (`in_stream`), and the resident memory of the stream's processes and of the
broker. From PostgreSQL's insert counters (cheap at any table size), so the figures lag by
up to a second. `windows` cuts the run into `--window-s` slices: per slice the offered and
stored rates, latency p50/p99, peak backlog and memory; `rss_growth_pct` compares the last
slice's memory with the first's (a soak: `--duration 3600 --window-s 300` at a quarter of
capacity), and `drain_s` is how long the backlog took to clear after the publisher stopped (an
overload: `--rate` above capacity). Spikes: the p99 of each second of publishing, its median
over the run, its maximum, and how many seconds had a p99 above twice that median.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.ports import free_port_block
from deploy.bench import cpu_seconds, memory_mib, process_tree

STEADY_WARMUP_S = 5.0
"""Start of the run left out of samples_per_s: the stream's first batches wait for the
cluster to connect and the caches to fill."""


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench e2e` (`--json` is added by deploy.bench)."""
    parser.add_argument("--duration", type=float, default=60.0, help="publishing time, s")
    parser.add_argument("--rate", type=int, default=50_000, help="offered samples/s")
    parser.add_argument("--vehicles", type=int, default=5000,
                        help="vehicles; each samples at rate / vehicles Hz")
    parser.add_argument("--batch", type=int, default=50, help="samples per MQTT message")
    parser.add_argument("--processes", type=int, default=2, help="stream processes")
    parser.add_argument("--workers", type=int, default=1, help="workers per stream process")
    parser.add_argument("--disable", default="",
                        help="comma-separated detectors not to run (stream.disabled_detectors)")
    parser.add_argument("--anchor-rows", type=int, default=100_000,
                        help="rows of the raw COPY anchor, timed before the stream starts")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch database and the stream's log and recovery "
                             "store (their names are printed) for inspection")
    parser.add_argument("--sample-s", type=float, default=5.0,
                        help="interval of the backlog and memory sampler, s")
    parser.add_argument("--window-s", type=float, default=0.0,
                        help="report per-slice figures for slices this long, s (0: one slice "
                             "per sixth of the run)")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="how long to wait for the stream to catch up, s (it also stops "
                             "waiting after 30 s without progress)")
    parser.set_defaults(func=run)


class _Publisher(threading.Thread):
    """Offers `rate` samples/s in messages of `batch` samples, round-robin over vehicles.

    It keeps the device side of the wire contract (docs/protocol.md, "Delivery") as `fleet
    gateway` does: a message the broker acknowledges with "no matching subscribers" (0x10, a
    broker that restarted before the stream subscribed again) was not delivered and is sent
    again a second later."""

    def __init__(self, mqtt_url: str, tenant: str, codes: list[str], *, rate: int,
                 batch: int, duration_s: float, spacing_ms: int,
                 stop: threading.Event | None = None,
                 reconnect_max_delay_s: int | None = None) -> None:
        super().__init__(name="bench-publisher", daemon=True)
        self.mqtt_url, self.tenant, self.codes = mqtt_url, tenant, codes
        self.rate, self.batch, self.duration_s = rate, batch, duration_s
        self.spacing_ms = spacing_ms
        # `fleet bench faults`: publish until `stop` is set, and retry a lost broker often
        # (paho's default backs off to 120 s, which would be measured as the fault's cost).
        self.stop = stop or threading.Event()
        self.reconnect_max_delay_s = reconnect_max_delay_s
        self.acked_samples = 0
        self.sent_samples = 0
        self.unheard_messages = 0
        """Messages acknowledged with 0x10 and therefore sent again."""
        self._sizes: dict[int, int] = {}
        self._sent: dict[int, tuple[str, bytes]] = {}
        self._again: collections.deque[tuple[float, str, bytes, int]] = collections.deque()
        self.started_ms = 0
        self.elapsed_s = 0.0
        self.seqs: list[int] = []
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        """The paho client, connected, its network loop running."""
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        from core.mqtt_url import parse_mqtt_url

        target = parse_mqtt_url(self.mqtt_url)
        client = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(target.username, target.password)
        client.max_inflight_messages_set(1000)
        # Unbounded by design: a benchmark publisher must never block on its own queue.
        client.max_queued_messages_set(0)
        client.on_publish = self._on_publish
        if self.reconnect_max_delay_s is not None:
            client.reconnect_delay_set(min_delay=1, max_delay=self.reconnect_max_delay_s)
        client.connect(target.host, target.port)
        client.loop_start()
        return client

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        from core.protocol import NO_MATCHING_SUBSCRIBERS

        with self._lock:
            n = self._sizes.pop(mid, 0)
            message = self._sent.pop(mid, None)
            if getattr(rc, "value", 0) == NO_MATCHING_SUBSCRIBERS and message is not None:
                self.unheard_messages += 1
                self._again.append((time.monotonic() + 1.0, *message, n))
            else:
                self.acked_samples += n

    def _publish(self, client: Any, topic: str, payload: bytes, n: int) -> None:
        info = client.publish(topic, payload, qos=1)
        with self._lock:
            self._sizes[info.mid], self._sent[info.mid] = n, (topic, payload)

    def _resend_due(self, client: Any) -> None:
        """Send again what was acknowledged to no subscriber a second ago or earlier."""
        with self._lock:
            due = []
            while self._again and self._again[0][0] <= time.monotonic():
                due.append(self._again.popleft())
        for _t, topic, payload, n in due:
            self._publish(client, topic, payload, n)

    def run(self) -> None:
        from core.protocol import Channel, topic_for

        client = self._connect()
        topics = [topic_for(self.tenant, c, Channel.TELEMETRY) for c in self.codes]
        self.seqs = [0] * len(self.codes)
        lats = [52.40 + i * 1e-3 for i in range(len(self.codes))]
        tick_s = 0.05
        per_tick = self.rate * tick_s / self.batch
        start = time.monotonic()
        self.started_ms = time.time_ns() // 1_000_000
        owed = 0.0
        k = 0
        while (now := time.monotonic()) - start < self.duration_s and not self.stop.is_set():
            self._resend_due(client)
            owed += per_tick
            while owed >= 1:
                owed -= 1
                v = k % len(self.codes)
                k += 1
                self._publish(client, topics[v], self._message(v, lats), self.batch)
                self.sent_samples += self.batch
            time.sleep(max(0.0, start + (int((now - start) / tick_s) + 1) * tick_s
                           - time.monotonic()))
        self.elapsed_s = time.monotonic() - start
        deadline = time.monotonic() + 60
        while self.acked_samples < self.sent_samples and time.monotonic() < deadline:
            self._resend_due(client)
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()

    def _message(self, v: int, lats: list[float]) -> bytes:
        """The next message of vehicle `v`: `batch` samples with their own sequence numbers."""
        from core.protocol import Sample, Source, Telemetry, encode

        t_ms = time.time_ns() // 1_000_000
        samples = []
        for i in range(self.batch):
            self.seqs[v] += 1
            lats[v] += 1e-6
            samples.append(Sample(
                seq=self.seqs[v], t_ms=t_ms - (self.batch - 1 - i) * self.spacing_ms,
                lat_deg=lats[v],
                lon_deg=13.40, speed_kph=40.0, heading_deg=0.0, rpm=1500.0,
                coolant_c=88.0, fuel_pct=60.0, battery_v=13.8, ignition=True,
                gps_fix=1, hdop=0.9, sats=9))
        return encode(Telemetry(source=Source.SIMULATOR, samples=samples, sent_ms=t_ms))



def seed_tenant(owner_url: str, tenant: str, codes: list[str]) -> Any:
    """Insert the bench's tenant and its vehicles (as the owner); returns the tenant id."""
    from deploy.seed import seed_fleet

    return seed_fleet(owner_url, tenant, codes).tenant_id

def _partition_session(mqtt_url: str, client_id: str, *, expiry_s: int, clean_start: bool,
                       on_connected: Any) -> None:
    """Connect as one of the stream's partitions, run `on_connected(client, connected)`
    (an Event set on CONNACK), then disconnect."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from core.mqtt_url import parse_mqtt_url

    target = parse_mqtt_url(mqtt_url)
    c = Client(CallbackAPIVersion.VERSION2, client_id=client_id,
               protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set(target.username, target.password)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect(target.host, target.port, clean_start=clean_start, properties=props)
    c.loop_start()
    try:
        on_connected(c, connected)
    finally:
        c.disconnect()
        c.loop_stop()


def _presubscribe(mqtt_url: str, prefix: str, group: str, tenant: str, partitions: int) -> None:
    """Create the stream's persistent sessions first, so nothing published is dropped."""
    from core.protocol import Channel, subscription

    def subscribe(c: Any, _connected: threading.Event) -> None:
        subscribed = threading.Event()
        c.on_subscribe = lambda *_a: subscribed.set()
        c.subscribe(subscription(Channel.TELEMETRY, tenant=tenant, share_group=group), qos=1)
        # Disconnect only after the SUBACK: a session without its subscription drops messages.
        subscribed.wait(10)

    for i in range(partitions):
        _partition_session(mqtt_url, f"{prefix}-p{i}", expiry_s=600, clean_start=False,
                           on_connected=subscribe)


def end_sessions(mqtt_url: str, prefix: str, partitions: int) -> None:
    """Remove the stream's persistent sessions from the broker once a bench is over: left
    there, they would keep subscribing (and queueing) for up to their expiry, and a tenant's
    devices would get PUBACK "success" instead of "no matching subscribers" meanwhile."""
    for i in range(partitions):
        try:
            _partition_session(mqtt_url, f"{prefix}-p{i}", expiry_s=0, clean_start=True,
                               on_connected=lambda _c, connected: connected.wait(10))
        except OSError:
            continue  # no broker: no session either


def _broker_pid() -> int | None:
    """The project's local Mosquitto (`fleet services`), if that is the broker in use."""
    from deploy.services import local_services

    try:
        pid = int(local_services().mq_pid.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@dataclass
class _Sample:
    t_s: float
    acked: int
    inbox_samples: int
    stored: int
    rss_stream_mb: float
    rss_broker_mb: float | None


class _Sampler(threading.Thread):
    """Where the backlog waits and what the processes hold, every `interval_s` (module doc)."""

    def __init__(self, owner_url: str, publisher: _Publisher, stream_pid: int, batch: int,
                 interval_s: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.owner_url, self.publisher, self.stream_pid = owner_url, publisher, stream_pid
        self.batch, self.interval_s = batch, interval_s
        self.broker_pid = _broker_pid()
        self.samples: list[_Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        start = time.monotonic()
        while not self.stop.is_set():
            try:
                self._sample(start)
            except psycopg.OperationalError:
                # The database restarted (a fault, or another job): sample again once it is back.
                self.stop.wait(self.interval_s)

    def _sample(self, start: float) -> None:
        import psycopg

        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            while not self.stop.wait(self.interval_s):
                # Inserts per table since the database was created: the chunks of
                # `telemetry` and the inbox (one row per message of `batch` samples).
                row = conn.execute(
                    "SELECT coalesce(sum(s.n_tup_ins) FILTER (WHERE c.hypertable_name IS NOT "
                    "NULL), 0), coalesce(sum(s.n_tup_ins) FILTER (WHERE s.relname = "
                    "'stream_inbox'), 0) FROM pg_stat_user_tables s LEFT JOIN "
                    "timescaledb_information.chunks c ON c.chunk_schema = s.schemaname AND "
                    "c.chunk_name = s.relname AND c.hypertable_name = 'telemetry'").fetchone()
                stored, inbox = (int(row[0]), int(row[1])) if row else (0, 0)
                self.samples.append(_Sample(
                    round(time.monotonic() - start, 1), self.publisher.acked_samples,
                    inbox * self.batch, stored, memory_mib(process_tree(self.stream_pid))[0],
                    memory_mib([self.broker_pid])[0] if self.broker_pid else None))

    def close(self) -> None:
        self.stop.set()
        self.join(10)


def _windows(slices: list[tuple[Any, ...]], samples: list[_Sample], window_s: float,
             elapsed_s: float) -> list[dict[str, Any]]:
    """Per slice of the publishing time: stored rows and their latency (by publish time), and
    the sampler's backlog and memory (by sampling time)."""
    out = []
    for index, count, pct in slices:
        if index < 0 or index * window_s >= elapsed_s:
            continue  # rows published before the start or after the end (none expected)
        lo, hi = index * window_s, (index + 1) * window_s
        mine = [x for x in samples if lo <= x.t_s < hi]
        out.append({
            "from_s": round(lo), "stored_per_s": round(int(count) / window_s),
            "latency_p50_ms": round(pct[0], 1) if pct else None,
            "latency_p99_ms": round(pct[1], 1) if pct else None,
            "peak_backlog_samples": max((x.acked - x.stored for x in mine), default=None),
            "rss_stream_mb": round(sum(x.rss_stream_mb for x in mine) / len(mine), 1)
            if mine else None,
            "rss_broker_mb": round(sum(x.rss_broker_mb or 0.0 for x in mine) / len(mine), 1)
            if mine and mine[0].rss_broker_mb is not None else None,
        })
    return out


def _growth(windows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Memory growth per process kind, %: the last slice's mean against the second's (the
    first holds the start-up, caches filling)."""
    if len(windows) < 3:  # start-up, a reference, and a last slice
        return {}
    out: dict[str, float | None] = {}
    for key in ("rss_stream_mb", "rss_broker_mb"):
        ref, last = windows[1][key], windows[-1][key]
        out[key.removesuffix("_mb")] = round(100 * (last - ref) / ref, 1) if ref and last \
            else None
    return out


def run(args: argparse.Namespace) -> int:  # noqa: PLR0912, PLR0915 - one linear script
    """Run the benchmark; the last line of output is the JSON result."""
    import psycopg

    from core.settings import load_settings
    from deploy.bench.ingest import bench_items, raw_copy_rows_per_s
    from deploy.bench.scratch import scratch_database
    from stream.config import StreamSettings

    settings = load_settings(StreamSettings, getattr(args, "config", None))
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    proc: subprocess.Popen[bytes] | None = None
    prefix = ""
    with scratch_database(settings.database, "e2e", keep=args.keep) as db:
        owner, ingest = db.owner_url, db.ingest_url
        try:
            codes = [f"b{i:05d}" for i in range(args.vehicles)]
            tenant_id = seed_tenant(owner, tenant, codes)
            with psycopg.connect(owner) as conn:
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM vehicles WHERE tenant_id = %s ORDER BY code LIMIT 100",
                    (tenant_id,)).fetchall()]
            # The anchor: what this database takes by raw binary COPY into the same hypertable,
            # now, on this machine (`fleet bench ingest`'s contender); then the table is emptied.
            anchor = raw_copy_rows_per_s(owner, bench_items(args.anchor_rows, tenant_id, ids), 5000)
            with psycopg.connect(owner) as conn:
                conn.execute("TRUNCATE telemetry")
            print(f"anchor: raw COPY {anchor:,.0f} rows/s", file=sys.stderr)
            group, prefix = f"bench{uuid.uuid4().hex[:6]}", f"bench{uuid.uuid4().hex[:6]}"
            _presubscribe(settings.mqtt.url, prefix, group, tenant, args.processes)
            env = dict(os.environ)
            env.update({
                "FLEET_DATABASE_INGEST_URL": ingest, "FLEET_MQTT_URL": settings.mqtt.url,
                "FLEET_REDIS_URL": settings.redis.url, "FLEET_SOURCE_TENANT": tenant,
                "FLEET_SOURCE_SHARE_GROUP": group, "FLEET_SOURCE_CLIENT_ID_PREFIX": prefix,
                "FLEET_SOURCE_PARTITIONS": str(args.processes),
                "FLEET_SOURCE_SESSION_EXPIRY_S": "600",
                "FLEET_STREAM_PROCESSES": str(args.processes),
                "FLEET_STREAM_WORKERS_PER_PROCESS": str(args.workers),
                "FLEET_STREAM_RECOVERY_DIR": str(tmp / "recovery"),
                "FLEET_STREAM_PROCESS_BASE_PORT": str(free_port_block(args.processes)),
                "FLEET_STREAM_DISABLED_DETECTORS": json.dumps(
                    [d for d in args.disable.split(",") if d]),
            })
            log_path = tmp / "stream.log"
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli"], env=env,
                                    stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            time.sleep(3.0)  # the sessions queue meanwhile; this only keeps start-up out of p99
            # Each vehicle's own sample interval, so that its batches follow on in time.
            spacing_ms = max(1, round(1000 * args.vehicles / args.rate))
            publisher = _Publisher(settings.mqtt.url, tenant, codes, rate=args.rate,
                                   batch=args.batch, duration_s=args.duration,
                                   spacing_ms=spacing_ms)
            publisher.start()
            sampler = _Sampler(owner, publisher, proc.pid, args.batch, args.sample_s)
            sampler.start()
            publisher.join(args.duration + 90)
            published_end = time.monotonic()

            def stored() -> int:
                with psycopg.connect(owner) as conn:
                    r = conn.execute("SELECT count(*) FROM telemetry").fetchone()
                return int(r[0]) if r else 0

            deadline = time.monotonic() + args.drain_timeout
            last, last_change = -1, time.monotonic()
            drained = False
            while time.monotonic() < deadline:
                n = stored()
                if n >= publisher.acked_samples:
                    drained = True
                    break
                if n != last:
                    last, last_change = n, time.monotonic()
                elif time.monotonic() - last_change > 30:
                    break  # stalled: what is missing now is lost
                time.sleep(0.5)
            drain_s = round(time.monotonic() - published_end, 1) if drained else None
            sampler.close()
            cpu_s = cpu_seconds(process_tree(proc.pid))
            with psycopg.connect(owner) as conn:
                r = conn.execute(
                    "SELECT count(*), count(DISTINCT (vehicle_id, seq)), "
                    "extract(epoch FROM max(received_at)) * 1000, "
                    "percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP "
                    "(ORDER BY extract(epoch FROM received_at - time) * 1000 "
                    "  - ((%s - 1 - (seq - 1) %% %s) * %s)) FROM telemetry",
                    (args.batch, args.batch, spacing_ms)).fetchone()
                # Sustained rate: rows committed while the load was on, after a warm-up.
                warm_ms = min(STEADY_WARMUP_S, publisher.elapsed_s / 6) * 1000
                window = (publisher.started_ms + warm_ms,
                          publisher.started_ms + publisher.elapsed_s * 1000)
                steady = conn.execute(
                    "SELECT count(*) FROM telemetry WHERE received_at >= to_timestamp(%s / 1000.0) "
                    "AND received_at < to_timestamp(%s / 1000.0)", window).fetchone()
                rejects = conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()
                missing: list[Any] = []
                if publisher.sent_samples > int(r[1] if r else 0):
                    # Which samples are missing, for the record: (vehicle, first seq, last seq).
                    missing = conn.execute(
                        "SELECT v.code, min(g), max(g) FROM vehicles v "
                        "CROSS JOIN LATERAL generate_series(1, %s) g "
                        "WHERE NOT EXISTS (SELECT 1 FROM telemetry t WHERE t.vehicle_id = v.id "
                        "AND t.seq = g) AND g <= (SELECT max(seq) FROM telemetry t2 "
                        "WHERE t2.vehicle_id = v.id) GROUP BY v.code LIMIT 5",
                        (max(publisher.seqs) if publisher.seqs else 0,)).fetchall()
                window_s = args.window_s or max(1.0, publisher.elapsed_s / 6)
                slices = conn.execute(
                    "SELECT floor((extract(epoch FROM time) * 1000 "
                    "+ (%s - 1 - (seq - 1) %% %s) * %s - %s) / %s)::int AS slice, count(*), "
                    "percentile_cont(ARRAY[0.5, 0.99]) "
                    "WITHIN GROUP (ORDER BY extract(epoch FROM received_at - time) * 1000 "
                    "  - ((%s - 1 - (seq - 1) %% %s) * %s)) FROM telemetry GROUP BY 1 ORDER BY 1",
                    (args.batch, args.batch, spacing_ms, publisher.started_ms, window_s * 1000,
                     args.batch, args.batch, spacing_ms)).fetchall()
                # Spikes: p99 per second of publishing, its median and the seconds well above it
                # (a stall, such as the epoch end's state snapshot, shows as a periodic spike).
                spikes = conn.execute(
                    "WITH per_s AS (SELECT floor((extract(epoch FROM time) * 1000 + (%s - 1 - "
                    "(seq - 1) %% %s) * %s) / 1000) AS s, percentile_cont(0.99) WITHIN GROUP "
                    "(ORDER BY extract(epoch FROM received_at - time) * 1000 - ((%s - 1 - (seq - 1)"
                    " %% %s) * %s)) AS p99 FROM telemetry GROUP BY 1), m AS (SELECT "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY p99) AS median FROM per_s) "
                    "SELECT m.median, max(p99), count(*) FILTER (WHERE p99 > 2 * m.median), "
                    "count(*) FROM per_s, m GROUP BY m.median",
                    (args.batch, args.batch, spacing_ms, args.batch, args.batch, spacing_ms),
                ).fetchone()
            windows = _windows(slices, sampler.samples, window_s, publisher.elapsed_s)
            rows, distinct, last_ms, pct = r if r else (0, 0, None, None)
            span_s = max(1e-3, (float(last_ms) - publisher.started_ms) / 1000) if last_ms else 0
            sustained = int(steady[0]) * 1000 / max(1.0, window[1] - window[0]) if steady else 0.0
            result = {
                "duration_s": round(publisher.elapsed_s, 1),
                "offered_per_s": round(publisher.sent_samples / max(publisher.elapsed_s, 1e-3)),
                "samples_per_s": round(sustained),
                "samples_per_s_overall": round(distinct / span_s) if span_s else 0,
                "db_raw_copy_rows_per_s": round(anchor),
                "ratio_to_raw_copy": round(sustained / anchor, 3),
                "latency_p50_ms": round(pct[0], 1) if pct else None,
                "latency_p99_ms": round(pct[1], 1) if pct else None,
                "published": publisher.acked_samples,
                "sent": publisher.sent_samples,
                "stored": int(distinct),
                "lost": max(0, publisher.acked_samples - int(distinct)),
                "drained": drained,
                "duplicated": int(rows) - int(distinct),
                "missing_examples": [list(m) for m in missing],
                "rejects": int(rejects[0]) if rejects else 0,
                "vehicles": args.vehicles, "batch": args.batch,
                "sample_hz": round(1000 / spacing_ms, 2),
                "processes": args.processes, "workers": args.workers,
                "disabled_detectors": args.disable,
                "stream_cpu_s": round(cpu_s, 1),
                "stream_cpu_us_per_sample": round(cpu_s * 1e6 / max(1, int(distinct)), 1),
                "drain_s": drain_s,
                "peak_backlog_samples": max((x.acked - x.stored for x in sampler.samples),
                                            default=0),
                "peak_in_broker_samples": max((x.acked - x.inbox_samples for x in sampler.samples),
                                              default=0),
                "peak_in_stream_samples": max((x.inbox_samples - x.stored for x in sampler.samples),
                                              default=0),
                "peak_rss_stream_mb": max((x.rss_stream_mb for x in sampler.samples), default=None),
                "peak_rss_broker_mb": max((x.rss_broker_mb or 0.0 for x in sampler.samples),
                                          default=None),
                "p99_per_s_median_ms": round(spikes[0], 1) if spikes else None,
                "p99_per_s_max_ms": round(spikes[1], 1) if spikes else None,
                "seconds_over_twice_median_p99": int(spikes[2]) if spikes else None,
                "seconds": int(spikes[3]) if spikes else None,
                "window_s": round(window_s, 1),
                "windows": windows,
                "rss_growth_pct": _growth(windows),
            }
        finally:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            if prefix:
                end_sessions(settings.mqtt.url, prefix, args.processes)
            if args.keep:
                print(f"stream log and recovery store kept: {tmp}", file=sys.stderr)
            else:
                # The recovery store alone is tens of MB per run.
                shutil.rmtree(tmp, ignore_errors=True)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    print(json.dumps(result))
    return 0
