"""The dispatcher console in headless Chromium (Debian's package, driven by Playwright): log in,
watch vehicles move, find one by plate, filter by status, open a pasted link, see past events
at load and why a vehicle is red. Screenshots go to tests/artifacts/ (docs/console.md)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, async_playwright

from core.live import LiveEvent, LivePosition, encode_live, live_channel
from core.protocol import Sample
from tests.api.conftest import PASSWORD, World
from tests.stream.streamproc import StreamProcess, mqtt_client, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WAIT_MS = 15_000


def _pos(vid: Any, code: str, lat: float, lon: float, *, heading: float = 0.0,
         moving: bool = True, ignition: bool = True, speed: float | None = None) -> bytes:
    now = int(time.time() * 1000)
    return encode_live(LivePosition(
        vehicle_id=str(vid), code=code, t_ms=now, lat=lat, lon=lon,
        speed_kph=speed if speed is not None else (35.0 if moving else 0.0), heading_deg=heading,
        ignition=ignition, moving=moving, fuel_pct=61.0, coolant_c=88.0, battery_v=13.9,
        sent_ms=now))


def _vehicle_event(world: World, vehicle_id: Any, event_type: str, severity: str, ago: str, *,
                   value: float | None = None, threshold: float | None = None,
                   where: str | None = None) -> None:
    """A detector event of tenant a, `ago` before now, as the stream writes it (milliseconds)."""
    with psycopg.connect(world.db.owner_url) as conn:
        conn.execute(
            "INSERT INTO vehicle_events (time, tenant_id, vehicle_id, event_type, severity, value, "
            "threshold, location) VALUES (date_trunc('milliseconds', now()) - %s::interval, %s, "
            "%s, %s, %s, %s, %s, ST_GeogFromText(%s))",
            (ago, world.a.id, vehicle_id, event_type, severity, value, threshold, where))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    # `make setup` installs Debian's chromium; without it these tests must fail, not skip.
    assert shutil.which(CHROMIUM), "needs Debian's chromium: apt-get install chromium"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


class Session:
    """One dispatcher's tab; page errors fail the test."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def sign_in(self, email: str, hash_: str = "") -> None:
        """Open the console and submit the sign-in form."""
        await self.page.goto(self.base + hash_)
        await self.page.fill("#email", email)
        await self.page.fill("#password", PASSWORD)
        await self.page.click("#login-button")

    async def login(self, email: str, hash_: str = "") -> None:
        """Sign in and wait for the live feed."""
        await self.sign_in(email, hash_)
        await self.page.wait_for_selector("#status.ok", timeout=WAIT_MS)

    def row(self, vid: Any) -> str:
        return f'#vehicle-rows [data-vehicle-id="{vid}"]'

    async def visible_rows(self) -> list[str]:
        return await self.page.eval_on_selector_all(
            "#vehicle-rows [data-vehicle-id]", "els => els.map(e => e.dataset.vehicleId)")


@pytest_asyncio.fixture(loop_scope="session")
async def session(browser: Browser, world: World) -> AsyncIterator[Session]:
    context = await browser.new_context(viewport={"width": 1400, "height": 860})
    s = Session(await context.new_page(), str(world.client.make_url("/")))
    try:
        yield s
        assert s.errors == []
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def live(world: World) -> AsyncIterator[Any]:
    """Publish to tenant a's live channel as the stream does."""
    r = aioredis.Redis.from_url(world.redis_url)
    channel = live_channel(world.a.id)

    async def publish(message: bytes) -> None:
        await r.publish(channel, message)

    try:
        yield publish
    finally:
        await r.aclose()


