"""`fleet bench faults`: the fault matrix - one fault at a time under steady load, end to end.

Method:

1. **Private services.** A PostgreSQL (TimescaleDB + PostGIS), a Mosquitto and a Redis are
   started for the run on free ports in a temporary folder (`deploy.services.LocalServices`,
   the same code as `fleet services up`), so the faults never touch the project's shared
   services. The database is migrated and gets one tenant of `--vehicles` vehicles.
2. **Steady load.** `fleet stream` runs as in `fleet bench e2e` (`--processes` processes, one
   MQTT source partition each, every detector on, live feed on), under a keeper that restarts
   it when it exits, as systemd's ``Restart=always`` would (after `--restart-delay-s`; each
   restart is counted). The load generator is `fleet bench e2e`'s publisher: QoS 1 telemetry
   at `--rate` samples/s, `--batch` samples per message, round-robin over the vehicles, every
   sample with its own per-vehicle sequence number; it reconnects to a lost broker at most
   2 s apart and resends what the broker did not acknowledge. Beside it, one real `fleet
   gateway` process (production defaults, reconnect back-off included) reads a simulated NMEA
   GPS at `GATEWAY_GPS_HZ` into its spool and publishes to the same broker, as vehicle
   `GATEWAY_VEHICLE`. A Redis subscriber watches the tenant's live channel.
3. **Anchor**, same run: after a warm-up, `--baseline-s` without a fault gives the offered
   rate and the committed rate (rows whose writing transaction started in the window).
4. **One fault at a time**, each as a phase: `--settle-s` of steady load, then the fault held
   for `--fault-s` (the stream's kill -9 has no duration: it ends where it starts and the
   keeper restarts the cluster; the gateway's power cut lasts `--fault-s`), then recovery,
   then `--post-s` in which the committed rate is measured again.
   `recovery_s` is the time from the end of the fault until the backlog (samples generated in
   the phase and not stored) is back to the normal lag (measured in the anchor window, plus a
   tenth of a second's load) above what is lost for good: the stream has stored what the
   fault held up and keeps up with the live load again (`committed_per_s_after` shows the
   rate). When samples are lost, the backlog settles above the normal lag; the level it keeps
   for `PLATEAU_S` (neither draining nor swinging) is taken as the loss, and if the final
   accounting finds nothing lost after all, the backlog was still draining and the fault
   counts as not recovered (`recovery_s` null). `live_recovery_s` is the time from the end of the
   fault until the first live message reaches the Redis subscriber.
5. **Accounting**, at the end, after the publisher has stopped, the gateway's spool is empty
   and the stream drained: for each phase, the samples generated in it (per vehicle, a range
   of sequence numbers; the gateway's from its spool) against the rows in `telemetry`:
   `lost` = generated - stored, `duplicated` = rows - distinct (vehicle, seq). The publisher's
   own acknowledgements are not trusted: every generated sample counts. A gateway sample the
   stream removes on purpose as a GPS duplicate (a dead letter `gps_filtered` with its seq)
   counts as delivered and is reported. For the gateway power cut, `recovery_s` is the time
   from the restart until the gateway's first new sample, and everything it spooled before,
   is stored.

The gateway reaches the broker through `_Partition`, a TCP relay in this process. Its fault
`gateway_broker_partition` stops relaying bytes both ways without closing anything (no FIN,
no RST: what a cut cable or a dead mobile link looks like), so each side learns of it only by
its own timeouts (MQTT keepalive); a connection attempt during the cut gets no answer. When the
fault ends the relay closes every connection of the cut (a peer that timed out answers a late
packet with a reset) and relays new ones again. Measured like the power cut: everything the
gateway spooled meanwhile, and its first sample after the cut, stored.

Fault `api_replica_kill` runs two `fleet api` replicas over the run's services with
`--ws-clients` live-map clients spread over them (`deploy.bench.replicas`) and kills one
with -9; its clients connect to the other one, as behind a load balancer, and the replica is
started again when the fault ends. `ws_recovery_s` is the time from the kill until the last
client has a live batch again (fan-out through Redis, not only an accepted socket);
`ws_clients_recovered` how many did within `--recovery-timeout-s`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from core.ports import free_port, free_port_block
from deploy.bench import stop_process

if TYPE_CHECKING:
    import psycopg

    from deploy.bench.e2e import _Publisher
    from deploy.bench.replicas import ApiReplicas, WsClients
    from deploy.services import LocalServices

RECONNECT_MAX_DELAY_S = 2
"""The load generator's longest wait between two attempts to reach a lost broker, s."""

PLATEAU_S = 20.0
"""A fault's backlog that stays at one level for this long, s, has settled: what it still
holds then is lost (checked against the final accounting: `_plateau`)."""

RECOVERY_GOAL_S = 30.0
"""Issue #13's goal: recovered within this long after the fault ends (and 0 lost, 0 dup)."""

CONFIRM_S = 3.0
"""How long the backlog must stay at the normal lag for a fault to count as recovered, s."""

PROGRESS_S = 5.0
"""How often the wait for recovery logs the backlog, s."""

MAX_STREAM_RESTARTS = 20
"""The keeper gives up after this many restarts of `fleet stream` (a crash loop)."""


