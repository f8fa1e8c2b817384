"""`fleet bench ws`: live WebSocket fan-out — staleness and memory under load.

Method: a throwaway database with one tenant, `--vehicles` vehicles and their vehicle_state
rows (for the snapshots); the API runs as its own process (`fleet api`). This process opens
`--clients` WebSocket connections, spread over `--client-procs` load-client processes (all
subscribed to the whole tenant); `--slow-pct` of them
are deliberately slow readers (one frame every `--slow-delay-s`), the rest read as fast as
they can. A publisher sends every vehicle's position at `--rate-hz` to Redis exactly as the
stream does (`core.live`: JSON `LivePosition` on `fleet:live:{tenant}`, `t_ms` = `sent_ms`
= publish time), spread evenly over each second. The stream is not in the loop: this measures
the API's fan-out alone (the end-to-end pipeline has its own benchmark, `fleet bench e2e`).

Figures, over `--duration-s` after `--warmup-s`:
- `staleness_p50_ms` / `staleness_p99_ms` / `staleness_max_ms`: receive time minus `sent_ms`
  for every position delivered to the measuring clients (`--measure-pct` of the fast ones;
  decoding every frame in every client would make the load client, not the API, the limit);
- `slow_staleness_p99_ms`: the same for the slow readers (they get coalesced latest state);
- `api_rss_mb` at the end, `api_rss_peak_mb`, `api_rss_series_mb` (every 5 s: bounded
  memory shows as a flat series), `api_cpu_pct` of one core;
- anchor, same run: `anchor_redis_staleness_p99_ms`, a plain Redis subscriber in this
  process receiving the same messages (the floor the API's fan-out adds to).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec


class _Pos(msgspec.Struct):
    sent_ms: int | None = None


class _Frame(msgspec.Struct):
    type: str
    positions: list[_Pos] = []


def register(parser: argparse.ArgumentParser) -> None:
    """Options of the WebSocket benchmark (`--json` is added by deploy.bench)."""
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--slow-pct", type=float, default=10.0)
    parser.add_argument("--slow-delay-s", type=float, default=2.0)
    parser.add_argument("--measure-pct", type=float, default=10.0,
                        help="percent of the fast clients that decode frames and measure")
    parser.add_argument("--vehicles", type=int, default=2000)
    parser.add_argument("--rate-hz", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--client-procs", type=int, default=2,
                        help="load-client processes the connections are spread over")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run; progress on stderr, one JSON object last on stdout."""
    import asyncio

    from deploy.bench import emit

    return emit(asyncio.run(_bench(args)), getattr(args, "json", False))


def _hist_percentile(hist: dict[int, int], pct: float) -> int:
    """Nearest-rank percentile of a {value: count} histogram."""
    total = sum(hist.values())
    if not total:
        return 0
    rank = max(1, round(pct / 100 * total + 0.5))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


