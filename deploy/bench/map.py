"""`fleet bench map`: the dispatcher console in headless Chromium with N vehicles live.

Method: a throwaway database with one tenant, `--vehicles` vehicles and their vehicle_state
rows (the first snapshot); the API runs as its own process (`fleet api`). Debian's
`chromium` (headless, driven by Playwright) signs in to the console. A publisher sends every
vehicle's position at `--rate-hz` to Redis exactly as the stream does (`core.live`), so the
API's live fan-out coalesces them into one frame per vehicle every `live_flush_ms` (250 ms)
as in production; the stream itself is not in the loop (`fleet bench e2e` measures it).

Figures, from the console's own timings (`api/web/src/perf.ts`) over `--duration-s` after
`--warmup-s`:
- `first_vehicle_ms`: from the sign-in click to the first vehicle drawn on the map;
- `apply_p50_ms` / `apply_p95_ms`: applying one coalesced live frame to the fleet model;
- `render_p50_ms` / `render_p95_ms`: updating the page in the animation frame that follows
  (markers moved, the vehicle list at most once a second, the panel);
- `draw_p50_ms` / `draw_p95_ms`: Leaflet painting the vehicles' canvas for that frame;
- `update_p95_ms` = apply p95 + render p95 + draw p95: one update, from the frame's arrival to
  pixels, counted pessimistically (the three worst cases need not fall on the same frame);
- `long_tasks_per_min`: main-thread tasks over 50 ms (PerformanceObserver "longtask");
- `heap_start_mb` / `heap_end_mb`: the JS heap after a forced garbage collection (DevTools
  protocol) at the start and the end of the measurement; `heap_growth_pct`;
- anchor, same run: `anchor_parse_p95_ms`, the browser's `JSON.parse` of the same frames,
  the floor any client pays; `update_vs_parse` is the ratio;
- `replay_track_ms_*` and `replay_complete_ms_*` (first and second try): with
  `--replay-days` of 1 Hz history written for one vehicle (and the rollups refreshed, as their
  policies would), from opening the replay over that range to its track and chart drawn, and
  to its trips, stops and events drawn too; `replay_points` as fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
_LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]);
}).observe({ type: "longtask", buffered: true });
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Options of the console benchmark (`--json` is added by deploy.bench)."""
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--rate-hz", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--replay-days", type=int, default=7, choices=(0, 1, 7),
                        help="days of 1 Hz history to replay afterwards (the console's presets "
                        "24h and 7d; 0: none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run; progress on stderr, one JSON object last on stdout."""
    from deploy.bench import emit

    if not shutil.which(CHROMIUM):
        print("fleet bench map: needs Debian's chromium (apt-get install chromium)",
              file=sys.stderr)
        return 2
    return emit(asyncio.run(_bench(args)), args.json)


async def _heap_mb(cdp: Any) -> float:
    await cdp.send("HeapProfiler.collectGarbage")
    usage = await cdp.send("Runtime.getHeapUsage")
    return round(float(usage["usedSize"]) / 2**20, 1)


def _p(values: list[float], pct: float) -> float:
    from deploy.bench.apiproc import percentile

    return round(percentile(values, pct), 2)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from api.config import load_api_settings
    from deploy.bench.apiproc import BENCH_PASSWORD, api_process, publish_positions

    redis_url = load_api_settings(None).redis.url
    async with api_process(vehicles=args.vehicles, with_state=True) as env, \
            async_playwright() as pw:
        print(f"map: {args.vehicles} vehicles at {args.rate_hz} Hz, "
              f"{args.duration_s:.0f} s after {args.warmup_s:.0f} s warm-up", file=sys.stderr)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        stop = asyncio.Event()
        publisher = asyncio.create_task(
            publish_positions(redis_url, env.tenant_id, env.vehicles, args.rate_hz, stop))
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.add_init_script(_LONG_TASKS)
            cdp = await page.context.new_cdp_session(page)
            await page.goto(env.base_url)
            email = await _admin_email(env.base_url, env.token)
            await page.fill("#email", email)
            await page.fill("#password", BENCH_PASSWORD)
            clicked = await page.evaluate("performance.now()")
            await page.click("#login-button")
            await page.wait_for_function("window.fleet && window.fleet.timings.firstVehicleAt",
                                         timeout=120_000)
            first_at = await page.evaluate("window.fleet.timings.firstVehicleAt")
            await page.wait_for_function(
                f"window.fleet.map.markerCount >= {args.vehicles}", timeout=120_000)
            await asyncio.sleep(args.warmup_s)
            heap_start = await _heap_mb(cdp)
            await page.evaluate("window.fleet.timings.clear(); window.__longTasks = [];")
            started = time.monotonic()
            end = started + args.duration_s
            while time.monotonic() < end:
                await asyncio.sleep(min(30.0, end - time.monotonic()))
                print(f"map: {time.monotonic() - started:.0f} s", file=sys.stderr)
            elapsed = time.monotonic() - started
            t = await page.evaluate(
                "({parse: window.fleet.timings.parseMs, apply: window.fleet.timings.applyMs,"
                " render: window.fleet.timings.renderMs, draw: window.fleet.timings.drawMs,"
                " long: window.__longTasks,"
                " markers: window.fleet.map.markerCount})")
            heap_end = await _heap_mb(cdp)
            replay = await _replay(page, env, args.replay_days) if args.replay_days else {}
        finally:
            stop.set()
            await publisher
            await browser.close()

    parse, apply_, render, draw = t["parse"], t["apply"], t["render"], t["draw"]
    update_p95 = _p(apply_, 95) + _p(render, 95) + _p(draw, 95)
    anchor = _p(parse, 95)
    return {
        "benchmark": "map", "vehicles": args.vehicles, "rate_hz": args.rate_hz,
        "duration_s": round(elapsed, 1), "markers": t["markers"],
        "first_vehicle_ms": round(first_at - clicked),
        "frames": len(apply_), "apply_p50_ms": _p(apply_, 50), "apply_p95_ms": _p(apply_, 95),
        "render_p50_ms": _p(render, 50), "render_p95_ms": _p(render, 95),
        "draw_p50_ms": _p(draw, 50), "draw_p95_ms": _p(draw, 95),
        "update_p95_ms": round(update_p95, 2),
        "long_tasks_per_min": round(len(t["long"]) / elapsed * 60, 1),
        "long_task_max_ms": round(max((d for _, d in t["long"]), default=0.0)),
        "heap_start_mb": heap_start, "heap_end_mb": heap_end,
        "heap_growth_pct": round((heap_end - heap_start) / heap_start * 100, 1)
        if heap_start else 0.0,
        "anchor_parse_p95_ms": anchor,
        "update_vs_parse": round(update_p95 / anchor, 1) if anchor else None,
        **replay,
        "page_errors": errors,
    }


