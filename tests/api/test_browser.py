"""The dispatcher map in headless Chromium (Debian's package, driven by Playwright):
log in, watch markers move, see a geofence event appear, click it, save a screenshot."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from playwright.async_api import async_playwright

from core.live import LiveEvent, LivePosition, encode_live, live_channel
from tests.api.conftest import PASSWORD, World

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WAIT_MS = 15_000


def _pos(vid: Any, code: str, lat: float, lon: float, *, heading: float, moving: bool
         ) -> bytes:
    now = int(time.time() * 1000)
    return encode_live(LivePosition(vehicle_id=str(vid), code=code, t_ms=now, lat=lat, lon=lon,
                                    speed_kph=35.0 if moving else 0.0, heading_deg=heading,
                                    ignition=True, moving=moving, fuel_pct=61.0,
                                    coolant_c=88.0, battery_v=13.9, sent_ms=now))


async def test_dispatcher_map_live(world: World) -> None:
    """End to end in a real browser, offline (no-tiles mode)."""
    # `make setup` installs Debian's chromium; without it this test must fail, not skip.
    assert shutil.which(CHROMIUM), "needs Debian's chromium: apt-get install chromium"
    a = world.a
    v1, v2 = a.vehicles["assigned"], a.vehicles["other"]
    channel = live_channel(a.id)
    redis = aioredis.Redis.from_url(world.redis_url)
    base = str(world.client.make_url("/"))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base)
            await page.fill("#email", a.users["fleet_manager"])
            await page.fill("#password", PASSWORD)
            await page.click("#login-button")
            await page.wait_for_selector("#status.ok", timeout=WAIT_MS)
            # The depot geofence is drawn (Leaflet renders vector layers as SVG paths).
            await page.wait_for_selector("path.leaflet-interactive", timeout=WAIT_MS)

            await redis.publish(channel, _pos(v1, "assigned", 52.5195, 13.3990, heading=45,
                                              moving=True))
            await redis.publish(channel, _pos(v2, "other", 52.5210, 13.4020, heading=180,
                                              moving=False))
            marker = f'.vehicle-icon[data-vehicle-id="{v1}"]'
            await page.wait_for_selector(marker, timeout=WAIT_MS)
            await page.wait_for_selector(f'.vehicle-icon[data-vehicle-id="{v2}"]',
                                         timeout=WAIT_MS)
            assert await page.get_attribute(marker, "data-status") == "moving"
            before = await page.locator(marker).bounding_box()
            assert before is not None
            # The vehicle drives north-east: the marker moves on screen.
            for step in range(1, 4):
                await redis.publish(channel, _pos(v1, "assigned", 52.5195 + step * 0.0004,
                                                  13.3990 + step * 0.0004, heading=45, moving=True))
            await page.wait_for_function(
                f"window.fleet.positions['{v1}'] && "
                f"window.fleet.positions['{v1}'].lat > 52.5206", timeout=WAIT_MS)
            after = await page.locator(marker).bounding_box()
            assert after is not None
            assert after["y"] < before["y"]
            assert after["x"] > before["x"]

            event = LiveEvent(vehicle_id=str(v1), code="assigned", t_ms=int(time.time() * 1000),
                              kind="geofence", event_type="enter",
                              geofence_id=str(a.geofence_id), lat=52.5207, lon=13.4002)
            # As the stream sends it: the id only; the page knows the fence's name.
            await redis.publish(channel, encode_live(event))
            item = page.locator("#events li.geofence", has_text="Depot")
            await item.wait_for(timeout=WAIT_MS)
            assert "enter" in await item.inner_text()
            await item.click()
            await page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
            assert await page.inner_text("#panel-title") == "assigned"
            assert "km/h" in await page.inner_text("#panel-signals")
            await page.screenshot(path=str(ARTIFACTS / "dispatcher_map.png"))
            assert errors == []
        finally:
            await browser.close()
            await redis.aclose()