async def _vehicle(world: World, code: str, **fields: Any) -> str:
    resp = await world.client.post("/api/vehicles", json={"code": code, **fields},
                                   headers=world.auth(world.a.tokens["fleet_manager"]))
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def test_live_map_feed_and_panel(session: Session, world: World, live: Any) -> None:
    """Vehicles appear and move; a live geofence event opens the vehicle's panel."""
    a = world.a
    v1, v2 = a.vehicles["assigned"], a.vehicles["other"]
    page = session.page
    await session.login(a.users["fleet_manager"])
    # The depot geofence is drawn on the canvas; the page knows it.
    await page.wait_for_function("document.querySelector('#map canvas') !== null",
                                 timeout=WAIT_MS)
    await live(_pos(v1, "assigned", 52.5195, 13.3990, heading=45))
    await live(_pos(v2, "other", 52.5210, 13.4020, moving=False))
    await page.wait_for_selector(f'{session.row(v1)}[data-status="moving"]', timeout=WAIT_MS)
    await page.wait_for_selector(f'{session.row(v2)}[data-status="idle"]', timeout=WAIT_MS)
    assert await page.evaluate("window.fleet.map.markerCount") >= 2
    before = await page.evaluate(f"window.fleet.map.screenPoint('{v1}')")
    # The vehicle drives north-east: its marker moves on screen.
    for step in range(1, 4):
        await live(_pos(v1, "assigned", 52.5195 + step * 0.0004, 13.3990 + step * 0.0004))
    await page.wait_for_function(
        f"window.fleet.fleet.get('{v1}').position.lat > 52.5206", timeout=WAIT_MS)
    after = await page.evaluate(f"window.fleet.map.screenPoint('{v1}')")
    assert after["y"] < before["y"]
    assert after["x"] > before["x"]

    event = LiveEvent(vehicle_id=str(v1), code="assigned", t_ms=int(time.time() * 1000),
                      kind="geofence", event_type="enter", geofence_id=str(a.geofence_id),
                      geofence_name="Depot", lat=52.5207, lon=13.4002)
    await live(encode_live(event))
    item = page.locator("#events li.geofence", has_text="Depot")
    await item.wait_for(timeout=WAIT_MS)
    assert "enter" in await item.inner_text()
    await item.click()
    await page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
    assert await page.inner_text("#panel-title") == "assigned"
    signals = await page.inner_text("#panel-signals")
    assert "km/h" in signals
    assert "moving" in signals
    assert "Dana Driver" in await page.inner_text("#panel-facts")
    assert "enter Depot" in await page.inner_text("#panel-events")
    assert "vehicle=assigned" in page.url  # the selection is in the link
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "console_live.png"))


async def test_find_by_plate_and_paste_the_link(browser: Browser, session: Session,
                                                world: World, live: Any) -> None:
    """Search by a plate typed without separators; a colleague opens the same view by link."""
    code = f"van-{uuid.uuid4().hex[:6]}"
    vid = await _vehicle(world, code, license_plate="B-FT 4711", vin="WDB9066331S471100")
    page = session.page
    await session.login(world.a.users["fleet_manager"])
    await live(_pos(vid, code, 52.515, 13.41, speed=42.0))
    await page.fill("#vehicle-search", "bft4711")
    await page.wait_for_function(
        "document.querySelectorAll('#vehicle-rows [data-vehicle-id]').length === 1",
        timeout=WAIT_MS)
    assert await session.visible_rows() == [vid]
    assert "1 of " in await page.inner_text("#vehicle-summary")
    await page.click(session.row(vid))
    await page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
    facts = await page.inner_text("#panel-facts")
    assert "B-FT 4711" in facts
    assert "WDB9066331S471100" in facts
    link = page.url
    assert f"vehicle={code}" in link
    assert "q=bft4711" in link

    # The colleague: another browser session, signs in from the pasted link.
    other = await browser.new_context(viewport={"width": 1400, "height": 860})
    try:
        colleague = Session(await other.new_page(), link.split("#")[0])
        await colleague.login(world.a.users["fleet_manager"], "#" + link.split("#", 1)[1])
        await colleague.page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
        assert await colleague.page.inner_text("#panel-title") == code
        assert await colleague.page.input_value("#vehicle-search") == "bft4711"
        assert await colleague.visible_rows() == [vid]
        assert colleague.errors == []
    finally:
        await other.close()