def _log(message: str) -> None:
    print(f"bench faults: {message}", file=sys.stderr, flush=True)


# ---- the faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault: how it starts, how it ends, and whether it is held for `--fault-s`."""

    name: str
    what: str
    start: Callable[[_Run], None]
    end: Callable[[_Run], None]
    held: bool = True
    measure: Literal["stream", "gateway"] = "stream"
    """What `recovery_s` waits for: "stream" (the load generator's backlog) or "gateway"
    (the gateway's first new sample stored, after everything it spooled before)."""
    ws: bool = False
    """Whether the run needs the API replicas and their WebSocket clients (and measures them
    for this fault)."""


def _kill9_stream_process(run: _Run) -> None:
    pids = run.keeper.cluster_pids(timeout_s=30)
    os.kill(pids[-1], signal.SIGKILL)
    _log(f"kill -9 stream process pid {pids[-1]} (one of {len(pids)})")


def _kill9_api_replica(run: _Run) -> None:
    assert run.replicas is not None  # noqa: S101 - started for every fault with ws=True
    run.replicas.kill9(0)
    _log("kill -9 of API replica 0 (one of two)")


def _restart_api_replica(run: _Run) -> None:
    assert run.replicas is not None  # noqa: S101 - as above
    run.replicas.start(0)


def _nothing(_run: _Run) -> None:
    return None


def _heal_partition(run: _Run) -> None:
    run.partition.heal()
    run.gateway.next_after_cut = run.gateway.next_seq()


class _Partition(threading.Thread):
    """A TCP relay from a local port to the broker that can cut the link like a network
    partition (see the module doc)."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        super().__init__(name="bench-partition", daemon=True)
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[Any] = []

    def run(self) -> None:
        import socket

        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.append(client)
            if self._cut.is_set():
                continue  # accepted by the kernel, never answered: the broker is unreachable
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                if not self._cut.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.close()

    def cut(self) -> None:
        """From now on no byte crosses, and new connections get no answer."""
        self._cut.set()
        _log("partition: the gateway's link to the broker carries nothing")

    def heal(self) -> None:
        """Reset what the cut left behind; new connections are relayed again."""
        import socket

        with self._lock:
            stale, self._open = self._open, []
        self._cut.clear()
        for sock in stale:
            # shutdown first: a bare close() from this thread neither wakes the pump blocked
            # in recv() on it nor sends anything, and the peer would never hear of it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        _log(f"partition healed ({len(stale)} stale socket(s) reset)")

    def close(self) -> None:
        """Stop accepting and close everything."""
        self._listener.close()
        self.heal()


FAULTS: list[Fault] = [
    Fault("broker_restart", "private Mosquitto stopped (SIGTERM, persistence on) and started",
          start=lambda r: r.stack.mosquitto_down(), end=lambda r: r.stack.mosquitto_up()),
    Fault("db_restart", "private PostgreSQL stopped with pg_ctl stop -m fast, then started",
          start=lambda r: r.stack.postgres_down(), end=lambda r: r.stack.postgres_up()),
    Fault("stream_kill9", "kill -9 of one of the stream's processes; the keeper restarts "
          "`fleet stream` (whose supervisor stops the whole cluster)",
          start=_kill9_stream_process, end=_nothing, held=False),
    Fault("redis_restart", "private Redis stopped (SIGTERM) and started",
          start=lambda r: r.stack.redis_down(), end=lambda r: r.stack.redis_up()),
    Fault("gateway_broker_partition", "the gateway's link to the broker cut without a FIN "
          "or RST (nothing crosses, connection attempts unanswered), then restored",
          start=lambda r: r.partition.cut(), end=_heal_partition, measure="gateway"),
    Fault("gateway_power_cut", "kill -9 of the `fleet gateway` process while it samples and "
          "spools (fsync per sample), started again after the fault",
          start=lambda r: r.gateway.kill9(), end=lambda r: r.gateway.start(),
          measure="gateway"),
    Fault("api_replica_kill", "kill -9 of one of two `fleet api` replicas while WebSocket "
          "clients watch the live map; its clients connect to the other replica (as behind a "
          "load balancer); the replica is started again after the fault",
          start=_kill9_api_replica, end=_restart_api_replica, ws=True),
]
"""The fault matrix, in the order the benchmark injects them."""

NOT_MEASURED: list[str] = []


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench faults` (`--json` is added by deploy.bench)."""
    names = [f.name for f in FAULTS]
    parser.add_argument("--faults", default=",".join(names),
                        help=f"comma-separated subset of: {', '.join(names)}")
    parser.add_argument("--rate", type=int, default=5000, help="offered samples/s")
    parser.add_argument("--fault-s", type=float, default=15.0,
                        help="how long a service stays down, s")
    parser.add_argument("--vehicles", type=int, default=500,
                        help="vehicles; each samples at rate / vehicles Hz")
    parser.add_argument("--batch", type=int, default=10, help="samples per MQTT message")
    parser.add_argument("--processes", type=int, default=2, help="stream processes")
    parser.add_argument("--warmup-s", type=float, default=10.0,
                        help="load before the anchor window, s")
    parser.add_argument("--baseline-s", type=float, default=20.0,
                        help="anchor window without faults, s")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="steady load before each fault, s")
    parser.add_argument("--post-s", type=float, default=10.0,
                        help="window after recovery in which the commit rate is measured, s")
    parser.add_argument("--recovery-timeout-s", type=float, default=120.0,
                        help="longest wait for a fault's backlog to drain, s")
    parser.add_argument("--restart-delay-s", type=float, default=1.0,
                        help="the keeper's pause before restarting an exited `fleet stream`, s")
    parser.add_argument("--ws-clients", type=int, default=100,
                        help="WebSocket clients of the API replicas (fault api_replica_kill)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (services' data and logs, stream log)")
    parser.set_defaults(func=run)


