"""`fleet bench gateway`: the gateway process against the simulators, measured from outside.

Method:

1. The simulators run in this process: one `VehicleModel` stepped in real time, its ELM327
   emulator (pty), an SLCAN adapter (pty) broadcasting J1939 at about 100 frames/s, and an
   NMEA GPS (pty, 1 Hz). The gateway runs as its own process (`fleet gateway`), polling 20
   OBD-II signals at 1 Hz, reading the GPS at 1 Hz and decoding every CAN frame, publishing
   to a private Mosquitto started for the run (tuned like the project's: TCP_NODELAY, 1000
   in-flight, persistence on), so other users of a shared broker neither disturb the figures
   nor are disturbed; `--mqtt URL` uses a given broker instead.
2. Steady state: after a warm-up, the gateway's CPU time (utime + stime from /proc) over
   `--steady-s` seconds of wall time gives `cpu_pct_of_one_core`; `rss_mb` is its resident
   set at the end (VmRSS), `rss_peak_mb` its high-water mark (VmHWM).
3. Catch-up: the gateway is stopped and its spool is pre-filled with a 10-minute outage's
   backlog instead of waiting 10 minutes: every reading offered in 10 minutes stored as its own
   sample ((20 PIDs + 1 GPS fix + 100 CAN frames) x 600 s = 72,600 samples, each a copy of a
   real sample from step 2 with its own seq), a worst case for the gateway's own sampling
   (which merges a second's readings into one sample). The gateway is restarted with the
   simulators still running; `catchup_samples_per_s` is backlog size / (time of the last
   backlog sample's arrival - gateway restart).
4. `lost` / `duplicated`: every seq the gateway ever assigned (first_seq .. next_seq - 1,
   read from the spool at the end, after it drained) is compared with the seqs a QoS 1 subscriber
   received during the whole run. The subscriber has a persistent session and reconnects, so a
   dropped connection delays its count but loses nothing (`_Subscriber`).
5. Anchor, same run: `anchor_publish_samples_per_s` publishes the same backlog as telemetry
   batches of the same size and window straight from memory (no spool, no fsync), i.e. what
   the broker and client library allow on this machine.
6. Clean-up: `_rig()` owns the broker, the simulators, the subscriber and the gateway process
   and stops them on every exit (an error, a timeout, Ctrl-C); a failed run keeps its work dir
   with the logs and says where the backlog is.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from edge_gateway.errors import GatewayError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator
    from pathlib import Path

    from core.protocol import Sample
    from edge_gateway.testing import PrivateBroker

BACKLOG_S = 600
OFFERED_READINGS_PER_S = 20 + 1 + 100
BACKLOG_TIMEOUT_S = 300.0
"""Default limit for the backlog to arrive after the restart (it takes 2-20 s here)."""
GATEWAY_STOP_S = 30.0
"""How long a SIGTERMed gateway may take to drain its in-flight PUBACKs before SIGKILL."""
SUBSCRIBE_TIMEOUT_S = 30.0
SUBSCRIBER_SESSION_S = 3600
"""The subscriber's MQTT session expiry: the broker keeps its queue across a reconnect."""
FINAL_DELIVERY_S = 10.0
"""After the last stop, how long the subscriber may take to read what the broker acknowledged."""
_FRAMES_RE = re.compile(r"frames=(\d+)")


