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
   received during the whole run.
5. Anchor, same run: `anchor_publish_samples_per_s` publishes the same backlog as telemetry
   batches of the same size and window straight from memory (no spool, no fsync), i.e. what
   the broker and client library allow on this machine.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

BACKLOG_S = 600
OFFERED_READINGS_PER_S = 20 + 1 + 100


def register(parser: argparse.ArgumentParser) -> None:
    """Options of the gateway benchmark (`--json` is added by deploy.bench)."""
    parser.add_argument("--mqtt", help="broker URL (default: a private Mosquitto for the run)")
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--steady-s", type=float, default=60.0)
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


async def _bench(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one scenario
    import asyncio
    import signal
    import subprocess
    import tempfile
    import time
    import uuid
    from pathlib import Path

    import msgspec

    from edge_gateway.protocol import Sample
    from edge_gateway.spool import Spool
    from edge_gateway.testing import PrivateBroker
    from simulators.can_bus import CanSimulator, SlcanAdapter
    from simulators.elm327 import Elm327Emulator
    from simulators.nmea import NmeaGps
    from simulators.runner import RealtimeDriver
    from simulators.vehicle import VehicleModel

    tenant = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-gw-"))
    broker = None
    if args.mqtt:
        url = args.mqtt
    else:
        broker = PrivateBroker(workdir / "broker")
        broker.start()
        url = broker.url
    spool_path = workdir / "spool.db"
    model = VehicleModel(42, warm_engine=True)
    # J1939 cycle times: 50 + 20 + 10 + 10 + 4 + 5 x 1 = 99 frames/s.
    periods = {"EEC1": 20, "EEC2": 50, "CCVS1": 100, "LFE1": 100, "ET1": 250}
    rates = _rates_1hz()
    received: list[int] = []
    arrivals: dict[int, float] = {}
    frames_seen: list[int] = []
    richest: list[Sample] = []

    if args.can_transport == "slcan":
        can_sim: Any = SlcanAdapter(model, periods_ms=periods)
    else:
        a, b, c = uuid.uuid4().bytes[:3]
        group = f"239.{a}.{b}.{c | 1}"  # a private group per run: parallel runs do not mix
        can_sim = CanSimulator(model, interface="udp_multicast", channel=group,
                               periods_ms=periods)
    with (RealtimeDriver(model), Elm327Emulator(model) as obd_port, can_sim as can_port,
          NmeaGps(model) as gps_port):
        config = workdir / "gateway.toml"
        config.write_text(_config(tenant, spool_path, url, obd=obd_port, can=can_port,
                                   gps=gps_port, rates=rates, can_interface=args.can_transport))
        subscriber = asyncio.create_task(_subscribe(
            url, tenant, received=received, arrivals=arrivals, frames_seen=frames_seen,
            richest=richest))
        await asyncio.sleep(1.0)
        log = (workdir / "gateway.log").open("ab")
        argv = [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(config),
                "--log-level", "WARNING"]
        # Blocking spawn on purpose: nothing else runs on the loop yet that could starve.
        gateway = subprocess.Popen(argv, cwd=workdir,  # noqa: ASYNC220
                                   stdout=subprocess.DEVNULL, stderr=log)
        try:
            _log(f"warm-up {args.warmup_s:.0f} s (gateway pid {gateway.pid})")
            await asyncio.sleep(args.warmup_s)
            cpu0, t0 = _cpu_s(gateway.pid), time.monotonic()
            frames0 = frames_seen[-1] if frames_seen else 0
            _log(f"steady state {args.steady_s:.0f} s")
            await asyncio.sleep(args.steady_s)
            cpu1, t1 = _cpu_s(gateway.pid), time.monotonic()
            frames1 = frames_seen[-1] if frames_seen else 0
            rss_mb, peak_mb = _rss_mb(gateway.pid)
            steady_samples = len(received)

            _log("stopping the gateway, pre-filling the spool with a 10-minute backlog")
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            template = richest[0] if richest else _fallback_sample()
            backlog = BACKLOG_S * OFFERED_READINGS_PER_S
            spool = Spool(spool_path, max_samples=10 * backlog)
            first_backlog = spool.next_seq
            now_ms = time.time_ns() // 1_000_000 - BACKLOG_S * 1000
            encoder = msgspec.json.Encoder()

            def body(seq: int) -> bytes:
                t_ms = now_ms + (seq - first_backlog) * 1000 // OFFERED_READINGS_PER_S
                return encoder.encode(msgspec.structs.replace(template, seq=seq, t_ms=t_ms))

            spool.append_bodies([body] * backlog)
            last_backlog = spool.next_seq - 1
            spool.close()

            _log(f"restarting the gateway with {backlog} samples spooled")
            restart = time.monotonic()
            gateway = subprocess.Popen(argv, cwd=workdir,  # noqa: ASYNC220
                                       stdout=subprocess.DEVNULL, stderr=log)
            deadline = restart + 300
            while not all(s in arrivals for s in (first_backlog, last_backlog)):
                if time.monotonic() > deadline:
                    raise TimeoutError("the backlog did not arrive within 300 s")
                await asyncio.sleep(0.05)
            while len({s for s in arrivals if first_backlog <= s <= last_backlog}) < backlog:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            done = max(arrivals[s] for s in range(first_backlog, last_backlog + 1)
                       if s in arrivals)
            catchup = backlog / (done - restart)
            _log(f"backlog drained in {done - restart:.1f} s; letting live data settle")
            await asyncio.sleep(3.0)
            first_seq, next_seq = await _drained_seq_range(spool_path)
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            await asyncio.sleep(1.0)
        finally:
            if gateway.poll() is None:
                gateway.kill()
            subscriber.cancel()
            log.close()
        anchor = await _anchor(url, tenant, template, backlog)
        if broker is not None:
            broker.stop()

    expected = set(range(first_seq, next_seq))
    got = set(received)
    return {
        "benchmark": "gateway",
        "rss_mb": round(rss_mb, 1),
        "rss_peak_mb": round(peak_mb, 1),
        "cpu_pct_of_one_core": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 2),
        "catchup_samples_per_s": round(catchup),
        "backlog_samples": backlog,
        "backlog_method": "pre-filled spool: (20 PIDs + 1 GPS + 100 CAN frames)/s x 600 s",
        "lost": len(expected - got),
        "duplicated": len(received) - len(got),
        "samples_total": next_seq - first_seq,
        "steady_s": args.steady_s,
        "steady_samples_published": steady_samples,
        "obd_signals_at_1hz": len(rates),
        "can_frames_per_s": round((frames1 - frames0) / (t1 - t0), 1) if frames1 else None,
        "can_transport": args.can_transport,
        "anchor_publish_samples_per_s": round(anchor),
        "anchor": "same batches published from memory with aiomqtt (no spool, no fsync)",
        "broker": "private mosquitto" if broker is not None else "given by --mqtt",
    }


