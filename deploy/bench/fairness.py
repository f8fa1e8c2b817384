"""`fleet bench fairness`: does one flooding device slow everyone else down? (issue #23)

Method: a scratch database with `--tenants` tenants of `--vehicles` vehicles in all per
round and phase. One `fleet stream` (every detector on, the default `[limits]`, subscribed
to every tenant with a share group of its own) runs for `--rounds` rounds of two phases of
`--duration` seconds each, with a pause after each phase:

1. the anchor: the normal fleet alone, each vehicle publishing one sample a second (QoS 1,
   one publisher thread per tenant, `fleet bench e2e`'s publisher);
2. a fleet of the same size, and beside it the flooder, one more vehicle of its first
   tenant: a separate process publishing one-sample messages on the flooder's topic as fast
   as its client can (QoS 1, 1,000 in flight), with its own device login (`--flooder
   device`: the broker's plugin holds it back, where loaded) or a service login (`--flooder
   service`: only the stream's `[limits]` hold it).

The phases alternate because the p99 of this 2-core machine drifts over minutes: each phase
is reported over all its rounds (latency over every sample) and round by round, and the
p99 ratio both pooled and as the median of the rounds' ratios.

Per phase: the normal vehicles' end-to-end latency p50/p99 (stored ``received_at`` minus the
sample's time, which is its publish time), and the CPU seconds of the stream's processes and
of the broker; lost counts acknowledged normal samples not stored, over the whole run. For
the flood: messages published, messages admitted past the limits (stored, or dead-lettered by
the pipeline's own filters), over-limit dead letters kept with their payload, messages
dropped unread (counted by the intake's summary dead letters), refused by the broker (the
rest), and the flooder's own CPU.

Goals (the issue): normal p99 with the flood within 1.2x of the anchor's, lost 0.
The JSON result is the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from core.ports import free_port_block
from deploy.bench import cpu_seconds, process_tree

PHASES = ("anchor", "flood")

_FLOODER = """
import sys, time, uuid
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from core.mqtt_url import parse_mqtt_url
from core.protocol import Sample, Source, Telemetry, encode
url, topic, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = parse_mqtt_url(url)
# A device login must connect as itself; a service login takes any id.
cid = t.username if t.username and "/" in t.username else f"bench-flood-{uuid.uuid4().hex}"
c = Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=MQTTProtocolVersion.MQTTv5)
c.username_pw_set(t.username, t.password)
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(2000)
c.connect(t.host, t.port)
c.loop_start()
end, seq, sent = time.monotonic() + duration, 0, 0
while time.monotonic() < end:
    seq += 1
    payload = encode(Telemetry(source=Source.SIMULATOR, samples=[Sample(
        seq=seq, t_ms=time.time_ns() // 1_000_000, lat_deg=52.5, lon_deg=13.4,
        speed_kph=50.0)]))
    if c.publish(topic, payload, qos=1).rc == 0:
        sent += 1
    else:
        time.sleep(0.0005)  # paho's queue is full: the broker sets the pace