async def test_status_filters_and_counts(session: Session, world: World, live: Any) -> None:
    a = world.a
    v1, v2 = a.vehicles["assigned"], a.vehicles["other"]
    page = session.page
    await session.login(a.users["fleet_manager"])
    await live(_pos(v1, "assigned", 52.52, 13.40, moving=True))
    await live(_pos(v2, "other", 52.52, 13.41, moving=False, ignition=False))
    await page.wait_for_selector(f'{session.row(v2)}[data-status="off"]', timeout=WAIT_MS)
    await page.click('#status-filters [data-status="moving"]')
    await page.wait_for_function(
        f"!document.querySelector('{session.row(v2)}')", timeout=WAIT_MS)
    rows = await session.visible_rows()
    assert str(v1) in rows
    statuses = await page.eval_on_selector_all(
        "#vehicle-rows [data-vehicle-id]", "els => els.map(e => e.dataset.status)")
    assert set(statuses) == {"moving"}
    assert "status=moving" in page.url
    moving = await page.inner_text('#status-filters [data-status="moving"] .n')
    assert int(moving) == len(rows)
    # Both filters: OR.
    await page.click('#status-filters [data-status="off"]')
    await page.wait_for_selector(session.row(v2), timeout=WAIT_MS)


async def test_past_events_at_load_and_why_a_vehicle_is_red(session: Session,
                                                            world: World) -> None:
    """Events of the last hours are in the feed before any live message; a recent critical
    event makes its vehicle alerting, and the panel says why."""
    a = world.a
    vid = a.vehicles["other"]
    _vehicle_event(world, vid, "coolant_overheat", "critical", "5 minutes", value=118.5,
                   threshold=110)
    _vehicle_event(world, a.vehicles["assigned"], "harsh_braking", "warning", "3 hours",
                   value=6.1)
    page = session.page
    await session.login(a.users["fleet_manager"])
    item = page.locator("#events li.vehicle", has_text="coolant overheat")
    await item.wait_for(timeout=WAIT_MS)
    assert "critical" in (await item.get_attribute("class") or "")
    await page.locator("#events li.vehicle", has_text="harsh braking").wait_for(timeout=WAIT_MS)
    await page.wait_for_selector(f'{session.row(vid)}[data-alerting="true"]', timeout=WAIT_MS)
    # Alerting first when sorted by status (the default).
    assert (await session.visible_rows())[0] == str(vid)
    await page.click('#status-filters [data-status="alerting"]')
    await page.wait_for_function(
        "document.querySelectorAll('#vehicle-rows [data-vehicle-id]').length === 1",
        timeout=WAIT_MS)
    await page.click(session.row(vid))
    alert = page.locator("#panel-alert")
    await alert.wait_for(timeout=WAIT_MS)
    assert "critical" in await alert.inner_text()
    assert "coolant overheat 118.5" in await alert.inner_text()
    # Severity filter: warnings and above leave the info events out.
    await page.select_option("#event-severity", "critical")
    await page.wait_for_function(
        "[...document.querySelectorAll('#events li')]"
        ".every(li => li.classList.contains('critical'))",
        timeout=WAIT_MS)
    await page.screenshot(path=str(ARTIFACTS / "console_alerting.png"))


async def test_favicon(world: World) -> None:
    for path in ("/favicon.ico", "/favicon.svg"):
        resp = await world.client.get(path)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/svg+xml"
        assert (await resp.read()).startswith(b"<svg")


async def test_the_bundle_is_served(world: World) -> None:
    page = await (await world.client.get("/")).text()
    assert 'src="/static/app/console.js"' in page
    for path in ("/static/app/console.js", "/static/app/console.css"):
        resp = await world.client.get(path)
        assert resp.status == 200, path
        assert len(await resp.read()) > 1000


async def test_roles_see_what_the_matrix_allows(browser: Browser, world: World) -> None:
    """A driver's list holds only their vehicle; a viewer gets the list, no live feed."""
    a = world.a
    base = str(world.client.make_url("/"))
    for role in ("driver", "viewer"):
        context = await browser.new_context(viewport={"width": 1400, "height": 860})
        try:
            s = Session(await context.new_page(), base)
            await s.sign_in(a.users[role])
            if role == "driver":
                await s.page.wait_for_selector("#status.ok", timeout=WAIT_MS)
                await s.page.wait_for_selector(s.row(a.vehicles["assigned"]), timeout=WAIT_MS)
                assert await s.visible_rows() == [str(a.vehicles["assigned"])]
            else:
                await s.page.wait_for_selector("#status.bad", timeout=WAIT_MS)
                assert "not available to this role" in await s.page.inner_text("#status")
                await s.page.wait_for_selector(s.row(a.vehicles["other"]), timeout=WAIT_MS)
            assert s.errors == []
        finally:
            await context.close()