def _fallback_sample() -> Any:
    from edge_gateway.protocol import Sample

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


async def _subscribe(url: str, tenant: str, *, received: list[int],
                     arrivals: dict[int, float], frames_seen: list[int],
                     richest: list[Any]) -> None:
    """Record every telemetry seq with its first arrival time, CAN frame counts from status
    messages, and the richest sample seen (the backlog's template)."""
    import re
    import time

    import aiomqtt

    from edge_gateway.mqtt_url import parse_mqtt_url
    from edge_gateway.protocol import Status, Telemetry, decode

    t = parse_mqtt_url(url)
    frames_re = re.compile(r"frames=(\d+)")
    async with aiomqtt.Client(t.host, t.port, username=t.username, password=t.password,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"fleet/v1/{tenant}/#", qos=1)
        async for m in client.messages:
            payload = bytes(m.payload)
            if m.topic.matches("+/+/+/+/telemetry"):
                msg = decode(payload, Telemetry)
                if isinstance(msg, Telemetry):
                    now = time.monotonic()
                    for s in msg.samples:
                        received.append(s.seq)
                        arrivals.setdefault(s.seq, now)
                        if not richest or _field_count(s) > _field_count(richest[0]):
                            richest[:] = [s]
            elif m.topic.matches("+/+/+/+/status") and payload:
                st = decode(payload, Status)
                if isinstance(st, Status) and st.sources and "can" in st.sources:
                    found = frames_re.search(st.sources["can"])
                    if found:
                        frames_seen.append(int(found.group(1)))


def _field_count(sample: Any) -> int:
    return len(msgspec_builtins(sample))


def msgspec_builtins(sample: Any) -> dict[str, Any]:
    """A sample as a plain dict without its unset fields."""
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(sample)
    return data


async def _drained_seq_range(spool_path: Any) -> tuple[int, int]:
    """Wait until the running gateway's spool is empty; return its (first, next) seq."""
    import asyncio
    import contextlib
    import sqlite3
    import time

    deadline = time.monotonic() + 60
    while True:
        with contextlib.closing(sqlite3.connect(spool_path, timeout=5)) as db:
            count = db.execute("SELECT count(*) FROM spool").fetchone()[0]
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if count == 0 or time.monotonic() > deadline:
            return int(meta["first_seq"]), int(meta["next_seq"])
        await asyncio.sleep(0.2)


async def _anchor(url: str, tenant: str, template: Any, backlog: int) -> float:
    """Samples/s publishing the backlog's batches straight from memory (QoS 1, same window)."""
    import asyncio
    import time

    import aiomqtt
    import msgspec

    from edge_gateway.config import GatewaySettings
    from edge_gateway.mqtt_url import parse_mqtt_url
    from edge_gateway.protocol import Source, Telemetry, encode

    gw = GatewaySettings()
    batch = gw.batch_max_samples
    samples = [msgspec.structs.replace(template, seq=i) for i in range(backlog)]
    payloads = [encode(Telemetry(source=Source.GATEWAY, samples=samples[i:i + batch]))
                for i in range(0, backlog, batch)]
    t = parse_mqtt_url(url)
    window = asyncio.Semaphore(gw.max_inflight_messages)
    topic = f"fleet/v1/{tenant}/anchor/telemetry"
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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)