# ---- the stream under a keeper ---------------------------------------------------------------


class _StreamKeeper(threading.Thread):
    """Runs `fleet stream` (its cluster supervisor) and restarts it whenever it exits."""

    def __init__(self, env: dict[str, str], log_path: Path, restart_delay_s: float) -> None:
        super().__init__(name="bench-stream-keeper", daemon=True)
        self.env, self.log_path, self.restart_delay_s = env, log_path, restart_delay_s
        self.restarts = 0
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self) -> None:
        with self._lock:
            if self._halt.is_set():
                return
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "stream.cli"], env=self.env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)

    def run(self) -> None:
        self._spawn()
        while not self._halt.wait(0.1):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            self.exit_codes.append(proc.returncode)
            if self.restarts >= MAX_STREAM_RESTARTS:
                _log(f"fleet stream exited {proc.returncode}; restarted too often, giving up")
                return
            _log(f"fleet stream exited {proc.returncode}; restarting")
            if self._halt.wait(self.restart_delay_s):
                return
            self.restarts += 1
            self._spawn()

    def cluster_pids(self, timeout_s: float) -> list[int]:
        """The cluster's processes (children of the supervisor), once they all run."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
                    pids = [int(p) for p in text.split()]
                    if len(pids) >= 2:  # "one of two processes"
                        return pids
            time.sleep(0.1)
        raise RuntimeError("the stream cluster's processes did not appear")

    def close(self) -> None:
        """Stop restarting, then stop the stream (SIGTERM, then SIGKILL after 20 s)."""
        with self._lock:
            self._halt.set()
        self.join(10)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class _LiveWatcher(threading.Thread):
    """Subscribes to the tenant's live channel; notes the first message after a mark."""

    def __init__(self, redis_url: str, channel: str) -> None:
        super().__init__(name="bench-live-watcher", daemon=True)
        self.redis_url, self.channel = redis_url, channel
        self.messages = 0
        self.mark = 0.0
        self.first_after_mark: float | None = None
        self._halt = threading.Event()

    def arm(self, mark: float) -> None:
        """Forget the last first-message time; the next message after `mark` is noted."""
        self.first_after_mark = None
        self.mark = mark

    def run(self) -> None:
        import redis

        while not self._halt.is_set():
            try:
                client = redis.Redis.from_url(self.redis_url, socket_timeout=2.0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while not self._halt.is_set():
                    if pubsub.get_message(timeout=0.5) is None:
                        continue
                    self.messages += 1
                    now = time.monotonic()
                    if self.first_after_mark is None and now >= self.mark:
                        self.first_after_mark = now
            except redis.RedisError:
                self._halt.wait(0.2)  # Redis is down: try again soon

    def close(self) -> None:
        """Stop watching."""
        self._halt.set()
        self.join(5)


GATEWAY_VEHICLE = "gw00001"
_GPS_SIGNALS = ("gps_position", "gps_speed", "gps_course", "gps_altitude", "gps_hdop",
                "gps_sats", "gps_fix")


GATEWAY_GPS_HZ = 10.0
"""The gateway's GPS rate: every sample is committed to its spool (fsync) before it is sent,
so at 10 Hz a power cut is likely to find a spool write under way."""


class _Gateway:
    """A real `fleet gateway` process reading a simulated NMEA GPS into its spool and
    publishing to the private broker; its samples are accounted from its spool's seqs."""

    def __init__(self, workdir: Path, *, tenant: str, mqtt_url: str, gps_port: str) -> None:
        self.spool_path = workdir / "spool.sqlite3"
        self.config = workdir / "gateway.toml"
        self.log_path = workdir / "gateway.log"
        self.config.write_text("\n".join([
            "[gateway]", f'tenant = "{tenant}"', f'vehicle = "{GATEWAY_VEHICLE}"',
            f'spool_path = "{self.spool_path}"', "status_interval_s = 5",
            "[mqtt]", f'url = "{mqtt_url}"', "[gps]", f'port = "{gps_port}"',
            "[signals]", "rates_hz = { " + ", ".join(
                f"{name} = {GATEWAY_GPS_HZ}" for name in _GPS_SIGNALS) + " }", ""]))
        self.config.chmod(0o600)  # it holds the private broker's password
        self._proc: subprocess.Popen[bytes] | None = None
        self.next_after_cut = 0

    def start(self) -> None:
        """Start (or start again) the gateway process."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(self.config),
                 "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)

    def kill9(self) -> None:
        """The power cut; notes the seq the gateway's first sample after it will get."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self.next_after_cut = self.next_seq()

    def spool(self) -> tuple[int, int, list[int]] | None:
        """(first seq, next seq, seqs still spooled), None before the spool exists."""
        import sqlite3

        if not self.spool_path.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(self.spool_path, timeout=5)) as db:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                left = [int(r[0]) for r in db.execute("SELECT seq FROM spool ORDER BY seq")]
        except sqlite3.Error:
            return None
        if "next_seq" not in meta:
            return None
        return int(meta["first_seq"]), int(meta["next_seq"]), left

    def next_seq(self) -> int:
        """The seq the gateway's next sample gets (its first seq before it sampled)."""
        state = self.spool()
        return state[1] if state else 0

    def close(self) -> None:
        """SIGTERM (the gateway drains what it can), SIGKILL after 20 s."""
        stop_process(self._proc, grace_s=20)


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class _Phase:
    """One phase of the run: the anchor window, or one fault with its recovery."""

    name: str
    seqs_start: list[int]
    gateway_start: int = 0
    seqs_fault_end: list[int] = field(default_factory=list)
    fault_s: float = 0.0
    recovery_s: float | None = None
    plateau: int | None = None
    """The backlog's level when `recovery_s` is where it settled above the normal lag (taken
    as a loss, to be confirmed by the accounting)."""
    backlog_at_end: int | None = None
    live_recovery_s: float | None = None
    ws: dict[str, Any] | None = None
    stream_restarts: int = 0
    offered_per_s: float = 0.0
    committed_per_s: float = 0.0