def _drive_history(world: World, vid: Any) -> None:
    """The last 40 minutes at 1 Hz: 15 min north at 40 km/h, 10 min parked (ignition off),
    15 min east; a harsh-braking event at minute 5."""
    with psycopg.connect(world.db.owner_url) as conn:
        conn.execute("DELETE FROM telemetry WHERE vehicle_id = %s", (vid,))
        conn.execute("""
            INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, source, received_at, lat_e7,
                                   lon_e7, speed_kph, rpm, fuel_level_pct, ignition)
            SELECT now() - interval '40 minutes' + s * interval '1 second', %(t)s, %(v)s, s,
                   'simulator', now(),
                   round((52.50 + 0.0001 * least(s, 900)) * 1e7)::int,
                   round((13.40 + 0.00015 * greatest(s - 1500, 0)) * 1e7)::int,
                   CASE WHEN s < 900 OR s >= 1500 THEN 40 ELSE 0 END,
                   CASE WHEN s < 900 OR s >= 1500 THEN 1800 ELSE 0 END,
                   60 - s * 0.001,
                   s < 900 OR s >= 1500
              FROM generate_series(0, 2399) AS s""", {"t": world.a.id, "v": vid})
    _vehicle_event(world, vid, "harsh_braking", "warning", "35 minutes", value=7.2,
                   where="POINT(13.40 52.53)")


async def test_replay_the_last_hour(session: Session, world: World) -> None:
    """Replay: the track downsampled from the hypertable, trips, stops and events listed, the
    marker follows the scrubber and the play button; a custom range comes from the link."""
    vid = world.a.vehicles["assigned"]
    _drive_history(world, vid)
    page = session.page
    await session.login(world.a.users["fleet_manager"], "#vehicle=assigned")
    await page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
    await page.click("#panel-replay")
    await page.wait_for_selector("#replay[data-ready]", timeout=WAIT_MS)  # the track first
    await page.wait_for_selector("#replay[data-complete]", timeout=WAIT_MS)  # then the rest
    # The map shows the whole track (zoomed out from the depot's zoom 16).
    assert await page.evaluate("window.fleet.map.map.getZoom()") <= 13
    assert "replay=1" in page.url
    summary = await page.inner_text("#replay-summary")
    assert "2 trips" in summary, summary
    assert "1 stop " in summary, summary
    assert "1 event" in summary, summary
    state = await page.evaluate("window.fleet.replay.state")
    # An hour at 1 Hz is bucketed to at most 2,000 points by the server.
    assert 1000 <= state["points"] <= 2000
    assert await page.locator("#replay-ticks .tick.vehicle").count() == 1
    assert await page.locator("#replay-spans li.trip").count() == 2
    assert await page.locator("#replay-spans li.stop").count() == 1
    # Scrubbing to the parked stretch puts the marker where the van stood (52.59, 13.40).
    await page.locator("#replay-scrub").fill("583")  # 35 of 60 minutes: parked
    state = await page.evaluate("window.fleet.replay.state")
    assert abs(state["position"]["lat"] - 52.59) < 0.0005
    assert abs(state["position"]["lon"] - 13.40) < 0.0005
    # A click on the event's tick seeks to it.
    await page.click("#replay-ticks .tick.vehicle")
    event_t = int(await page.get_attribute("#replay-ticks .tick.vehicle", "data-t") or 0)
    assert (await page.evaluate("window.fleet.replay.state"))["t"] == event_t
    # Play moves the clock forward; pause stops it.
    await page.select_option("#replay-speed", "300")
    await page.click("#replay-play")
    await page.wait_for_function(f"window.fleet.replay.state.t > {event_t + 30_000}",
                                 timeout=WAIT_MS)
    await page.click("#replay-play")
    assert (await page.evaluate("window.fleet.replay.state"))["playing"] is False
    await page.screenshot(path=str(ARTIFACTS / "console_replay.png"))

    # A custom range: only the first 10 minutes of the drive.
    await page.select_option("#replay-range", "custom")
    start = await page.evaluate(
        "(() => { const d = new Date(Date.now() - 40 * 60000 - new Date().getTimezoneOffset() "
        "* 60000); return d.toISOString().slice(0, 16); })()")
    end = await page.evaluate(
        "(() => { const d = new Date(Date.now() - 30 * 60000 - new Date().getTimezoneOffset() "
        "* 60000); return d.toISOString().slice(0, 16); })()")
    await page.fill("#replay-from", end)
    await page.fill("#replay-to", start)
    await page.click("#replay-custom button[type=submit]")
    assert "before the end" in await page.inner_text("#replay-range-error")
    await page.fill("#replay-from", start)
    await page.fill("#replay-to", end)
    await page.click("#replay-custom button[type=submit]")
    await page.wait_for_function("location.hash.includes('from=')", timeout=WAIT_MS)
    await page.wait_for_function(
        "window.fleet.replay.state && window.fleet.replay.state.points <= 660 "
        "&& window.fleet.replay.state.source === 'telemetry' "
        "&& window.fleet.replay.state.complete", timeout=WAIT_MS)
    # Ten minutes at 1 Hz fit in max_points: raw samples, and the harsh braking is in range.
    assert "1 event" in await page.inner_text("#replay-summary")
    await page.click("#replay-close")
    assert await page.locator("#replay").is_hidden()
    assert "replay=1" not in page.url