async def _clients(spec: dict[str, Any]) -> dict[str, Any]:
    """One load-client process: open the connections, measure between the given wall times."""
    import asyncio
    import contextlib
    import time
    from collections import Counter

    import aiohttp

    decoder = msgspec.json.Decoder(_Frame)
    hists: dict[str, Counter[int]] = {"fast": Counter(), "slow": Counter()}
    frames = {"fast": 0, "slow": 0}
    errors: list[str] = []
    measure_from, measure_to = spec["measure_from"], spec["measure_to"]

    async def client(session: aiohttp.ClientSession, kind: str, measure: bool) -> None:
        try:
            async with session.ws_connect(f"{spec['base_url']}/api/live", max_msg_size=0) as ws:
                await ws.send_json({"type": "subscribe", "token": spec["token"]})
                while True:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        errors.append(f"{kind}: {msg.type}")
                        return
                    now = time.time()
                    if measure_from <= now < measure_to:
                        frames[kind] += 1
                        if measure:
                            frame = decoder.decode(msg.data)
                            if frame.type == "batch":
                                now_ms = int(now * 1000)
                                hists[kind].update(now_ms - p.sent_ms for p in frame.positions
                                                   if p.sent_ms is not None)
                    if kind == "slow":
                        await asyncio.sleep(spec["slow_delay_s"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(f"{kind}: {exc!r}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(client(session, "slow", True))
                 for _ in range(spec["slow"])]
        tasks += [asyncio.create_task(client(session, "fast", i < spec["measure"]))
                  for i in range(spec["fast"])]
        await asyncio.sleep(max(0.0, measure_to - time.time()))
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {"fast": dict(hists["fast"]), "slow": dict(hists["slow"]), "frames": frames,
            "errors": errors}


def client_process_main() -> None:
    """Entry of a load-client process: spec as JSON on stdin, result as JSON on stdout."""
    import asyncio

    spec = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_clients(spec))))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _bench(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915
    import asyncio
    import contextlib
    import time
    from collections import Counter

    import redis.asyncio as aioredis

    from api.config import load_api_settings
    from core.live import LivePosition, decode_live, live_channel
    from deploy.bench import cpu_seconds, memory_mib
    from deploy.bench.apiproc import api_process, publish_positions

    redis_url = load_api_settings(None).redis.url
    n_slow = round(args.clients * args.slow_pct / 100)
    n_fast = args.clients - n_slow
    n_measure = max(1, round(n_fast * args.measure_pct / 100))
    procs = max(1, args.client_procs)
    state = {"measuring": False, "stop": False}
    anchor_hist: Counter[int] = Counter()

    async with api_process(vehicles=args.vehicles, with_state=True) as env:
        channel = live_channel(env.tenant_id)
        print(f"ws: {args.clients} clients ({n_slow} slow, {n_measure} measuring) in {procs} "
              f"processes, {args.vehicles} vehicles at {args.rate_hz} Hz", file=sys.stderr)

        async def anchor(redis: aioredis.Redis) -> None:
            pubsub = redis.pubsub()
            await pubsub.subscribe(channel)
            try:
                while not state["stop"]:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or not state["measuring"]:
                        continue
                    pos = decode_live(msg["data"])
                    if isinstance(pos, LivePosition) and pos.sent_ms is not None:
                        anchor_hist[int(time.time() * 1000) - pos.sent_ms] += 1
            finally:
                await pubsub.aclose()

        settle_s = 2.0 + args.clients / 200
        measure_from = time.time() + settle_s + args.warmup_s
        measure_to = measure_from + args.duration_s
        workers = []
        for n_f, n_s, n_m in zip(_split(n_fast, procs), _split(n_slow, procs),
                                 _split(n_measure, procs), strict=True):
            spec = {"base_url": env.base_url, "token": env.token, "fast": n_f, "slow": n_s,
                    "measure": n_m, "slow_delay_s": args.slow_delay_s,
                    "measure_from": measure_from, "measure_to": measure_to}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from deploy.bench.ws import client_process_main as m; m()",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            workers.append((proc, json.dumps(spec).encode()))
        outputs = [asyncio.create_task(proc.communicate(spec_bytes))
                   for proc, spec_bytes in workers]
        redis = aioredis.Redis.from_url(redis_url)
        await asyncio.sleep(settle_s)  # let the connections and snapshots settle
        stop_publishing = asyncio.Event()
        side = [asyncio.create_task(publish_positions(redis_url, env.tenant_id, env.vehicles,
                                                      args.rate_hz, stop_publishing)),
                asyncio.create_task(anchor(redis))]
        await asyncio.sleep(max(0.0, measure_from - time.time()))
        state["measuring"] = True
        cpu0, t0 = cpu_seconds([env.pid]), time.monotonic()
        series = []
        while time.time() < measure_to:
            await asyncio.sleep(max(0.0, min(5.0, measure_to - time.time())))
            series.append(memory_mib([env.pid])[0])
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds([env.pid]) - cpu0
        state["measuring"] = False
        rss_end, rss_peak = memory_mib([env.pid])
        results = [json.loads(out.splitlines()[-1]) for out, _ in
                   [await task for task in outputs]]
        state["stop"] = True
        stop_publishing.set()
        for task in side:
            task.cancel()
        for task in side:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await redis.aclose()

    fast: Counter[int] = Counter()
    slow: Counter[int] = Counter()
    frames = {"fast": 0, "slow": 0}
    errors: list[str] = []
    for r in results:
        fast.update({int(k): v for k, v in r["fast"].items()})
        slow.update({int(k): v for k, v in r["slow"].items()})
        frames["fast"] += r["frames"]["fast"]
        frames["slow"] += r["frames"]["slow"]
        errors += r["errors"]
    return {
        "benchmark": "ws", "clients": args.clients, "slow_clients": n_slow,
        "measuring_clients": n_measure, "client_processes": procs, "vehicles": args.vehicles,
        "rate_hz": args.rate_hz, "duration_s": round(elapsed, 1),
        "staleness_p50_ms": _hist_percentile(fast, 50),
        "staleness_p99_ms": _hist_percentile(fast, 99),
        "staleness_max_ms": max(fast, default=0), "positions_measured": sum(fast.values()),
        "slow_staleness_p99_ms": _hist_percentile(slow, 99),
        "fast_frames_per_client_per_s": round(frames["fast"] / max(1, n_fast) / elapsed, 2),
        "slow_frames_per_client_per_s": round(frames["slow"] / max(1, n_slow) / elapsed, 2),
        "api_rss_mb": rss_end, "api_rss_peak_mb": rss_peak, "api_rss_series_mb": series,
        "api_cpu_pct": round(100 * cpu / elapsed, 1),
        "anchor_redis_staleness_p99_ms": _hist_percentile(anchor_hist, 99),
        "client_errors": len(errors), "client_error_sample": errors[:3],
    }