@dataclass
class _Run:
    """What the faults act on and the measurements read."""

    stack: LocalServices
    keeper: _StreamKeeper
    publisher: _Publisher
    owner_url: str
    tenant_id: Any
    vehicle_ids: list[Any]
    gateway: _Gateway
    gateway_vehicle_id: Any
    partition: _Partition
    replicas: ApiReplicas | None = None
    ws: WsClients | None = None
    _conn: psycopg.Connection[Any] | None = None

    def seqs(self) -> list[int]:
        """Each vehicle's last generated sequence number (a consistent copy)."""
        return list(self.publisher.seqs)

    _marks: tuple[tuple[int, ...], list[int]] | None = None
    """For `backlog`: the phase's `lo`, and per vehicle the sequence number up to which
    every sample since `lo` is known to be stored."""

    def query(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row of a query; None while the database cannot be reached."""
        rows = self.query_all(sql, params)
        return rows[0] if rows else None

    def query_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """Every row of a query; None while the database cannot be reached."""
        import psycopg

        for _attempt in range(2):  # a connection from before a restart fails once
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.owner_url, autocommit=True,
                                                 connect_timeout=5)
                return self._conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
        return None

    def stored(self, lo: list[int], hi: list[int]) -> tuple[int, int] | None:
        """(rows, distinct samples) with lo < seq <= hi per vehicle; None if unreachable."""
        row = self.query(
            "SELECT count(*), count(DISTINCT (t.vehicle_id, t.seq)) "
            "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS r(vid, lo, hi) "
            "JOIN telemetry t ON t.vehicle_id = r.vid AND t.seq > r.lo AND t.seq <= r.hi",
            (self.vehicle_ids, lo, hi))
        return (int(row[0]), int(row[1])) if row else None

    def gateway_stored(self, lo: int, hi: int) -> tuple[int, int, int] | None:
        """The gateway's samples with lo <= seq < hi: (rows, distinct stored, dead-lettered
        as GPS duplicates, which the stream removes on purpose); None if unreachable."""
        row = self.query(
            "SELECT (SELECT count(*) FROM telemetry WHERE vehicle_id = %s AND seq >= %s "
            "        AND seq < %s), "
            "(SELECT count(DISTINCT seq) FROM telemetry WHERE vehicle_id = %s AND seq >= %s "
            "        AND seq < %s), "
            "(SELECT count(DISTINCT sample_seq) FROM ingest_rejects WHERE tenant_id = %s "
            "        AND vehicle_code = %s AND reason = 'gps_filtered' "
            "        AND detail LIKE 'duplicate:%%' AND sample_seq >= %s AND sample_seq < %s)",
            (self.gateway_vehicle_id, lo, hi, self.gateway_vehicle_id, lo, hi,
             self.tenant_id, GATEWAY_VEHICLE, lo, hi))
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    def committed(self, t0_s: float, t1_s: float) -> int:
        """Rows of the tenant whose writing transaction started in [t0, t1) (epoch s)."""
        row = self.query(
            "SELECT count(*) FROM telemetry WHERE tenant_id = %s "
            "AND time >= to_timestamp(%s) AND received_at >= to_timestamp(%s) "
            "AND received_at < to_timestamp(%s)",
            (self.tenant_id, t0_s - 60, t0_s, t1_s))
        return int(row[0]) if row else 0

    def backlog(self, lo: list[int]) -> int | None:
        """Samples generated since `lo` and not (yet) stored; None if unreachable.

        Polled twice a second while the system is measured, so it reads only what is above
        each vehicle's watermark (everything up to it is stored): a few index ranges, not
        every row of the phase again. Counting the whole phase each time took a quarter
        of a core from the system under test (and more as the phase grew)."""
        hi = self.seqs()
        key = tuple(lo)
        if self._marks is None or self._marks[0] != key:
            self._marks = (key, list(lo))
        marks = self._marks[1]
        rows = self.query_all(
            "SELECT r.i, count(DISTINCT t.seq), max(t.seq) "
            "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) WITH ORDINALITY "
            "  AS r(vid, lo, hi, i) "
            "JOIN telemetry t ON t.vehicle_id = r.vid AND t.seq > r.lo AND t.seq <= r.hi "
            "GROUP BY r.i", (self.vehicle_ids, marks, hi))
        if rows is None:
            return None
        stored = sum(m - q for m, q in zip(marks, lo, strict=True))
        for i, n, top in rows:
            stored += int(n)
            v = int(i) - 1
            if int(n) == int(top) - marks[v]:  # no hole between the mark and the top
                marks[v] = int(top)
        return sum(hi) - sum(lo) - stored

    def measure_window(self, phase: _Phase, seconds: float) -> int:
        """Offered and committed rate over the next `seconds` (the committed figure waits
        for what was published in the window to land, up to 10 s); returns the largest
        backlog seen meanwhile (the normal lag between publishing and storing)."""
        s0, t0 = self.seqs(), time.time()
        lag = 0
        while time.time() < t0 + seconds:
            lag = max(lag, self.backlog(phase.seqs_start) or 0)
            time.sleep(0.5)
        s1, t1 = self.seqs(), time.time()
        wait_until(lambda: (s := self.stored(s0, s1)) is not None and s[1] >= sum(s1) - sum(s0),
                   10)
        phase.offered_per_s = (sum(s1) - sum(s0)) / (t1 - t0)
        phase.committed_per_s = self.committed(t0, t1) / (t1 - t0)
        return lag

    def close(self) -> None:
        """Close the measurement connection."""
        if self._conn is not None:
            self._conn.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `predicate` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


def _recovery(run: _Run, lo: list[int], t_end: float, timeout_s: float,
              normal_lag: int) -> tuple[float | None, int | None]:
    """Seconds from `t_end` until the backlog (samples generated since `lo` and not stored)
    is back, for good, to the normal lag above what is lost; None if it does not settle
    within `timeout_s`.

    For good: it stays there for `CONFIRM_S` (a process just killed has not built its
    backlog yet). When samples are lost the backlog settles higher: a level it keeps within
    the normal lag for `PLATEAU_S` is taken as the loss, and recovery is when it came down
    to that level; the second value is that level when recovery was found that way."""
    series: list[tuple[float, int]] = []
    deadline = t_end + timeout_s
    next_report = t_end + PROGRESS_S
    while time.monotonic() < deadline:
        backlog = run.backlog(lo)
        now = time.monotonic()
        if backlog is not None:
            series.append((now, backlog))
            if now >= next_report:
                _log(f"recovering: backlog {backlog:,} samples {now - t_end:.0f} s after "
                     f"the fault (normal lag {normal_lag:,})")
                next_report = now + PROGRESS_S
            since = _settled_since(series, normal_lag)
            if since is not None and now - since >= CONFIRM_S:
                return round(since - t_end, 1), None
            if now - series[0][0] >= PLATEAU_S and _plateau(series, now, normal_lag):
                recent = [b for t, b in series if t >= now - PLATEAU_S]
                since = _settled_since(series, min(recent) + normal_lag)
                return round((since or now) - t_end, 1), min(recent)
        time.sleep(0.5)
    return None, None


def _plateau(series: list[tuple[float, int]], now: float, normal_lag: int) -> bool:
    """Whether the backlog of the last `PLATEAU_S` neither drains nor swings: the mean of its
    last quarter is within a quarter of the normal lag of its first quarter's, and no poll
    is more than the normal lag away from another.

    A backlog that drains slowly (a stream barely faster than the load) is not a plateau:
    comparing only the spread once took a drain of 1,800 samples/s, under a normal lag of
    22,760, for a loss, and reported the fault recovered while a quarter of a million samples
    still waited."""
    window = [(t, b) for t, b in series if t >= now - PLATEAU_S]
    recent = [b for _, b in window]
    # Polls can stall (the database unreachable): the window must hold enough of them and
    # span most of its length, or the "flat" verdict rests on a few seconds of data.
    if (len(recent) < 8 or window[-1][0] - window[0][0] < 0.75 * PLATEAU_S
            or max(recent) - min(recent) > normal_lag):
        return False
    q = len(recent) // 4
    first, last = sum(recent[:q]) / q, sum(recent[-q:]) / q
    return abs(first - last) <= normal_lag / 4


def _gateway_recovery(run: _Run, t_end: float, timeout_s: float) -> float | None:
    """Seconds from the gateway's restart until its first new sample and every sample it
    spooled before are stored (or dead-lettered as GPS duplicates)."""
    deadline = t_end + timeout_s
    spool = run.gateway.spool()
    until = run.gateway.next_after_cut + 1  # up to and including the first new sample
    while time.monotonic() < deadline and spool is not None:
        got = run.gateway_stored(spool[0], until)
        if got is not None and got[1] + got[2] >= until - spool[0]:
            return round(time.monotonic() - t_end, 1)
        time.sleep(0.25)
    return None


def _settled_since(series: list[tuple[float, int]], level: int) -> float | None:
    """Start of the last run of polls with the backlog at or below `level` (None: above)."""
    since = None
    for t, b in series:
        if b > level:
            since = None
        elif since is None:
            since = t
    return since


def _inject(run: _Run, fault: Fault, args: argparse.Namespace, watcher: _LiveWatcher,
            normal_lag: int) -> _Phase:
    """One phase: settle, fault, recovery, the window after it."""
    phase = _Phase(fault.name, run.seqs(), run.gateway.next_seq())
    time.sleep(args.settle_s)
    restarts0 = run.keeper.restarts
    _log(f"{fault.name}: {fault.what}")
    if fault.ws and run.ws is not None:
        run.ws.mark()
    t_start = time.monotonic()
    fault.start(run)
    if fault.held:
        time.sleep(max(0.0, t_start + args.fault_s - time.monotonic()))
    fault.end(run)
    t_end = time.monotonic()
    phase.fault_s = round(t_end - t_start, 1)
    watcher.arm(t_end)
    phase.seqs_fault_end = run.seqs()
    phase.backlog_at_end = run.backlog(phase.seqs_start)
    if fault.measure == "gateway":
        phase.recovery_s = _gateway_recovery(run, t_end, args.recovery_timeout_s)
    else:
        phase.recovery_s, phase.plateau = _recovery(
            run, phase.seqs_start, t_end, args.recovery_timeout_s, normal_lag)
    wait_until(lambda: watcher.first_after_mark is not None, 30)
    if watcher.first_after_mark is not None:
        phase.live_recovery_s = round(watcher.first_after_mark - t_end, 1)
    if fault.ws and run.ws is not None:
        ws = run.ws
        wait_until(lambda: None not in ws.first_after_mark, args.recovery_timeout_s)
        phase.ws = ws.figures(dropped_from=0)
        _log(f"{fault.name}: WebSocket clients {phase.ws}")
    _log(f"{fault.name}: fault {phase.fault_s} s, recovered after {phase.recovery_s} s, "
         f"live feed after {phase.live_recovery_s} s")
    run.measure_window(phase, args.post_s)
    phase.stream_restarts = run.keeper.restarts - restarts0
    return phase


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every exit path cleans up."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; the last line of output is the JSON result."""
    from deploy.bench import emit

    chosen = [f for f in (s.strip() for s in args.faults.split(",")) if f]
    known = {f.name: f for f in FAULTS}
    unknown = [f for f in chosen if f not in known]
    if unknown:
        print(f"fleet bench faults: unknown fault(s) {', '.join(unknown)}; "
              f"known: {', '.join(known)}", file=sys.stderr)
        return 2
    with _sigterm_as_interrupt():
        result = _bench(args, [known[f] for f in chosen])
    return emit(result, getattr(args, "json", False))