# -- the geofence editor ----------------------------------------------------------------------

async def _click_map(page: Page, lat: float, lon: float) -> None:
    """A click on the map at a position."""
    point = await page.evaluate(
        f"(() => {{ const p = window.fleet.map.map.latLngToContainerPoint([{lat}, {lon}]);"
        " const r = document.getElementById('map').getBoundingClientRect();"
        " return {x: r.left + p.x, y: r.top + p.y}; })()")
    await page.mouse.click(point["x"], point["y"])
    await page.wait_for_timeout(60)  # Geoman tells a double click from two clicks


async def _draw(page: Page, kind: str, points: list[tuple[float, float]]) -> None:
    await page.click(f"#fence-draw-{kind}")
    for lat, lon in points:
        await _click_map(page, lat, lon)
    await page.wait_for_selector("#fence-form:not([hidden])", timeout=WAIT_MS)


async def _fences(world: World) -> dict[str, dict[str, Any]]:
    resp = await world.client.get("/api/geofences",
                                  headers=world.auth(world.a.tokens["fleet_manager"]))
    return {f["properties"]["name"]: f for f in (await resp.json())["features"]}


async def _open_editor(session: Session, world: World) -> Page:
    page = session.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete ...?"
    await session.login(world.a.users["fleet_manager"])
    await page.evaluate("window.fleet.map.map.setView([52.52, 13.40], 15, {animate: false})")
    await page.click("#edit-fences")
    await page.wait_for_selector("#fence-editor:not([hidden]) #fence-list li", timeout=WAIT_MS)
    return page


