"""`fleet bench api`: GET /api/vehicles under concurrent connections.

Method: a throwaway database with one tenant and `--vehicles` vehicles; the API runs as its
own process (`fleet api`, rate limit off, one process). The load client is `wrk` (Debian
package) when installed, else a built-in aiohttp client; either keeps `--connections`
connections busy for `--duration-s` seconds after a warm-up, with a valid Bearer token, on
``/api/vehicles?limit=50`` (the seed's default page, served from the 5-minute Redis cache
after the first request, as in production). Figures: `requests_per_s`, `latency_p99_ms`
(and the API process's CPU seconds and RSS); `uncached_*` repeat the run against a second API
process with the cache off (`api.vehicle_cache_ttl_s = 0`): a COUNT and a page query in a
tenant transaction per request; `confirm_each_*` with `api.cache_local_trust_s = 0` (Redis
asked on every request, as before copies were trusted).

Anchor (same run, same client, same concurrency): a bare aiohttp app in its own process
answering a static JSON body of the same size — the framework's ceiling on this machine.
The cached API and the anchor are measured in `--rounds` alternating pairs (both processes
stay up); `ratio_to_anchor` is the median of the pairs' ratios, so that a drift of the
machine's speed during the run (seen here: the same anchor at 17,000 and 25,000 requests/s
minutes apart) weighs on both sides of each ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import AsyncIterator
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    """Options of the API benchmark (`--json` is added by deploy.bench)."""
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--client", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating API/anchor measurements (median ratio reported)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run; progress on stderr, one JSON object last on stdout."""
    import asyncio

    from deploy.bench import emit

    return emit(asyncio.run(_bench(args)), getattr(args, "json", False))