def register(parser: argparse.ArgumentParser) -> None:
    """Options of the gateway benchmark (`--json` is added by deploy.bench)."""
    parser.add_argument("--mqtt", help="broker URL (default: a private Mosquitto for the run)")
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--backlog-timeout-s", type=float, default=BACKLOG_TIMEOUT_S,
                        help="give up when the backlog has not arrived this long after the "
                             "restart (seconds)")
    parser.add_argument("--can-transport", choices=["udp_multicast", "slcan"],
                        default="udp_multicast",
                        help="how the simulated CAN bus reaches the gateway process: "
                             "python-can's udp_multicast (one datagram per frame, like "
                             "socketcan on a Pi; needs msgpack) or an SLCAN adapter on a pty")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints progress to stderr and one JSON object last on stdout."""
    import asyncio

    from deploy.bench import emit

    return emit(asyncio.run(_bench(args)), getattr(args, "json", False))


def _log(message: str) -> None:
    print(f"bench gateway: {message}", file=sys.stderr, flush=True)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    """One run in a temp dir, removed after a success and kept (with the broker's and the
    gateway's logs) after a failure."""
    import shutil
    import tempfile
    from pathlib import Path

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-gw-"))
    try:
        async with _rig(args, workdir) as rig:
            result = await _measure(rig, args)
    except BaseException:
        _log(f"failed; logs kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return result


class _Rig:
    """What one run starts. `_rig()` owns every piece, so each is stopped on any exit."""

    def __init__(self, args: argparse.Namespace, workdir: Path, url: str,
                 broker: PrivateBroker | None, subscriber: _Subscriber) -> None:
        self.args = args
        self.workdir = workdir
        self.url = url
        self.broker = broker
        self.subscriber = subscriber
        self.spool_path = workdir / "spool.db"
        self.config_path = workdir / "gateway.toml"
        self.log_path = workdir / "gateway.log"
        self.gateway: subprocess.Popen[bytes] | None = None

    def start_gateway(self) -> subprocess.Popen[bytes]:
        """Start the `fleet gateway` process (stderr appended to gateway.log)."""
        argv = [sys.executable, "-m", "deploy.cli", "gateway", "--config",
                str(self.config_path), "--log-level", "WARNING"]
        with self.log_path.open("ab") as log:
            self.gateway = subprocess.Popen(argv, cwd=self.workdir,
                                            stdout=subprocess.DEVNULL, stderr=log)
        return self.gateway

    def stop_gateway(self) -> None:
        """SIGTERM (the gateway drains the PUBACKs of batches in flight), SIGKILL if that
        takes longer than `GATEWAY_STOP_S`. Blocking; idempotent."""
        proc, self.gateway = self.gateway, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=GATEWAY_STOP_S)
            except subprocess.TimeoutExpired:
                _log(f"gateway pid {proc.pid} ignored SIGTERM for {GATEWAY_STOP_S:.0f} s; "
                     "killing it")
                proc.kill()
                proc.wait()

    def broker_log_tail(self, pattern: str = "disconnect|drop|timeout|error",
                        lines: int = 8) -> list[str]:
        """The private broker's log lines matching `pattern` (the last few), for diagnostics."""
        if self.broker is None:
            return []
        path = self.broker.dir / "mosquitto.log"
        if not path.exists():
            return []
        regex = re.compile(pattern, re.IGNORECASE)
        found = [line for line in path.read_text(errors="replace").splitlines()
                 if regex.search(line)]
        return found[-lines:]


@contextlib.asynccontextmanager
async def _rig(args: argparse.Namespace, workdir: Path) -> AsyncIterator[_Rig]:
    """Start the broker, the simulators, the subscriber and write the gateway's config;
    on leaving, for whatever reason (an exception, a timeout, cancellation by Ctrl-C), stop
    the gateway process, the subscriber, the simulators and the broker, in that order."""
    import asyncio
    import uuid

    from edge_gateway.testing import PrivateBroker
    from simulators.can_bus import CanSimulator, SlcanAdapter
    from simulators.elm327 import Elm327Emulator
    from simulators.nmea import NmeaGps
    from simulators.runner import RealtimeDriver
    from simulators.vehicle import VehicleModel

    tenant = f"bench{uuid.uuid4().hex[:8]}"
    # No parking between trips: a parked vehicle's ECU rightly answers "UNABLE TO CONNECT",
    # and a run that lasts past its first trip (4 minutes for this seed) would then measure an
    # idle OBD-II source.
    model = VehicleModel(42, warm_engine=True, park_between_trips=False)
    # J1939 cycle times: 50 + 20 + 10 + 10 + 4 + 5 x 1 = 99 frames/s.
    periods = {"EEC1": 20, "EEC2": 50, "CCVS1": 100, "LFE1": 100, "ET1": 250}
    async with contextlib.AsyncExitStack() as stack:
        broker: PrivateBroker | None = None
        url = args.mqtt
        if not url:
            broker = stack.enter_context(PrivateBroker(workdir / "broker"))
            url = broker.url
        stack.enter_context(RealtimeDriver(model))
        # Devices by link, as /dev/serial/by-id names a real adapter: the gateway finds them
        # again whatever pty number they have.
        obd_port = stack.enter_context(Elm327Emulator(model, link_path=workdir / "obd"))
        if args.can_transport == "slcan":
            can_sim: Any = SlcanAdapter(model, periods_ms=periods, link_path=workdir / "can")
        else:
            a, b, c = uuid.uuid4().bytes[:3]
            group = f"239.{a}.{b}.{c | 1}"  # a private group per run: parallel runs do not mix
            can_sim = CanSimulator(model, interface="udp_multicast", channel=group,
                                   periods_ms=periods)
        can_port = stack.enter_context(can_sim)
        gps_port = stack.enter_context(NmeaGps(model, link_path=workdir / "gps"))

        subscriber = _Subscriber(url, tenant)
        task = asyncio.create_task(subscriber.run(), name="bench-subscriber")
        stack.push_async_callback(_cancel, task)
        rig = _Rig(args, workdir, url, broker, subscriber)
        stack.callback(rig.stop_gateway)  # last in, first out: before everything it uses
        rig.config_path.write_text(_config(
            tenant, rig.spool_path, url, obd=obd_port, can=can_port, gps=gps_port,
            rates=_rates_1hz(), can_interface=args.can_transport))
        await subscriber.wait_subscribed(task, SUBSCRIBE_TIMEOUT_S)
        yield rig


async def _cancel(task: asyncio.Task[None]) -> None:
    import asyncio

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _measure(rig: _Rig, args: argparse.Namespace) -> dict[str, Any]:
    """The measured scenario: steady state, stop, pre-filled backlog, restart, drain."""
    import asyncio
    import time

    from deploy.bench import cpu_seconds, memory_mib

    sub = rig.subscriber
    gateway = rig.start_gateway()
    _log(f"warm-up {args.warmup_s:.0f} s (gateway pid {gateway.pid})")
    await sub.sleep(args.warmup_s)
    cpu0, t0 = cpu_seconds([gateway.pid]), time.monotonic()
    frames0 = sub.frames_seen[-1] if sub.frames_seen else 0
    _log(f"steady state {args.steady_s:.0f} s")
    await sub.sleep(args.steady_s)
    cpu1, t1 = cpu_seconds([gateway.pid]), time.monotonic()
    frames1 = sub.frames_seen[-1] if sub.frames_seen else 0
    rss_mb, peak_mb = memory_mib([gateway.pid])
    steady_samples = len(sub.received)

    _log("stopping the gateway, pre-filling the spool with a 10-minute backlog")
    # Off the event loop, so the subscriber keeps reading (and acknowledging) meanwhile.
    await asyncio.to_thread(rig.stop_gateway)
    template = sub.richest or _fallback_sample()
    backlog = BACKLOG_S * OFFERED_READINGS_PER_S
    first_backlog, last_backlog = await asyncio.to_thread(
        _prefill, rig.spool_path, template, backlog)

    _log(f"restarting the gateway with {backlog} samples spooled")
    restart = time.monotonic()
    rig.start_gateway()
    deadline = restart + args.backlog_timeout_s
    wanted = range(first_backlog, last_backlog + 1)
    missing, looked = set(wanted), 0
    while missing:
        # Only the seqs that came since the last look: this loop shares the CPU with the
        # gateway it measures.
        missing.difference_update(sub.received[looked:])
        looked = len(sub.received)
        if time.monotonic() > deadline:
            raise GatewayError(await _missing_backlog(rig, wanted, args.backlog_timeout_s))
        await sub.sleep(0.05)
    done = max(sub.arrivals[s] for s in wanted)
    catchup = backlog / (done - restart)
    _log(f"backlog drained in {done - restart:.1f} s; letting live data settle")
    await sub.sleep(3.0)
    first_seq, next_seq = await _drained_seq_range(rig.spool_path)
    await asyncio.to_thread(rig.stop_gateway)
    # The last batches were acknowledged by the broker before the gateway exited; give the
    # subscriber a bounded moment to read them.
    expected = range(first_seq, next_seq)
    settle = time.monotonic() + FINAL_DELIVERY_S
    while sub.count_in(expected) < len(expected) and time.monotonic() < settle:
        await sub.sleep(0.05)
    anchor = await _anchor(rig.url, sub.tenant, template, backlog)

    got = set(sub.received)
    return {
        "benchmark": "gateway",
        "rss_mb": round(rss_mb, 1),
        "rss_peak_mb": round(peak_mb, 1),
        "cpu_pct_of_one_core": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 2),
        "catchup_samples_per_s": round(catchup),
        "backlog_samples": backlog,
        "backlog_method": "pre-filled spool: (20 PIDs + 1 GPS + 100 CAN frames)/s x 600 s",
        "lost": len(set(expected) - got),
        "duplicated": len(sub.received) - len(got),
        "samples_total": len(expected),
        "subscriber_reconnects": sub.reconnects,
        "steady_s": args.steady_s,
        "steady_samples_published": steady_samples,
        "obd_signals_at_1hz": len(_rates_1hz()),
        "can_frames_per_s": round((frames1 - frames0) / (t1 - t0), 1) if frames1 else None,
        "can_transport": args.can_transport,
        "anchor_publish_samples_per_s": round(anchor),
        "anchor": "same batches published from memory with aiomqtt (no spool, no fsync)",
        "broker": "private mosquitto" if rig.broker is not None else "given by --mqtt",
    }