async def test_fence_editor_draws_edits_and_deletes(session: Session, world: World) -> None:
    page = await _open_editor(session, world)
    name = f"Site {uuid.uuid4().hex[:4]}"
    # A polygon: four corners, then the first again to close it.
    square = [(52.523, 13.395), (52.523, 13.405), (52.517, 13.405), (52.517, 13.395)]
    await _draw(page, "polygon", [*square, square[0]])
    await page.click("#fence-form button[type=submit]")
    assert "a name is needed" in await page.inner_text("#fence-form")  # checked before sending
    await page.fill("#fence-form [name=name]", name)
    await page.fill("#fence-form [name=speedLimitKph]", "fast")
    await page.click("#fence-form button[type=submit]")
    assert "a number" in await page.inner_text("#fence-form")
    await page.fill("#fence-form [name=speedLimitKph]", "30")
    await page.check("#fence-form [name=alertOnEntry]")
    await page.click("#fence-form button[type=submit]")
    await page.wait_for_selector(f"#fence-list li:has-text('{name}')", timeout=WAIT_MS)
    saved = (await _fences(world))[name]
    assert saved["properties"]["kind"] == "polygon"
    assert saved["properties"]["speed_limit_kph"] == 30
    assert saved["properties"]["alert_on_entry"] is True
    ring = saved["geometry"]["coordinates"][0]
    assert len(ring) == 5
    assert abs(min(p[1] for p in ring) - 52.517) < 0.0005
    assert abs(max(p[0] for p in ring) - 13.405) < 0.0005

    # A hole cut into it.
    await page.click(f"#fence-list li:has-text('{name}')")
    await page.click("#fence-hole")
    hole = [(52.521, 13.398), (52.521, 13.402), (52.519, 13.402), (52.519, 13.398)]
    for lat, lon in [*hole, hole[0]]:
        await _click_map(page, lat, lon)
    await page.wait_for_selector("#fence-message:has-text('hole cut')", timeout=WAIT_MS)
    await page.click("#fence-form button[type=submit]")
    await page.wait_for_selector("#fence-message:has-text('saved')", timeout=WAIT_MS)
    geometry = (await _fences(world))[name]["geometry"]
    rings = geometry["coordinates"] if geometry["type"] == "Polygon" else geometry["coordinates"][0]
    assert len(rings) == 2, geometry  # the outline and the hole

    # A circle and a corridor.
    await _draw(page, "circle", [(52.5205, 13.3985), (52.5205, 13.4005)])
    await page.fill("#fence-form [name=name]", f"{name} circle")
    await page.click("#fence-form button[type=submit]")
    await page.wait_for_selector(f"#fence-list li:has-text('{name} circle')", timeout=WAIT_MS)
    circle = (await _fences(world))[f"{name} circle"]
    assert circle["geometry"]["type"] == "Point"
    assert 125 < circle["properties"]["radius_m"] < 145  # 0.002 degrees of longitude at 52.5 N
    road = [(52.5185, 13.396), (52.519, 13.400), (52.5185, 13.404)]
    await _draw(page, "corridor", [*road, road[-1]])
    await page.fill("#fence-form [name=name]", f"{name} road")
    await page.fill("#fence-form [name=corridorWidthM]", "40")
    await page.click("#fence-form button[type=submit]")
    await page.wait_for_selector(f"#fence-list li:has-text('{name} road')", timeout=WAIT_MS)
    road_fence = (await _fences(world))[f"{name} road"]
    assert road_fence["geometry"]["type"] == "LineString"
    assert len(road_fence["geometry"]["coordinates"]) == 3
    assert road_fence["properties"]["corridor_width_m"] == 40
    await page.screenshot(path=str(ARTIFACTS / "console_geofences.png"))

    # Delete the circle.
    await page.click(f"#fence-list li:has-text('{name} circle')")
    await page.click("#fence-delete")
    await page.wait_for_selector("#fence-message:has-text('deleted')", timeout=WAIT_MS)
    assert f"{name} circle" not in await _fences(world)
    # Done: the live map shows the new fences without a reload.
    await page.click("#fence-done")
    assert await page.locator("#fence-editor").is_hidden()


async def test_fence_editor_shows_the_server_refusal_at_its_vertex(session: Session,
                                                                    world: World) -> None:
    page = await _open_editor(session, world)
    # A bow tie: its edges cross at (52.52, 13.40); GEOS names that point.
    bow = [(52.523, 13.395), (52.517, 13.405), (52.523, 13.405), (52.517, 13.395)]
    await _draw(page, "polygon", [*bow, bow[0]])
    await page.fill("#fence-form [name=name]", "bow tie")
    await page.click("#fence-form button[type=submit]")
    await page.wait_for_selector("#fence-message.error", timeout=WAIT_MS)
    assert "Self-intersection" in await page.inner_text("#fence-message")
    marker = page.locator(".fence-error")
    await marker.wait_for(timeout=WAIT_MS)
    where = await page.evaluate(
        "(() => { const r = document.querySelector('.fence-error').getBoundingClientRect();"
        " const m = document.getElementById('map').getBoundingClientRect();"
        " const ll = window.fleet.map.map.containerPointToLatLng("
        "[r.left + r.width / 2 - m.left, r.top + r.height / 2 - m.top]);"
        " return [ll.lat, ll.lng]; })()")
    assert abs(where[0] - 52.52) < 0.0005
    assert abs(where[1] - 13.40) < 0.0005
    assert "bow tie" not in await _fences(world)
    await page.screenshot(path=str(ARTIFACTS / "console_geofence_error.png"))