c.disconnect()
c.loop_stop()
print(sent)
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet bench fairness` (`--json` is added by deploy.bench)."""
    parser.add_argument("--duration", type=float, default=40.0,
                        help="each phase of each round, s")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (anchor, flood): p99 is noisy on this machine, so the "
                             "phases alternate and each is reported over all its rounds")
    parser.add_argument("--vehicles", type=int, default=1000, help="normal vehicles, 1 Hz each")
    parser.add_argument("--tenants", type=int, default=10, help="tenants they belong to")
    parser.add_argument("--processes", type=int, default=2, help="stream processes")
    parser.add_argument("--pause", type=float, default=15.0,
                        help="quiet time between the phases, s")
    parser.add_argument("--flooder", choices=("device", "service"), default="device",
                        help="the flooder's login: its own device login (held back by the "
                             "broker's plugin where it is loaded, then the stream), or a "
                             "service login (the stream's [limits] alone)")
    parser.set_defaults(func=run)


def _phase(owner: str, tenants: list[str], started_ms: int, ended_ms: int
           ) -> tuple[float | None, float | None, int]:
    """Latency p50/p99 (ms) and rows of the normal vehicles whose samples were taken in
    [started_ms, ended_ms)."""
    import psycopg

    with psycopg.connect(owner) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM t.received_at - t.time) * 1000), count(*) "
            "FROM telemetry t JOIN vehicles v ON v.id = t.vehicle_id "
            "JOIN tenants n ON n.id = t.tenant_id WHERE n.slug = ANY(%s) "
            "AND v.code <> 'flood' AND t.time >= to_timestamp(%s / 1000.0) "
            "AND t.time < to_timestamp(%s / 1000.0)",
            (tenants, started_ms, ended_ms)).fetchone()
    pct = row[0] if row else None
    rows = int(row[1]) if row else 0
    if not pct:
        return None, None, rows
    return round(pct[0], 1), round(pct[1], 1), rows


def _summary(owner: str, tenants: list[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase over every round: latency over all its samples, the processes' CPU summed,
    and each round's own figures."""
    p50, p99, rows = _phase(owner, tenants, 0, 7_258_118_400_000)  # up to year 2200
    return {"latency_p50_ms": p50, "latency_p99_ms": p99, "normal_samples": rows,
            "stream_cpu_s": round(sum(r["stream_cpu_s"] for r in runs), 1),
            "broker_cpu_s": (round(sum(r["broker_cpu_s"] for r in runs), 1)
                             if all(r["broker_cpu_s"] is not None for r in runs) else None),
            "rounds": runs}


def _wait_stored(owner: str, want: int, timeout_s: float = 300.0) -> int:
    import psycopg

    deadline, last, last_change, n = time.monotonic() + timeout_s, -1, time.monotonic(), 0
    while time.monotonic() < deadline:
        with psycopg.connect(owner) as conn:
            r = conn.execute("SELECT count(*) FROM telemetry t JOIN vehicles v "
                             "ON v.id = t.vehicle_id WHERE v.code <> 'flood'").fetchone()
        n = int(r[0]) if r else 0
        if n >= want:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 30:
            break
        time.sleep(0.5)
    return n


def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one linear script
    """Run the benchmark; the last line of output is the JSON result."""
    import psycopg

    from core.protocol import Channel, topic_for
    from core.settings import load_settings
    from deploy.bench import emit
    from deploy.bench.e2e import (
        _broker_pid,
        _presubscribe,
        _Publisher,
        end_sessions,
        seed_tenant,
    )
    from deploy.bench.scratch import scratch_database
    from stream.config import StreamSettings

    settings = load_settings(StreamSettings, getattr(args, "config", None))
    tmp = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    proc: subprocess.Popen[bytes] | None = None
    with scratch_database(settings.database, "fairness") as db, contextlib.ExitStack() as stop:
        owner, ingest = db.owner_url, db.ingest_url
        prefix = ""

        def finish() -> None:
            _stop(proc)
            # Subscribed to every tenant: its sessions must not outlive the bench (they
            # would take every device's telemetry for 10 minutes).
            if prefix:
                end_sessions(settings.mqtt.url, prefix, args.processes)

        stop.callback(finish)
        run_id = uuid.uuid4().hex[:6]
        per = max(1, args.vehicles // args.tenants)
        # A fleet of its own per round and phase: samples carry per-vehicle sequence numbers,
        # and a later run of the same vehicles would repeat them (dropped as redeliveries).
        tenants = {(r, phase): [f"fair{run_id}r{r}{phase[0]}{i}" for i in range(args.tenants)]
                   for r in range(args.rounds) for phase in PHASES}
        for (_r, phase), slugs in tenants.items():
            for t in slugs:
                flood = phase == "flood" and t == slugs[0]
                seed_tenant(owner, t, [f"n{i:04d}" for i in range(per)]
                            + (["flood"] if flood else []))
        group, prefix = f"fair{run_id}", f"fair{run_id}"
        _presubscribe(settings.mqtt.url, prefix, group, "+", args.processes)
        env = dict(os.environ)
        env.update({
            "FLEET_DATABASE_INGEST_URL": ingest, "FLEET_MQTT_URL": settings.mqtt.url,
            "FLEET_REDIS_URL": settings.redis.url, "FLEET_SOURCE_TENANT": "+",
            "FLEET_SOURCE_SHARE_GROUP": group, "FLEET_SOURCE_CLIENT_ID_PREFIX": prefix,
            "FLEET_SOURCE_PARTITIONS": str(args.processes),
            "FLEET_SOURCE_SESSION_EXPIRY_S": "600",
            "FLEET_STREAM_PROCESSES": str(args.processes),
            "FLEET_STREAM_RECOVERY_DIR": str(tmp / "recovery"),
            "FLEET_STREAM_PROCESS_BASE_PORT": str(free_port_block(args.processes)),
        })
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli"], env=env,
                                stdout=(tmp / "stream.log").open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(5.0)
        broker = _broker_pid()
        runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
        acked_total = lost = flood_sent = 0
        flooder_cpu_s = 0.0
        for r in range(args.rounds):
            for phase in PHASES:
                slugs = tenants[(r, phase)]
                print(f"round {r + 1}/{args.rounds}, {phase}: {args.duration:.0f} s",
                      file=sys.stderr)
                pubs = [_Publisher(settings.mqtt.url, t, [f"n{i:04d}" for i in range(per)],
                                   rate=per, batch=1, duration_s=args.duration,
                                   spacing_ms=1000) for t in slugs]
                flooder = None
                children_cpu0 = _children_cpu_s()
                if phase == "flood":
                    # Niced: on a machine this small the flooder would otherwise take a core
                    # from the server side it runs beside (a real one runs in a vehicle). It
                    # still floods: it gets whatever CPU the server side leaves.
                    flooder = subprocess.Popen(
                        ["nice", "-n", "19", sys.executable, "-c", _FLOODER,
                         _flood_url(args, settings.mqtt.url, slugs[0]),
                         topic_for(slugs[0], "flood", Channel.TELEMETRY), str(args.duration)],
                        stdout=subprocess.PIPE, env=env)
                stream_cpu0 = cpu_seconds(process_tree(proc.pid))
                broker_cpu0 = cpu_seconds([broker]) if broker else 0.0
                started_ms = time.time_ns() // 1_000_000
                for p in pubs:
                    p.start()
                for p in pubs:
                    p.join(args.duration + 90)
                ended_ms = time.time_ns() // 1_000_000
                if flooder is not None:
                    out, _ = flooder.communicate(timeout=120)
                    flood_sent += int(out.decode().strip().splitlines()[-1])
                    flooder_cpu_s += _children_cpu_s() - children_cpu0
                acked_total += sum(p.acked_samples for p in pubs)
                # Cumulative: earlier samples must stay stored through later floods too.
                lost = max(0, acked_total - _wait_stored(owner, acked_total))
                p50, p99, rows = _phase(owner, slugs, started_ms, ended_ms)
                runs[phase].append({
                    "latency_p50_ms": p50, "latency_p99_ms": p99, "normal_samples": rows,
                    "stream_cpu_s": round(cpu_seconds(process_tree(proc.pid)) - stream_cpu0, 1),
                    "broker_cpu_s": (round(cpu_seconds([broker]) - broker_cpu0, 1)
                                     if broker else None)})
                time.sleep(args.pause)
        with psycopg.connect(owner) as conn:
            # Admitted past the limits: stored, or dead-lettered by the pipeline itself (the
            # flood repeats its position within a millisecond: `duplicate` filter).
            admitted = conn.execute(
                "SELECT (SELECT count(*) FROM telemetry t JOIN vehicles v "
                "ON v.id = t.vehicle_id WHERE v.code = 'flood'), (SELECT count(*) FROM "
                "ingest_rejects WHERE vehicle_code = 'flood' AND reason <> 'over_limit')"
                ).fetchone()
            details = [r[0] for r in conn.execute(
                "SELECT detail FROM ingest_rejects WHERE reason = 'over_limit'").fetchall()]
        dropped = sum(int(m.group(1)) for d in details
                      if (m := re.match(r"(\d+) more messages", d)))
        kept = sum(1 for d in details if not re.match(r"\d+ more messages", d))
        phases = {phase: _summary(owner, [t for (_r, ph), ts in tenants.items() if ph == phase
                                          for t in ts], runs[phase]) for phase in PHASES}
        ratios = [round(f["latency_p99_ms"] / a["latency_p99_ms"], 2)
                  for a, f in zip(runs["anchor"], runs["flood"], strict=True)
                  if a["latency_p99_ms"] and f["latency_p99_ms"]]
        anchor_p99 = phases["anchor"]["latency_p99_ms"]
        flood_p99 = phases["flood"]["latency_p99_ms"]
        result: dict[str, Any] = {
            "vehicles": per * args.tenants, "tenants": args.tenants, "rounds": args.rounds,
            "duration_s": args.duration, "anchor": phases["anchor"], "flood": phases["flood"],
            "p99_ratio_to_anchor": (round(flood_p99 / anchor_p99, 2)
                                    if anchor_p99 and flood_p99 else None),
            "p99_ratio_per_round": ratios,
            "p99_ratio_median": statistics.median(ratios) if ratios else None,
            "p99_goal_ratio": 1.2,
            "lost": lost,
            "flooder": args.flooder,
            "flood_published": flood_sent,
            "flooder_cpu_s": round(flooder_cpu_s, 1),
            "flood_admitted_messages": sum(admitted) if admitted else 0,
            "flood_dead_letters_kept": kept, "flood_dropped_unread": dropped,
            "flood_refused_by_broker": max(0, flood_sent - (sum(admitted) if admitted else 0)
                                           - kept - dropped),
            "limits": {"device_messages_per_s": settings.limits.device_messages_per_s,
                       "burst_s": settings.limits.burst_s,
                       "over_limit_kept_per_s": settings.limits.over_limit_kept_per_s},
        }
        return emit(result, args.json)


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _flood_url(args: argparse.Namespace, service_url: str, tenant: str) -> str:
    """The flooder's broker URL: the service login, or a device login of its own made on
    the project's broker the way the API provisions one."""
    if args.flooder == "service":
        return service_url
    import secrets
    from urllib.parse import quote

    from core.mqtt_url import parse_mqtt_url
    from core.protocol import device_login
    from deploy.services import local_services

    login, password = device_login(tenant, "flood"), secrets.token_urlsafe(16)
    local_services().add_device_login(login, password)
    t = parse_mqtt_url(service_url)
    return f"mqtt://{quote(login, safe='')}:{password}@{t.host}:{t.port}"


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