def _prefill(spool_path: Path, template: Sample, backlog: int) -> tuple[int, int]:
    """Append `backlog` copies of `template` with their own seq and times spread over the
    last `BACKLOG_S` seconds; returns the (first, last) backlog seq."""
    import time

    import msgspec

    from edge_gateway.spool import Spool

    spool = Spool(spool_path, max_samples=10 * backlog)
    try:
        first = spool.next_seq
        now_ms = time.time_ns() // 1_000_000 - BACKLOG_S * 1000
        encoder = msgspec.json.Encoder()

        def body(seq: int) -> bytes:
            t_ms = now_ms + (seq - first) * 1000 // OFFERED_READINGS_PER_S
            return encoder.encode(msgspec.structs.replace(template, seq=seq, t_ms=t_ms))

        spool.append_bodies([body] * backlog)
        return first, spool.next_seq - 1
    finally:
        spool.close()


async def _missing_backlog(rig: _Rig, wanted: range, timeout_s: float) -> str:
    """Why the backlog did not arrive: whether the gateway still holds it (not sent or not
    acknowledged) or sent it all and the broker or the subscriber lost it."""
    import asyncio

    count, _first_seq, next_seq = await asyncio.to_thread(_spool_state, rig.spool_path)
    sub = rig.subscriber
    where = (f"the gateway still holds {count} samples in its spool" if count
             else f"the gateway's spool is empty (next seq {next_seq}, all acknowledged)")
    text = (f"{sub.count_in(wanted)} of {len(wanted)} backlog samples arrived within "
            f"{timeout_s:.0f} s; {where}; subscriber reconnects {sub.reconnects}"
            f"{f' (last: {sub.last_error})' if sub.last_error else ''}")
    tail = rig.broker_log_tail()
    if tail:
        text += "; broker log: " + " | ".join(tail)
    return text