def _history(owner_url: str, tenant_id: Any, vehicle_id: Any, days: int) -> int:
    """`days` of 1 Hz samples up to now for one vehicle, driving a slow loop; rollups refreshed."""
    import psycopg

    seconds = days * 86_400
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source, received_at, lat_e7,
                                   lon_e7, speed_kph, rpm, fuel_level_pct, ignition)
            SELECT now() - (%(n)s - s) * interval '1 second', %(t)s, %(v)s, 1000000 + s,
                   'simulator', now(),
                   round((52.5 + 0.05 * sin(s / 3600.0)) * 1e7)::int,
                   round((13.4 + 0.08 * cos(s / 3600.0)) * 1e7)::int,
                   CASE WHEN (s / 1800) %% 3 = 2 THEN 0 ELSE 45 END,
                   CASE WHEN (s / 1800) %% 3 = 2 THEN 0 ELSE 1700 END,
                   80 - (s %% 86400) / 3000.0, (s / 1800) %% 3 <> 2
              FROM generate_series(0, %(n)s - 1) AS s""",
                     {"n": seconds, "t": tenant_id, "v": vehicle_id})
        span = (f"now() - interval '{days + 1} days'", "now() + interval '1 hour'")
        try:  # the Timescale edition: continuous aggregates, refreshed by a procedure
            conn.execute(f"CALL fleet_refresh_rollups({span[0]}, {span[1]})")
        except psycopg.Error:  # the Apache edition: plain tables, refreshed by a function
            conn.execute(f"SELECT fleet_refresh_rollups({span[0]}, {span[1]})")
    return seconds


async def _replay(page: Any, env: Any, days: int) -> dict[str, Any]:
    """Open the replay of `days` of one vehicle's history twice; milliseconds to drawn."""
    vid, code = env.vehicles[0]
    started = time.monotonic()
    rows = await asyncio.to_thread(_history, env.owner_url, env.tenant_id, vid, days)
    print(f"map: {rows} samples of history written in {time.monotonic() - started:.0f} s",
          file=sys.stderr)
    preset = "7d" if days == 7 else "24h"
    took: list[tuple[int, int]] = []
    for _ in range(2):
        await page.evaluate("location.hash = ''")
        await page.wait_for_function("!window.fleet.replay.open", timeout=30_000)
        ms = await page.evaluate(f"""new Promise((resolve) => {{
            const t0 = performance.now();
            let track = null;
            location.hash = 'vehicle={code}&range={preset}&replay=1';
            const poll = () => {{
              const box = document.querySelector('#replay');
              if (track === null && box.dataset.ready) track = performance.now() - t0;
              if (box.dataset.complete) resolve([track, performance.now() - t0]);
              else requestAnimationFrame(poll);
            }};
            poll();
        }})""")
        took.append((round(ms[0]), round(ms[1])))
    state = await page.evaluate("window.fleet.replay.state")
    return {"replay_days": days, "replay_samples": rows,
            "replay_track_ms_first": took[0][0], "replay_complete_ms_first": took[0][1],
            "replay_track_ms_second": took[1][0], "replay_complete_ms_second": took[1][1],
            "replay_points": state["points"],
            "replay_source": state["source"]}


async def _admin_email(base_url: str, token: str) -> str:
    """The seeded admin's e-mail (apiproc signs in with it; the page signs in again)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"{base_url}/api/users", headers={"Authorization": f"Bearer {token}"}) as resp:
        users = (await resp.json())["items"]
    return str(users[0]["email"])