_ANCHOR_APP = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def h(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/api/vehicles", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _aiohttp_load(urls: list[str], headers: dict[str, str], connections: int,
                        duration_s: float, warmup_s: float) -> dict[str, float]:
    import time

    import aiohttp

    from deploy.bench.apiproc import percentile

    latencies: list[float] = []
    count = 0
    stop_at = 0.0
    measuring = False

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal count
        i = offset
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            async with session.get(urls[i % len(urls)], headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            if measuring:
                latencies.append((time.perf_counter() - start) * 1000)
                count += 1
            i += connections

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + warmup_s
        await asyncio_gather(worker(session, i) for i in range(connections))
        measuring = True
        t0 = time.monotonic()
        stop_at = t0 + duration_s
        await asyncio_gather(worker(session, i) for i in range(connections))
        elapsed = time.monotonic() - t0
    return {"requests_per_s": round(count / elapsed, 1),
            "latency_p50_ms": round(percentile(latencies, 50), 2),
            "latency_p99_ms": round(percentile(latencies, 99), 2)}


async def asyncio_gather(coros: Any) -> None:
    """Await every coroutine of an iterable."""
    import asyncio

    await asyncio.gather(*coros)


def _wrk(url: str, headers: dict[str, str], connections: int, duration_s: float
         ) -> dict[str, float]:
    import re
    import subprocess

    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{int(duration_s)}s", "--latency"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         timeout=duration_s + 60).stdout

    def ms(text: str) -> float:
        value = float(re.sub(r"[a-z]+$", "", text))
        unit = re.sub(r"^[0-9.]+", "", text)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses")
    return {"requests_per_s": round(rps, 1), "latency_p50_ms": round(p50, 2),
            "latency_p99_ms": round(p99, 2)}


async def _measure(client: str, url: str, headers: dict[str, str], args: argparse.Namespace
                   ) -> dict[str, float]:
    import asyncio

    if client == "wrk":
        _wrk(url, headers, args.connections, args.warmup_s)
        return await asyncio.to_thread(_wrk, url, headers, args.connections, args.duration_s)
    return await _aiohttp_load([url], headers, args.connections, args.duration_s,
                               args.warmup_s)


async def _other_api(client: str, args: argparse.Namespace, extra_env: dict[str, str]
                     ) -> dict[str, float]:
    """The same measurement on an API process with other settings."""
    from deploy.bench.apiproc import api_process

    async with api_process(vehicles=args.vehicles, with_state=False,
                           extra_env=extra_env) as env:
        url = f"{env.base_url}/api/vehicles?limit=50"
        headers = {"Authorization": f"Bearer {env.token}"}
        return await _measure(client, url, headers, args)


@contextlib.asynccontextmanager
async def _anchor(body: bytes) -> AsyncIterator[str]:
    """A bare aiohttp app serving `body` in its own process; yields its URL."""
    import asyncio
    import os
    import subprocess
    import tempfile

    import aiohttp

    from core.ports import free_port

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        fh.write(body)
    port = free_port()
    anchor = subprocess.Popen(  # noqa: ASYNC220 - start only
        [sys.executable, "-c", _ANCHOR_APP, str(port), fh.name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        anchor_url = f"http://127.0.0.1:{port}/api/vehicles"
        for _ in range(100):
            try:
                async with aiohttp.ClientSession() as session, session.get(anchor_url) as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        yield anchor_url
    finally:
        anchor.terminate()
        anchor.wait(timeout=10)
        os.unlink(fh.name)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    import aiohttp

    from deploy.bench import cpu_seconds, memory_mib
    from deploy.bench.apiproc import api_process

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "aiohttp"
    result: dict[str, Any] = {"benchmark": "api", "client": client,
                              "connections": args.connections, "vehicles": args.vehicles,
                              "duration_s": args.duration_s}
    async with api_process(vehicles=args.vehicles, with_state=False) as env:
        url = f"{env.base_url}/api/vehicles?limit=50"
        headers = {"Authorization": f"Bearer {env.token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            body = await r.read()
        print(f"api: {client}, {args.connections} connections on {url}, "
              f"{args.rounds} rounds against the anchor", file=sys.stderr)
        api_runs: list[dict[str, float]] = []
        anchor_runs: list[dict[str, float]] = []
        cpu0 = cpu_seconds([env.pid])
        async with _anchor(body) as anchor_url:
            for _ in range(max(1, args.rounds)):
                api_runs.append(await _measure(client, url, headers, args))
                anchor_runs.append(await _measure(client, anchor_url, {}, args))
        result["api_cpu_s_per_round"] = round((cpu_seconds([env.pid]) - cpu0) / len(api_runs),
                                              1)
        result["api_rss_mb"], result["api_rss_peak_mb"] = memory_mib([env.pid])
    for key in ("requests_per_s", "latency_p50_ms", "latency_p99_ms"):
        result[key] = statistics.median(r[key] for r in api_runs)
    ratios = [a["requests_per_s"] / max(b["requests_per_s"], 1.0)
              for a, b in zip(api_runs, anchor_runs, strict=True)]
    result["ratio_rounds"] = [round(r, 3) for r in ratios]
    result["ratio_to_anchor"] = round(statistics.median(ratios), 3)
    result["anchor_bare_aiohttp_requests_per_s"] = statistics.median(
        r["requests_per_s"] for r in anchor_runs)
    result["anchor_bare_aiohttp_latency_p99_ms"] = statistics.median(
        r["latency_p99_ms"] for r in anchor_runs)
    result["response_bytes"] = len(body)
    # The cache as it was before copies were trusted: Redis asked on every request.
    asked = await _other_api(client, args, {"FLEET_API_CACHE_LOCAL_TRUST_S": "0"})
    result["confirm_each_requests_per_s"] = asked["requests_per_s"]
    result["confirm_each_latency_p99_ms"] = asked["latency_p99_ms"]
    uncached = await _other_api(client, args, {"FLEET_API_VEHICLE_CACHE_TTL_S": "0"})
    result["uncached_requests_per_s"] = uncached["requests_per_s"]
    result["uncached_latency_p99_ms"] = uncached["latency_p99_ms"]
    anchor_rps = result["anchor_bare_aiohttp_requests_per_s"] or 1
    result["confirm_each_ratio_to_anchor"] = round(
        result["confirm_each_requests_per_s"] / anchor_rps, 3)
    return result