class _Subscriber:
    """Records every telemetry seq with its first arrival time, CAN frame counts from status
    messages, and the richest sample seen (the backlog's template).

    QoS 1 with a persistent session (a fixed client id, clean start off, a session expiry):
    should its connection drop, the broker queues the messages for it (up to the private
    broker's `max_queued_messages`, far above a run's few hundred batches) and they arrive
    after the reconnect. With a clean session they would be acknowledged to the gateway
    ("no matching subscribers") and gone, and the benchmark would wait for them in vain.
    """

    def __init__(self, url: str, tenant: str) -> None:
        import asyncio

        self.url = url
        self.tenant = tenant
        self.received: list[int] = []
        self.arrivals: dict[int, float] = {}
        self.frames_seen: list[int] = []
        self.richest: Sample | None = None
        self._richest_fields = 0
        self.reconnects = 0
        self.last_error = ""
        self.rejected = 0
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Subscribe and record until cancelled; reconnects (same session) on MQTT errors."""
        import asyncio

        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from core.mqtt_url import parse_mqtt_url

        self._task = asyncio.current_task()
        t = parse_mqtt_url(self.url)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SUBSCRIBER_SESSION_S
        while True:
            try:
                async with aiomqtt.Client(
                        t.host, t.port, username=t.username, password=t.password,
                        identifier=f"bench-sub-{self.tenant}", clean_start=False,
                        properties=props, protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await client.subscribe(f"fleet/v1/{self.tenant}/#", qos=1)
                    self._subscribed.set()
                    async for m in client.messages:
                        self._handle(m)
            except aiomqtt.MqttError as exc:
                self.reconnects += 1
                self.last_error = str(exc)[:200]
                _log(f"subscriber: {exc}; reconnecting")
                await asyncio.sleep(0.5)

    def _handle(self, m: Any) -> None:
        import time

        from core.protocol import Status, Telemetry, decode

        payload = bytes(m.payload)
        if m.topic.matches("+/+/+/+/telemetry"):
            msg = decode(payload, Telemetry)
            if not isinstance(msg, Telemetry):
                self.rejected += 1  # counted: its samples then show up as lost
                return
            now = time.monotonic()
            for s in msg.samples:
                self.received.append(s.seq)
                self.arrivals.setdefault(s.seq, now)
                fields = _field_count(s)
                if fields > self._richest_fields:
                    self.richest, self._richest_fields = s, fields
        elif m.topic.matches("+/+/+/+/status") and payload:
            st = decode(payload, Status)
            if isinstance(st, Status) and st.sources and "can" in st.sources:
                found = _FRAMES_RE.search(st.sources["can"])
                if found:
                    self.frames_seen.append(int(found.group(1)))

    def count_in(self, seqs: range) -> int:
        """How many distinct seqs of `seqs` arrived."""
        return sum(1 for s in seqs if s in self.arrivals)

    def check(self) -> None:
        """Raise the subscriber's own failure (a bug, not a dropped connection) at once."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            raise GatewayError(f"the benchmark's subscriber failed: {exc!r}") from exc

    async def sleep(self, seconds: float) -> None:
        """Sleep, checking the subscriber is alive (a dead one would make a wait hang)."""
        import asyncio
        import time

        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.5))

    async def wait_subscribed(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Wait until the subscription is in place (nothing the gateway sends is missed)."""
        import asyncio

        self._task = task
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            self.check()
            raise GatewayError(f"the benchmark's subscriber could not subscribe within "
                               f"{timeout_s:.0f} s ({self.last_error or 'no error'})") from None


def _fallback_sample() -> Any:
    from core.protocol import Sample

    return Sample(seq=0, t_ms=1_780_000_000_000, rpm=900.0, speed_kph=40.0, coolant_c=90.0,
                  fuel_pct=50.0, lat_deg=52.5, lon_deg=13.4, battery_v=14.0)


def _rates_1hz() -> dict[str, float]:
    """Twenty OBD-II signals at 1 Hz (the adapter voltage counts as one)."""
    from edge_gateway.signals import SignalSource, signals_of

    names = [s.name for s in signals_of(SignalSource.OBD) if s.name != "obd_dtcs"]
    return dict.fromkeys(names[:20], 1.0)


def _config(tenant: str, spool: Any, url: str, *, obd: str, can: str, gps: str,
            rates: dict[str, float], can_interface: str = "slcan") -> str:
    rate_items = ", ".join(f"{k} = {v}" for k, v in rates.items())
    return f"""
[gateway]
tenant = "{tenant}"
vehicle = "bench1"
spool_path = "{spool}"
status_interval_s = 5
[mqtt]
url = "{url}"
[obd]
port = "{obd}"
[can]
interface = "{can_interface}"
channel = "{can}"
[gps]
port = "{gps}"
[signals]
rates_hz = {{ {rate_items} }}
"""


def _field_count(sample: Any) -> int:
    return len(msgspec_builtins(sample))


def msgspec_builtins(sample: Any) -> dict[str, Any]:
    """A sample as a plain dict without its unset fields."""
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(sample)
    return data


def _spool_state(spool_path: Path) -> tuple[int, int, int]:
    """(samples waiting, first seq, next seq) of a spool, read beside the running gateway."""
    with contextlib.closing(sqlite3.connect(spool_path, timeout=5)) as db:
        count = db.execute("SELECT count(*) FROM spool").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return int(count), int(meta["first_seq"]), int(meta["next_seq"])


async def _drained_seq_range(spool_path: Path) -> tuple[int, int]:
    """Wait (up to 60 s) until the running gateway's spool is empty; its (first, next) seq."""
    import asyncio
    import time

    deadline = time.monotonic() + 60
    while True:
        count, first_seq, next_seq = await asyncio.to_thread(_spool_state, spool_path)
        if count == 0 or time.monotonic() > deadline:
            return first_seq, next_seq
        await asyncio.sleep(0.2)


async def _anchor(url: str, tenant: str, template: Any, backlog: int) -> float:
    """Samples/s publishing the backlog's batches straight from memory (QoS 1, same window)."""
    import asyncio
    import time

    import aiomqtt
    import msgspec

    from core.mqtt_url import parse_mqtt_url
    from core.protocol import Source, Telemetry, encode
    from edge_gateway.config import GatewaySettings

    gw = GatewaySettings()
    batch = gw.batch_max_samples
    samples = [msgspec.structs.replace(template, seq=i) for i in range(backlog)]
    payloads = [encode(Telemetry(source=Source.GATEWAY, samples=samples[i:i + batch]))
                for i in range(0, backlog, batch)]
    t = parse_mqtt_url(url)
    window = asyncio.Semaphore(gw.max_inflight_messages)
    # Outside the benchmark subscriber's `fleet/v1/{tenant}/#`: the anchor measures publishing
    # alone, and its seqs must not mix with the gateway's.
    topic = f"fleet/v1/anchor-{tenant}/anchor/telemetry"
    status_topic = f"fleet/v1/{tenant}/bench1/status"
    async with aiomqtt.Client(t.host, t.port, username=t.username, password=t.password,
                              protocol=aiomqtt.ProtocolVersion.V5,
                              max_inflight_messages=gw.max_inflight_messages + 8) as client:
        client.pending_calls_threshold = gw.max_inflight_messages + 8

        async def one(payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()

        start = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for payload in payloads:
                await window.acquire()
                tg.create_task(one(payload))
        rate = backlog / (time.monotonic() - start)
        await client.publish(status_topic, b"", qos=1, retain=True)  # leave no retained status
        return rate