def _bench(args: argparse.Namespace, faults: list[Fault]) -> dict[str, Any]:  # noqa: PLR0915
    import psycopg

    from core.live import live_channel
    from deploy.bench.e2e import _presubscribe, _Publisher, seed_tenant
    from deploy.services import LocalServices, ServicesSettings
    from storage.migrate import migrate

    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-faults-"))
    tmp.chmod(0o755)  # the daemons run as their own users and must reach their folders
    stack = LocalServices(ServicesSettings(
        state_dir=str(tmp / "services"), postgres_port=free_port(), mqtt_port=free_port(),
        redis_port=free_port()), log=_log)
    stop = threading.Event()
    # Every clean-up runs on every exit path, even when an earlier one fails: last in, first
    # out, so the services stop after the processes that use them.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_remove, tmp, stack, keep=args.keep)
        cleanup.callback(stack.down)
        cleanup.callback(stop.set)
        _log(f"starting private services in {tmp}")
        stack.up()
        env = stack.env()
        owner = env["FLEET_DATABASE_OWNER_URL"]
        migrate(owner, log=lambda _m: None)
        tenant = f"bench{uuid.uuid4().hex[:8]}"
        codes = [f"f{i:05d}" for i in range(args.vehicles)]
        tenant_id = seed_tenant(owner, tenant, [*codes, GATEWAY_VEHICLE])
        with psycopg.connect(owner) as conn:
            by_code: dict[str, Any] = dict(conn.execute(
                "SELECT code, id FROM vehicles WHERE tenant_id = %s", (tenant_id,)).fetchall())
        group, prefix = f"bench{uuid.uuid4().hex[:6]}", f"bench{uuid.uuid4().hex[:6]}"
        mqtt_url = env["FLEET_MQTT_URL"]
        _presubscribe(mqtt_url, prefix, group, tenant, args.processes)
        env = dict(os.environ) | env | {
            "FLEET_SOURCE_TENANT": tenant, "FLEET_SOURCE_SHARE_GROUP": group,
            "FLEET_SOURCE_CLIENT_ID_PREFIX": prefix,
            "FLEET_SOURCE_PARTITIONS": str(args.processes),
            "FLEET_SOURCE_SESSION_EXPIRY_S": "600",
            "FLEET_STREAM_PROCESSES": str(args.processes),
            "FLEET_STREAM_WORKERS_PER_PROCESS": "1",
            "FLEET_STREAM_RECOVERY_DIR": str(tmp / "recovery"),
            "FLEET_STREAM_PROCESS_BASE_PORT": str(free_port_block(args.processes)),
            "FLEET_STREAM_LIVE_ENABLED": "true",
        }
        partition = _Partition(*_host_port(mqtt_url))
        partition.start()
        cleanup.callback(partition.close)
        gateway = _Gateway(tmp, tenant=tenant, mqtt_url=_via_port(mqtt_url, partition.port),
                           gps_port=cleanup.enter_context(_gps_simulator()))
        cleanup.callback(gateway.close)
        keeper = _StreamKeeper(env, tmp / "stream.log", args.restart_delay_s)
        keeper.start()
        cleanup.callback(keeper.close)
        watcher = _LiveWatcher(stack.redis_url(), live_channel(tenant_id))
        watcher.start()
        cleanup.callback(watcher.close)
        gateway.start()
        time.sleep(3.0)  # the sessions queue meanwhile
        spacing_ms = max(1, round(1000 * args.vehicles / args.rate))
        publisher = _Publisher(mqtt_url, tenant, codes, rate=args.rate, batch=args.batch,
                               duration_s=float("inf"), spacing_ms=spacing_ms, stop=stop,
                               reconnect_max_delay_s=RECONNECT_MAX_DELAY_S)
        publisher.start()
        if not wait_until(lambda: publisher.started_ms > 0, 30):
            raise RuntimeError("the load generator did not start")
        bench = _Run(stack, keeper, publisher, owner, tenant_id, [by_code[c] for c in codes],
                     gateway, by_code[GATEWAY_VEHICLE], partition)
        cleanup.callback(bench.close)
        if any(f.ws for f in faults):
            bench.replicas, bench.ws = _start_replicas(
                env, tmp, tenant, tenant_id, clients=args.ws_clients, cleanup=cleanup)
        _log(f"load {args.rate} samples/s over {args.vehicles} vehicles; warm-up "
             f"{args.warmup_s:.0f} s")
        time.sleep(args.warmup_s)
        # The accounting starts at the first sample; the anchor window is measured inside.
        baseline = _Phase("none", [0] * len(codes))
        # The normal lag, with a margin of a tenth of a second's load for the machine's
        # hiccups: a backlog down to it is the normal flow again.
        normal_lag = bench.measure_window(baseline, args.baseline_s) + args.rate // 10
        _log(f"anchor: offered {baseline.offered_per_s:,.0f}/s, committed "
             f"{baseline.committed_per_s:,.0f}/s, normal lag {normal_lag} samples")
        phases = [baseline] + [_inject(bench, f, args, watcher, normal_lag) for f in faults]
        stop.set()
        publisher.join(120)
        final = bench.seqs()
        _log("load stopped; waiting for the gateway's spool and the stream to drain")
        wait_until(lambda: (sp := gateway.spool()) is not None and not sp[2], 60)
        gateway.close()
        gateway_final = gateway.spool() or (0, 0, [])
        drained = _drain(bench, phases[0].seqs_start, final, gateway_final)
        return _result(args, bench, phases, final=final, drained=drained,
                       publisher=publisher, keeper=keeper, normal_lag=normal_lag,
                       gateway_final=gateway_final)