async def test_only_managers_edit_fences(browser: Browser, world: World) -> None:
    base = str(world.client.make_url("/"))
    for role, can in (("viewer", False), ("admin", True)):
        context = await browser.new_context()
        try:
            s = Session(await context.new_page(), base)
            await s.sign_in(world.a.users[role])
            await s.page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
            await s.page.wait_for_function("window.fleet !== undefined", timeout=WAIT_MS)
            assert await s.page.locator("#edit-fences").is_visible() is can
        finally:
            await context.close()


async def test_a_fence_drawn_in_the_browser_reports_the_van_arriving(
        session: Session, world: World, tmp_path: Path, mqtt_url: str) -> None:
    """End to end: the stream runs; a dispatcher draws a fence around a van's road; the stream
    picks the fence up without a restart and the enter event reaches the console live."""
    stream = StreamProcess(tmp_path, ingest_url=world.db.ingest_url, mqtt_url=mqtt_url,
                           redis_url=world.redis_url, tenant=world.a.slug)
    stream.presubscribe()
    stream.start()
    try:
        page = await _open_editor(session, world)
        await page.evaluate("window.fleet.map.map.setView([52.5055, 13.43], 15, {animate: false})")
        name = f"Customer {uuid.uuid4().hex[:4]}"
        site = [(52.5065, 13.428), (52.5065, 13.432), (52.5045, 13.432), (52.5045, 13.428)]
        await _draw(page, "polygon", [*site, site[0]])
        await page.fill("#fence-form [name=name]", name)
        await page.click("#fence-form button[type=submit]")
        await page.wait_for_selector(f"#fence-list li:has-text('{name}')", timeout=WAIT_MS)
        await page.click("#fence-done")
        # The stream reloads its fences on the table's NOTIFY (after a short coalescing wait).
        deadline = time.monotonic() + 30
        while "geofence index v2" not in stream.log_text():
            assert time.monotonic() < deadline, stream.log_text()
            assert stream.alive()
            await page.wait_for_timeout(200)

        # The van drives north along 13.43 through the new fence, one fix a second.
        client = mqtt_client(mqtt_url)
        t0 = int(time.time() * 1000) - 60_000
        samples = [Sample(seq=seq, t_ms=t0 + seq * 1000, lat_deg=52.500 + seq * 0.0002,
                          lon_deg=13.43, speed_kph=72.0, ignition=True)
                   for seq in range(1, 51)]
        for k in range(0, len(samples), 10):
            publish(client, world.a.slug, "assigned", samples[k:k + 10])
        client.disconnect()
        item = page.locator("#events li.geofence", has_text=f"enter {name}")
        await item.wait_for(timeout=60_000)
        assert stream.alive()
        await page.screenshot(path=str(ARTIFACTS / "console_fence_enter.png"))
    finally:
        stream.stop()


