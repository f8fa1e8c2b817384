"""Samsara puller against the mock server, the real database and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.errors import TokenCipherError, VendorUnavailableError
from api.integrations.http import VendorHttp
from api.integrations.publisher import MqttPublisher, vendor_seq
from api.integrations.samsara.client import SamsaraClient
from api.integrations.samsara.puller import SamsaraPuller
from api.integrations.samsara.signals import convert_vehicle_stats
from api.integrations.services import samsara_service
from api.integrations.store import IntegrationStore, TenantRef
from core.protocol import Sample, Source
from core.settings import DatabaseSettings, MqttSettings
from simulators.samsara import Fault, MockSamsara
from tests.integrations.conftest import TOKEN_KEY, Fleet, pool, serve, telemetry_listener, wait_for

pytestmark = pytest.mark.services

FEED = ("gps", "engineStates", "obdOdometerMeters")


def test_convert_units_and_seq() -> None:
    data = [{"id": "1", "name": "a",
             "gps": [{"time": "2026-01-02T03:04:05.500Z", "latitude": 52.5, "longitude": 13.4,
                      "headingDegrees": 90, "speedMilesPerHour": 10}],
             "engineStates": [{"time": "2026-01-02T03:04:05.500Z", "value": "Off"}],
             "obdOdometerMeters": [{"time": "2026-01-02T03:04:06Z", "value": 12345}],
             "fuelPercents": [{"time": "2026-01-02T03:04:06Z", "value": 140}]}]
    conv = convert_vehicle_stats(data)
    samples = {s.seq: s for s in conv.samples["1"]}
    t_ms = 1767323045500
    gps = samples[vendor_seq(t_ms, 0)]
    assert gps.lat_deg == 52.5
    assert gps.speed_kph == pytest.approx(16.09344)
    assert samples[vendor_seq(t_ms, 1)].ignition is False
    assert samples[vendor_seq(t_ms + 500, 2)].odometer_km == pytest.approx(12.345)
    # 140 % fuel breaks the wire contract's range: reported, not published.
    assert len(conv.invalid) == 1
    assert conv.invalid[0][0] == "1"


@dataclass
class Rig:
    mock: MockSamsara
    http: VendorHttp
    store: IntegrationStore
    puller: SamsaraPuller
    base_url: str


@contextlib.asynccontextmanager
async def rig(database, fleet: Fleet, mqtt_url: str, mock: MockSamsara,
              base_url: str | None = None) -> AsyncIterator[Rig]:
    cipher = TokenCipher(TOKEN_KEY)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO integration_credentials (tenant_id, vendor, secret_enc)"
                     " VALUES (%s, 'samsara', %s) ON CONFLICT DO NOTHING",
                     (fleet.tenant_id, cipher.encrypt(mock.token)))
    async with contextlib.AsyncExitStack() as stack:
        url = base_url or await stack.enter_async_context(serve(mock.app()))
        db = await stack.enter_async_context(pool(database.ingest_url))
        store = IntegrationStore(db, cipher)
        http = await stack.enter_async_context(VendorHttp(
            timeout_s=5, max_retries=4, backoff_base_s=0.01, backoff_max_s=0.05, name="samsara"))
        publisher = await stack.enter_async_context(MqttPublisher(MqttSettings(url=mqtt_url)))
        tenants = await store.tenants_with("samsara")
        assert TenantRef(fleet.tenant_id, fleet.slug) in tenants
        token = await store.secret(fleet.tenant_id, "samsara")
        assert token == mock.token
        client = SamsaraClient(http, url, token)
        puller = SamsaraPuller(TenantRef(fleet.tenant_id, fleet.slug), client, store, publisher,
                               [FEED], caught_up_wait_s=0)
        yield Rig(mock, http, store, puller, url)


async def drain(r: Rig, cursor: str | None) -> str | None:
    more = True
    pages = 0
    while more:
        cursor, more = await r.puller.follow_once(FEED, cursor)
        pages += 1
        assert pages < 100
    return cursor


async def test_paging_cursor_restart_and_wire_contract(database, fleet, mqtt_url) -> None:
    mock = MockSamsara(vehicles=3, page_size=7)
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with rig(database, fleet, mqtt_url, mock) as r:
            cursor = await drain(r, None)  # first call: latest state, 3 vehicles x 3 types
            assert r.puller.stats.samples == 9
            mock.advance(5.0, steps=10)
            cursor = await drain(r, cursor)
            assert r.puller.stats.samples == 9 + 90
            assert r.puller.stats.pages >= 1 + 90 // 7  # it really paged
            assert await r.store.load_cursor(fleet.tenant_id, ",".join(FEED)) == cursor
            base_url = r.base_url
            # "Restart": a new puller with fresh connections resumes from the stored cursor.
            mock.advance(5.0, steps=2)
            async with rig(database, fleet, mqtt_url, mock, base_url=r.base_url) as r2:
                loaded = await r2.store.load_cursor(fleet.tenant_id, ",".join(FEED))
                assert loaded == cursor
                await drain(r2, loaded)
                assert r2.puller.stats.samples == 18  # exactly the new points, no repeats
            assert base_url
        await wait_for(lambda: sum(len(m.samples) for _, m in got) == 117, what="117 samples")
    assert {v for v, _ in got} == {"truck-0", "truck-1", "truck-2"}
    assert all(m.source is Source.SAMSARA for _, m in got)
    per_vehicle: dict[str, list[int]] = {}
    for v, m in got:
        per_vehicle.setdefault(v, []).extend(s.seq for s in m.samples)
    for seqs in per_vehicle.values():
        assert len(seqs) == len(set(seqs)) == 39
        assert seqs == sorted(seqs)  # published in time order, across the restart too


async def test_expired_cursor_restarts_cleanly(database, fleet, mqtt_url) -> None:
    mock = MockSamsara(vehicles=3)
    async with rig(database, fleet, mqtt_url, mock) as r:
        cursor = await drain(r, None)
        mock.advance(5.0)
        mock.cursor_ttl_s = -1.0  # every cursor handed out is now too old
        cursor, more = await r.puller.follow_once(FEED, cursor)
        assert cursor is None
        assert more
        assert r.puller.stats.cursor_resets == 1
        mock.cursor_ttl_s = 3600.0
        cursor = await drain(r, cursor)  # the feed starts again from the latest state
        assert cursor is not None
        row = await r.store.pool.fetchrow(
            "SELECT end_cursor, resets FROM samsara_feed_cursors WHERE tenant_id = $1",
            fleet.tenant_id)
        assert row["resets"] == 1
        assert row["end_cursor"] == cursor


async def test_429_retry_after_and_5xx_backoff(database, fleet, mqtt_url) -> None:
    mock = MockSamsara(vehicles=3)
    mock.faults = [Fault(429, retry_after="0.15"), Fault(503), Fault(502)]
    async with rig(database, fleet, mqtt_url, mock) as r:
        await drain(r, None)
        assert r.http.stats.rate_limited == 1
        assert r.http.stats.server_errors == 2
        assert r.http.stats.waits_s[0] == pytest.approx(0.15)  # fractional Retry-After honoured
        assert r.puller.stats.samples == 9
        # Beyond the retry budget the puller gets a VendorUnavailableError, and the cursor stays.
        before = await r.store.load_cursor(fleet.tenant_id, ",".join(FEED))
        mock.faults = [Fault(500)] * 10
        with pytest.raises(VendorUnavailableError):
            await r.puller.follow_once(FEED, before)
        assert await r.store.load_cursor(fleet.tenant_id, ",".join(FEED)) == before


async def test_unknown_vehicles_are_reported(database, fleet, mqtt_url) -> None:
    mock = MockSamsara(vehicles=3, unknown_vehicle_ids=["999000111"])
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with rig(database, fleet, mqtt_url, mock) as r:
            await drain(r, None)
            mock.advance(5.0)
            await drain(r, await r.store.load_cursor(fleet.tenant_id, ",".join(FEED)))
            assert r.puller.stats.unknown_vehicles == 2
            rows = await r.store.pool.fetch(
                "SELECT reason, external_id FROM integration_dead_letters WHERE tenant_id = $1",
                fleet.tenant_id)
            # One dead-letter row per unknown id per hour; the counter counts every sighting.
            assert [(x["reason"], x["external_id"]) for x in rows] == [
                ("unknown_vehicle", "999000111")]
        await wait_for(lambda: sum(len(m.samples) for _, m in got) == 18, what="18 samples")
    assert {v for v, _ in got} == {"truck-0", "truck-1", "truck-2"}


async def test_safety_events_into_video_events(database, fleet, mqtt_url) -> None:
    mock = MockSamsara(vehicles=3, unknown_vehicle_ids=["4242"])
    for truck in ("281474976710000", "281474976710001", "281474976710002", "4242"):
        mock.add_safety_event(truck, "harshBrake")
    now = datetime.fromtimestamp(mock.now, UTC) + timedelta(seconds=1)
    async with rig(database, fleet, mqtt_url, mock) as r:
        assert await r.puller.safety_once(now) == 4  # paged: the mock serves 2 per page
        assert await r.puller.safety_once(now + timedelta(seconds=5)) == 0  # deduplicated
        rows = await r.store.pool.fetch(
            "SELECT vehicle_id, external_id, event_type, video_url, ST_Y(location::geometry) AS lat"
            " FROM video_events WHERE tenant_id = $1 ORDER BY external_id", fleet.tenant_id)
        assert len(rows) == 4
        assert sum(1 for x in rows if x["vehicle_id"] is None) == 1
        assert {x["event_type"] for x in rows} == {"harshBrake"}
        assert all(x["video_url"].startswith("https://") and x["lat"] for x in rows)
        dead = await r.store.pool.fetchval(
            "SELECT count(*) FROM integration_dead_letters WHERE external_id = '4242'")
        assert dead == 1


def test_wrong_key_cannot_decrypt() -> None:
    enc = TokenCipher(TOKEN_KEY).encrypt("secret")
    with pytest.raises(TokenCipherError):
        TokenCipher("another-key-0123456789").decrypt(enc)
    assert isinstance(asyncpg.Pool, type)


async def test_samsara_service_follows_every_feed(database, fleet, mqtt_url) -> None:
    """The runner's Samsara service finds the tenant's token and follows both feeds."""

    mock = MockSamsara(vehicles=3)
    cipher = TokenCipher(TOKEN_KEY)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO integration_credentials (tenant_id, vendor, secret_enc)"
                     " VALUES (%s, 'samsara', %s)", (fleet.tenant_id, cipher.encrypt(mock.token)))
    async with serve(mock.app()) as url, telemetry_listener(mqtt_url, fleet.slug) as got:
        integ = IntegrationsSettings(token_key=TOKEN_KEY, samsara_base_url=url)
        service = samsara_service(DatabaseSettings(ingest_url=database.ingest_url),
                                  MqttSettings(url=mqtt_url), integ)
        task = asyncio.create_task(service())
        try:
            # Feed 1: gps, engineStates, obdOdometerMeters; feed 2: fuelPercents,
            # obdEngineSeconds: 5 latest values per vehicle.
            await wait_for(lambda: sum(len(m.samples) for _, m in got) >= 15, 20, "15 samples")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    with psycopg.connect(database.owner_url) as conn:
        feeds = sorted(r[0] for r in conn.execute("SELECT feed FROM samsara_feed_cursors"))
    assert "fuelPercents,obdEngineSeconds" in feeds
    assert "gps,engineStates,obdOdometerMeters" in feeds


async def test_follow_feed_waits_when_caught_up(database, fleet, mqtt_url) -> None:
    """Pages back to back while hasNextPage, then the >= 5 s pause Samsara asks for."""
    mock = MockSamsara(vehicles=3, page_size=10)
    async with rig(database, fleet, mqtt_url, mock) as r:
        await drain(r, None)
        mock.advance(5.0, steps=5)  # 45 points: pages of 10, 10, 10, 10, 5
        waits: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            waits.append(seconds)

        r.puller.caught_up_wait_s = 5.0
        r.puller._sleep = fake_sleep
        await r.puller.follow_feed(FEED, max_pages=6)
        # Four full pages without pausing, the last one caught up: pause; then one empty page.
        assert waits == [5.0, 5.0]
        assert r.puller.stats.samples == 9 + 45


async def test_rate_limit_and_random_errors_of_the_mock(database, fleet, mqtt_url) -> None:
    """The mock's own 429 (fractional Retry-After) and seeded 5xx: the puller still gets
    every point exactly once."""
    mock = MockSamsara(vehicles=3, page_size=10, rate_limit_per_s=5, retry_after_s=0.1,
                       error_rate=0.5, seed=3)
    async with rig(database, fleet, mqtt_url, mock) as r:
        r.http._max_retries = 30
        cursor = await drain(r, None)
        mock.advance(5.0, steps=8)
        await drain(r, cursor)
        assert r.puller.stats.samples == 9 + 72
        assert r.http.stats.rate_limited >= 1
        assert r.http.stats.server_errors >= 1
        assert 0.1 in r.http.stats.waits_s


async def test_publisher_reconnects_after_a_lost_connection(fleet, mqtt_url) -> None:
    async with telemetry_listener(mqtt_url, fleet.slug) as got, \
            MqttPublisher(MqttSettings(url=mqtt_url)) as pub:
        sample = Sample(seq=1, t_ms=1_767_225_600_000, fuel_pct=50.0)
        await pub.publish(fleet.slug, "truck-0", Source.SAMSARA, [sample])
        # The connection goes away under the publisher (here: closed cleanly behind its back).
        await pub._client.__aexit__(None, None, None)
        sample2 = Sample(seq=2, t_ms=1_767_225_601_000, fuel_pct=49.0)
        await pub.publish(fleet.slug, "truck-0", Source.SAMSARA, [sample2])
        assert pub.reconnects == 1

        def seqs() -> list[int]:
            return sorted({s.seq for _, m in got for s in m.samples})

        # Both samples arrive. The second may arrive twice: paho keeps a QoS 1 message that
        # failed for want of a connection and sends it on reconnect, and the publisher sends
        # it again (at-least-once; the stream's (vehicle, seq) key makes the copy a no-op).
        await wait_for(lambda: seqs() == [1, 2], what="both messages")
        assert {vehicle for vehicle, _ in got} == {"truck-0"}
        assert seqs() == [1, 2]