def _start_replicas(env: dict[str, str], tmp: Path, tenant: str, tenant_id: Any, *,
                    clients: int, cleanup: contextlib.ExitStack,
                    ) -> tuple[ApiReplicas, WsClients]:
    """Two API replicas over the run's services and `clients` live-map clients on them."""
    from deploy.bench.replicas import ApiReplicas, WsClients, bench_user, login

    base = free_port_block(2)
    replicas = ApiReplicas(env, [base, base + 1], tmp)
    cleanup.callback(replicas.close)
    for i in range(2):
        replicas.start(i)
    email = f"dispatcher@{tenant}.example.com"
    bench_user(env["FLEET_DATABASE_URL"], tenant_id, email)
    ws = WsClients(replicas.urls, login(replicas.urls[0], email), clients)
    ws.start()
    cleanup.callback(ws.close)
    if not ws.wait_live(60):
        raise RuntimeError("the WebSocket clients did not all receive the live feed")
    _log(f"{clients} WebSocket clients live on 2 API replicas")
    return replicas, ws


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


def _via_port(url: str, port: int) -> str:
    """The same MQTT URL on another local port (the partition relay)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo, _, _hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _remove(tmp: Path, stack: LocalServices, *, keep: bool) -> None:
    """Remove the run's folder (and the services' state, when it had to live elsewhere)."""
    if keep:
        _log(f"kept {tmp} (services' data and logs, stream log and recovery store)")
        return
    shutil.rmtree(tmp, ignore_errors=True)
    if stack.state != stack.project_state:
        shutil.rmtree(stack.state, ignore_errors=True)


def _drain(bench: _Run, lo: list[int], hi: list[int], gateway: tuple[int, int, list[int]],
           timeout_s: float = 300.0) -> bool:
    """Wait until every generated sample (the load generator's, and the gateway's that left
    its spool) is stored, or 30 s pass without progress."""
    first, nxt, left = gateway
    expected = sum(hi) - sum(lo) + (nxt - first - len(left))
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        got, gw = bench.stored(lo, hi), bench.gateway_stored(first, nxt)
        n = got[1] + gw[1] + gw[2] if got and gw else last
        if n >= expected:
            return True
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 30:
            return False
        time.sleep(0.5)
    return False


def _gps_simulator() -> contextlib.AbstractContextManager[str]:
    """A simulated vehicle stepped in real time with its NMEA GPS on a pty (the port path)."""
    from simulators.nmea import NmeaGps
    from simulators.runner import RealtimeDriver
    from simulators.vehicle import VehicleModel

    @contextlib.contextmanager
    def rig() -> Iterator[str]:
        model = VehicleModel(42, warm_engine=True)
        with RealtimeDriver(model), NmeaGps(model, interval_s=1 / GATEWAY_GPS_HZ) as port:
            yield str(port)

    return rig()


def _result(args: argparse.Namespace, bench: _Run, phases: list[_Phase], *, final: list[int],
            drained: bool, publisher: _Publisher, keeper: _StreamKeeper,
            normal_lag: int, gateway_final: tuple[int, int, list[int]]) -> dict[str, Any]:
    ends = [p.seqs_start for p in phases[1:]] + [final]
    gw_first, gw_next, gw_left = gateway_final
    gw_ends = [p.gateway_start for p in phases[1:]] + [gw_next]
    per_phase: list[dict[str, Any]] = []
    for phase, hi, gw_hi in zip(phases, ends, gw_ends, strict=True):
        generated = sum(hi) - sum(phase.seqs_start)
        got = bench.stored(phase.seqs_start, hi) or (0, 0)
        # The gateway's samples of the phase that left its spool (those still in it at the
        # end are on the device, not lost).
        gw_lo = max(phase.gateway_start, gw_first)
        gw_generated = max(0, gw_hi - gw_lo) - sum(1 for q in gw_left if gw_lo <= q < gw_hi)
        gw = bench.gateway_stored(gw_lo, gw_hi) or (0, 0, 0)
        gw_lost = gw_generated - gw[1] - gw[2]
        per_phase.append({
            "samples": generated + gw_generated,
            "lost": generated - got[1] + gw_lost,
            "lost_load": generated - got[1],
            "duplicated": got[0] - got[1] + gw[0] - gw[1],
            "gateway": {"samples": gw_generated, "lost": gw_lost, "duplicated": gw[0] - gw[1],
                        "dead_lettered_gps_duplicates": gw[2]},
        })
    faults: dict[str, Any] = {}
    for phase, counts in zip(phases[1:], per_phase[1:], strict=True):
        ws_ok = phase.ws is None or (phase.ws["ws_recovery_s"] is not None
                                     and phase.ws["ws_recovery_s"] <= RECOVERY_GOAL_S)
        recovery_s = phase.recovery_s
        if phase.plateau is not None and counts["lost_load"] < phase.plateau - normal_lag:
            # The backlog settled above the normal lag, yet the load generator's loss does
            # not explain that level: it was still draining, not recovered within the wait.
            _log(f"{phase.name}: the backlog looked settled at {phase.plateau:,} samples "
                 f"({recovery_s} s) but only {counts['lost_load']:,} were lost: still "
                 f"draining, not recovered")
            recovery_s = None
        faults[phase.name] = {
            "lost": counts["lost"], "duplicated": counts["duplicated"],
            "recovery_s": recovery_s, "fault_s": phase.fault_s,
            "goal_met": (counts["lost"] == 0 and counts["duplicated"] == 0
                         and recovery_s is not None
                         and recovery_s <= RECOVERY_GOAL_S and ws_ok),
            **(phase.ws or {}),
            "backlog_at_fault_end": phase.backlog_at_end,
            "live_recovery_s": phase.live_recovery_s,
            "stream_restarts": phase.stream_restarts,
            "committed_per_s_after": round(phase.committed_per_s),
            "samples": counts["samples"],
            "gateway": counts["gateway"],
        }
    base = phases[0]
    return {
        "benchmark": "faults",
        "rate": args.rate,
        "normal_lag_samples": normal_lag,
        "offered_per_s": round(base.offered_per_s),
        "committed_per_s_no_fault": round(base.committed_per_s),
        "faults": faults,
        "lost": sum(p["lost"] for p in per_phase),
        "duplicated": sum(p["duplicated"] for p in per_phase),
        "no_fault_lost": per_phase[0]["lost"],
        "no_fault_duplicated": per_phase[0]["duplicated"],
        "generated": sum(final) + sum(p["gateway"]["samples"] for p in per_phase),
        "gateway": {k: sum(p["gateway"][k] for p in per_phase)
                    for k in ("samples", "lost", "duplicated", "dead_lettered_gps_duplicates")},
        "gateway_spooled_at_end": len(gw_left),
        "acked_by_broker": publisher.acked_samples,
        "drained": drained,
        "stream_restarts": keeper.restarts,
        "vehicles": args.vehicles, "batch": args.batch, "processes": args.processes,
        "fault_s_setting": args.fault_s,
        "not_measured": NOT_MEASURED,
        "services": "private PostgreSQL/TimescaleDB, Mosquitto and Redis for the run",
        "settle_s": args.settle_s, "post_s": args.post_s, "baseline_s": args.baseline_s,
        "warmup_s": args.warmup_s,
    }