async def test_acknowledge_an_alert_seen_by_a_second_dispatcher(
        browser: Browser, session: Session, world: World) -> None:
    """One dispatcher acknowledges with a comment; another sees it live, and the vehicle
    stops alerting for both; a viewer cannot acknowledge."""
    a = world.a
    vid = a.vehicles["assigned"]
    _vehicle_event(world, vid, "low_battery", "critical", "2 minutes", value=11.2)
    alert_item = "#events li.vehicle:has-text('low battery')"
    other_context = await browser.new_context(viewport={"width": 1400, "height": 860})
    try:
        second = Session(await other_context.new_page(), session.base)
        await second.login(a.users["admin"])
        await second.page.wait_for_selector(alert_item, timeout=WAIT_MS)
        await second.page.wait_for_selector(f'{second.row(vid)}[data-alerting="true"]',
                                            timeout=WAIT_MS)
        assert "unacknowledged" in await second.page.inner_text("#alerts-open")

        page = session.page
        await session.login(a.users["fleet_manager"])
        item = page.locator(alert_item)
        await item.wait_for(timeout=WAIT_MS)
        await item.locator(".ack-button").click()
        await item.locator(".ack-form input").fill("driver called, charger fixed")
        await item.locator(".ack-form button").click()
        await page.wait_for_selector(f"{alert_item}.acked", timeout=WAIT_MS)
        assert a.users["fleet_manager"] in await item.inner_text()
        # The other dispatcher sees it without reloading: who, and the comment.
        acked = second.page.locator(f"{alert_item}.acked")
        await acked.wait_for(timeout=WAIT_MS)
        text = await acked.inner_text()
        assert a.users["fleet_manager"] in text
        assert "charger fixed" in text
        await second.page.wait_for_selector(f'{second.row(vid)}[data-alerting="false"]',
                                            timeout=WAIT_MS)
        await second.page.screenshot(path=str(ARTIFACTS / "console_acknowledged.png"))
        assert second.errors == []
    finally:
        await other_context.close()
    # Stored and audited.
    with psycopg.connect(world.db.owner_url) as conn:
        stored = conn.execute("SELECT comment FROM event_acks WHERE vehicle_id = %s "
                              "AND event_type = 'low_battery'", (vid,)).fetchall()
        audited = conn.execute("SELECT count(*) FROM audit_logs WHERE action = 'event.ack'"
                               ).fetchone()
    assert stored == [("driver called, charger fixed",)]
    assert audited is not None
    assert audited[0] >= 1


async def test_a_viewer_cannot_acknowledge(browser: Browser, world: World) -> None:
    _vehicle_event(world, world.a.vehicles["other"], "idling", "warning", "1 minute")
    context = await browser.new_context()
    try:
        s = Session(await context.new_page(), str(world.client.make_url("/")))
        await s.sign_in(world.a.users["viewer"])
        await s.page.wait_for_selector("#events li", timeout=WAIT_MS)
        assert await s.page.locator("#events .ack-button").count() == 0
    finally:
        await context.close()


async def test_fleet_overview_page(browser: Browser, session: Session, world: World) -> None:
    """The dashboard's figures on a page of their own, in the link; the vehicle with the most
    open alerts leads back to the map; drivers have no overview (the dashboard's roles)."""
    a = world.a
    _vehicle_event(world, a.vehicles["other"], "overspeed", "critical", "3 minutes")
    page = session.page
    await session.login(a.users["fleet_manager"])
    await page.wait_for_selector("#events li", timeout=WAIT_MS)
    await page.click("#tab-overview")
    await page.wait_for_selector("#overview-cards .card", timeout=WAIT_MS)
    assert "page=overview" in page.url
    assert await page.locator("#live").is_hidden()
    resp = await world.client.get("/api/dashboard",
                                  headers=world.auth(a.tokens["fleet_manager"]))
    dashboard = await resp.json()
    cards = await page.inner_text("#overview-cards")
    assert f"vehicles\n{dashboard['vehicles_total']}" in cards.lower()
    assert f"distance today\n{dashboard['distance_today_km']:.1f} km" in cards.lower()
    assert await page.locator("#overview-bars .bars").count() == 3
    assert "computed" in await page.inner_text("#overview-computed")
    await page.screenshot(path=str(ARTIFACTS / "console_overview.png"))
    top = page.locator(f'#overview-alerts li[data-vehicle-id="{a.vehicles["other"]}"]')
    await top.wait_for(timeout=WAIT_MS)
    await top.click()
    await page.wait_for_selector("#panel:not([hidden])", timeout=WAIT_MS)
    assert await page.inner_text("#panel-title") == "other"
    assert "page=overview" not in page.url

    # A link to the overview opens it after sign-in; a driver gets the map instead.
    for role, shown in (("fleet_manager", True), ("driver", False)):
        context = await browser.new_context(viewport={"width": 1400, "height": 860})
        try:
            other = Session(await context.new_page(), session.base)
            await other.login(a.users[role], "#page=overview")
            await other.page.wait_for_function("window.fleet !== undefined", timeout=WAIT_MS)
            if shown:
                await other.page.wait_for_selector("#overview:not([hidden])", timeout=WAIT_MS)
            else:
                assert await other.page.locator("#tab-overview").is_hidden()
                assert await other.page.locator("#overview").is_hidden()
            assert other.errors == []
        finally:
            await context.close()
