"""Smartcar API v3: Connect with user_id, application token cache, pulls, lock/unlock, webhooks."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.config import ApiSection, ApiSettings
from api.integrations.config import IntegrationsSettings, integrations_settings
from api.integrations.crypto import TokenCipher
from api.integrations.errors import IntegrationConfigError
from api.integrations.http import VendorHttp
from api.integrations.publisher import MqttPublisher
from api.integrations.services import puller_services
from api.integrations.smartcar.client import (
    Connection,
    SmartcarAppToken,
    SmartcarClient,
    SmartcarV3Client,
)
from api.integrations.smartcar.consent import SmartcarTokens, SmartcarV3Connections
from api.integrations.smartcar.puller import (
    SmartcarPuller,
    SmartcarV3Puller,
    build_puller,
    location_cache_key,
)
from api.integrations.smartcar.routes import sign_webhook
from api.integrations.smartcar.signals import signals_to_samples
from api.jobs.config import JobsSettings
from core.errors import SettingsError
from core.ports import free_port as _free_port
from core.protocol import Source
from core.settings import DatabaseSettings, MqttSettings, RedisSettings
from simulators.samsara import Fault
from simulators.smartcar import MockSmartcar
from tests.integrations.conftest import TOKEN_KEY, pool, serve, telemetry_listener, wait_for
from tests.integrations.test_smartcar import Api

pytestmark = pytest.mark.services


def v3_settings(mock_url: str, api_url: str = "http://127.0.0.1:1") -> dict[str, object]:
    return {"token_key": TOKEN_KEY, "smartcar_api_version": "v3",
            "smartcar_v3_api_url": f"{mock_url}/v3", "smartcar_iam_url": mock_url,
            "smartcar_api_url": f"{mock_url}/v2.0", "smartcar_auth_url": mock_url,
            "smartcar_connect_url": mock_url,
            "smartcar_client_id": "mock-client-id", "smartcar_client_secret": "mock-client-secret",
            "smartcar_management_token": "mock-management-token",
            "smartcar_redirect_uri": f"{api_url}/api/smartcar/callback",
            "http_backoff_base_s": 0.01, "http_backoff_max_s": 0.05, "http_max_retries": 3}


@contextlib.asynccontextmanager
async def api(database, redis_url: str, mqtt_url: str, mock_url: str,
              tenant_id: uuid.UUID) -> AsyncIterator[Api]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = ApiSettings(
        database=DatabaseSettings(url=database.app_url, owner_url=database.owner_url,
                                  ingest_url=database.ingest_url),
        redis=RedisSettings(url=redis_url), mqtt=MqttSettings(url=mqtt_url),
        api=ApiSection(environment="test", rate_limit_per_min=0),
        integrations=v3_settings(mock_url, url), jobs={"enabled": False})
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(url, session, app, tenant_id)
    finally:
        await server.close()


@dataclass
class PullerEnv:
    """A running mock, pools, the vendor HTTP client and the MQTT publisher a puller needs."""

    mock_url: str
    db: Any
    owner: Any
    http: VendorHttp
    pub: MqttPublisher

    async def connect_v3(self, tenant_id: uuid.UUID, sc_id: str, user_id: str,
                         vehicle_id: uuid.UUID | None) -> None:
        """Store a v3 connection (Smartcar vehicle, owner) as Connect would."""
        async with self.owner.acquire() as conn:
            await SmartcarV3Connections().store(conn, tenant_id, Connection(sc_id, user_id),
                                                vehicle_id=vehicle_id, connected_by=None)


@contextlib.asynccontextmanager
async def puller_env(database, mqtt_url: str, mock: MockSmartcar) -> AsyncIterator[PullerEnv]:
    async with serve(mock.app()) as mock_url, pool(database.ingest_url) as db, \
            pool(database.owner_url) as owner, \
            VendorHttp(timeout_s=5, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05,
                       name="smartcar") as http, \
            MqttPublisher(MqttSettings(url=mqtt_url)) as pub:
        yield PullerEnv(mock_url, db, owner, http, pub)


async def connect(a: Api, vehicle_id: uuid.UUID) -> tuple[str, str]:
    """Run Connect through the mock; returns (Smartcar vehicle id, user id from the redirect)."""
    async with a.session.get(f"{a.url}/api/smartcar/auth-url",
                             params={"vehicle_id": str(vehicle_id)},
                             headers=a.headers("fleet_manager")) as r:
        assert r.status == 200, await r.text()
        auth = await r.json()
    async with a.session.get(auth["url"], allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(f"{a.url}/api/smartcar/callback?")
    assert "user_id=" in location
    assert "code=" not in location
    user_id = location.split("user_id=")[1].split("&")[0]
    async with a.session.get(location) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["vehicle_id"] == str(vehicle_id)
    return str(body["connected"][0]), user_id


def test_api_version_setting_is_validated() -> None:
    assert integrations_settings({}, environ={}).smartcar_api_version == "v3"
    assert integrations_settings({"smartcar_api_version": "2.0"},
                                 environ={}).smartcar_api_version == "2.0"
    with pytest.raises(SettingsError, match="smartcar_api_version"):
        integrations_settings({"smartcar_api_version": "v4"}, environ={})


def test_signal_mapping() -> None:
    items = [
        {"attributes": {"code": "location-preciselocation", "status": {"value": "SUCCESS"},
                        "body": {"latitude": 48.1, "longitude": 11.5, "heading": 90}},
         "meta": {"oemUpdatedAt": 1_700_000_000}},
        {"attributes": {"code": "odometer-traveleddistance",
                        "body": {"unit": "miles", "value": 100}},
         "meta": {"oemUpdatedAt": 1_700_000_000_500}},
        {"attributes": {"code": "tractionbattery-stateofcharge",
                        "status": {"value": "ERROR"}, "body": {}}},
        {"attributes": {"code": "internalcombustionengine-fuellevel",
                        "body": {"unit": "percent", "value": 140}}},  # out of range: skipped
        {"attributes": {"code": "charge-voltage", "body": {"unit": "volts", "value": 85}}},
    ]
    samples, location = signals_to_samples(items, default_ms=5)
    assert [s.t_ms for s in samples] == [1_700_000_000_000, 1_700_000_000_500]
    assert samples[0].lat_deg == 48.1
    assert samples[0].heading_deg == 90
    assert samples[1].odometer_km == pytest.approx(160.9344)
    assert samples[0].seq % 8 == 0  # same slots as 2.0
    assert samples[1].seq % 8 == 2
    assert location == {"latitude": 48.1, "longitude": 11.5, "t_ms": 1_700_000_000_000}


async def test_app_token_cached_and_rerequested_before_expiry() -> None:
    mock = MockSmartcar(api_version="v3", app_token_ttl_s=3600)
    now = [1000.0]
    async with serve(mock.app()) as mock_url, \
            VendorHttp(timeout_s=5, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05,
                       name="smartcar") as http:
        settings = IntegrationsSettings(**v3_settings(mock_url))  # type: ignore[arg-type]
        token = SmartcarAppToken(http, settings, clock=lambda: now[0])
        first = await token.get()
        assert await token.get() == first  # cached
        assert mock.app_tokens_issued == 1
        now[0] += 3600 - 300 - 1  # still more than the 300 s margin left
        assert await token.get() == first
        now[0] += 2  # inside the margin: a new token, before Smartcar's expiry
        second = await token.get()
        assert second != first
        assert mock.app_tokens_issued == 2
        assert "refresh_token" not in json.dumps(mock.app_token(None, {
            "grant_type": "client_credentials", "client_id": "mock-client-id",
            "client_secret": "mock-client-secret"})[1])

        # Smartcar rejecting a cached token early (401): the client asks once for a new one.
        client = SmartcarV3Client(http, settings, token)
        mock.owners[mock.vehicle_ids[0]] = "u-1"
        mock.app_tokens.clear()
        issued = mock.app_tokens_issued
        assert await client.connections("u-1") == [Connection(mock.vehicle_ids[0], "u-1")]
        assert mock.app_tokens_issued == issued + 1
        # Wrong client secret: a vendor error, not a retry loop.
        bad = IntegrationsSettings(**{**v3_settings(mock_url),  # type: ignore[arg-type]
                                      "smartcar_client_secret": "wrong"})
        with pytest.raises(Exception, match="401"):
            await SmartcarAppToken(http, bad).get()


async def test_connect_lock_audit_rbac_location(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar(vehicles=2, api_version="v3")
    vid = fleet.vehicles["truck-0"]
    async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                   fleet.tenant_id) as a:
        sc_id, user_id = await connect(a, vid)
        assert sc_id == mock.vehicle_ids[0]
        assert mock.owners[sc_id] == user_id
        with psycopg.connect(database.owner_url) as conn:
            row = conn.execute("SELECT smartcar_user_id, vehicle_id FROM smartcar_v3_connections"
                               " WHERE smartcar_vehicle_id = %s", (sc_id,)).fetchone()
            linked = conn.execute("SELECT smartcar_id FROM vehicles WHERE id = %s",
                                  (vid,)).fetchone()[0]
            pairs = conn.execute("SELECT count(*) FROM smartcar_tokens").fetchone()[0]
        assert row == (user_id, vid)
        assert linked == sc_id
        assert pairs == 0  # v3 keeps no per-vehicle tokens

        # A v3 callback without user_id (e.g. a 2.0-style code) is refused.
        async with a.session.get(f"{a.url}/api/smartcar/auth-url",
                                 headers=a.headers("admin")) as r:
            state = (await r.json())["state"]
        async with a.session.get(f"{a.url}/api/smartcar/callback",
                                 params={"state": state, "code": "abc"}) as r:
            assert r.status == 400
            assert "user_id" in (await r.json())["error"]["message"]

        for action, role in (("lock", "fleet_manager"), ("unlock", "admin")):
            async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/{action}",
                                      headers=a.headers(role)) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["status"] == "success"
        assert mock.commands == [(sc_id, "LOCK"), (sc_id, "UNLOCK")]
        assert mock.locked[sc_id] is False
        assert f"POST /v3/vehicles/{sc_id}/commands/security/lock" in mock.requests
        assert mock.app_tokens_issued == 1  # one application token for everything

        for role in ("viewer", "driver", "technician"):
            async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/unlock",
                                      headers=a.headers(role)) as r:
                assert r.status == 403
        async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/unlock") as r:
            assert r.status == 401
        other = fleet.vehicles["truck-1"]
        async with a.session.post(f"{a.url}/api/smartcar/vehicles/{other}/lock",
                                  headers=a.headers("admin")) as r:
            assert r.status == 409
        assert len(mock.commands) == 2

        with psycopg.connect(database.owner_url) as conn:
            audit = conn.execute("SELECT action, outcome, details FROM audit_logs"
                                 " WHERE action LIKE 'smartcar.%' ORDER BY id").fetchall()
        assert [(x[0], x[1]) for x in audit] == [
            ("smartcar.connect", "success"), ("smartcar.lock", "success"),
            ("smartcar.unlock", "success"), ("smartcar.lock", "failure")]
        assert audit[0][2]["api_version"] == "v3"
        assert audit[1][2]["api_version"] == "v3"

        for cached in (False, True):
            async with a.session.get(f"{a.url}/api/smartcar/vehicles/{vid}/location",
                                     headers=a.headers("viewer")) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
                assert body["cached"] is cached
                assert body["latitude"] == pytest.approx(mock.fleet[sc_id].lat, abs=1e-6)
        redis = aioredis.Redis.from_url(redis_url)
        try:
            ttl = await redis.ttl(location_cache_key(fleet.tenant_id, sc_id))
            assert 0 < ttl <= 300
        finally:
            await redis.aclose()


async def test_consent_refused(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar(api_version="v3")
    async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                   fleet.tenant_id) as a:
        async with a.session.get(f"{a.url}/api/smartcar/auth-url",
                                 headers=a.headers("admin")) as r:
            url = (await r.json())["url"]
        async with a.session.get(url + "&deny=1", allow_redirects=False) as r:
            location = r.headers["Location"]
        async with a.session.get(location) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "consent_refused"


async def test_webhook_v3_signature(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar(api_version="v3")
    sc_id = mock.vehicle_ids[1]
    mock.owners[sc_id] = str(uuid.uuid4())
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE vehicles SET smartcar_id = %s WHERE id = %s",
                     (sc_id, fleet.vehicles["truck-2"]))
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                       fleet.tenant_id) as a:
            hook = f"{a.url}/api/smartcar/webhooks"
            raw, headers = mock.webhook_v3(sc_id)
            async with a.session.post(hook, data=raw, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["samples"] == 2
            forged = raw.replace(b'"value": ', b'"value": 1', 1)
            assert forged != raw
            async with a.session.post(hook, data=forged, headers=headers) as r:
                assert r.status == 401
            async with a.session.post(hook, data=raw, headers={"SC-Signature": "0" * 64}) as r:
                assert r.status == 401
            async with a.session.post(hook, data=raw) as r:
                assert r.status == 401
            verify = json.dumps({"eventId": "e1", "eventType": "VERIFY",
                                 "data": {"challenge": "abc123"},
                                 "meta": {"version": "4.0", "webhookId": "w"}}).encode()
            async with a.session.post(hook, data=verify, headers={
                    "SC-Signature": sign_webhook(mock.management_token, verify)}) as r:
                assert r.status == 200
                assert (await r.json())["challenge"] == sign_webhook(mock.management_token,
                                                                     b"abc123")
        await wait_for(lambda: len(got) >= 1, what="webhook telemetry")
    vehicle, message = got[0]
    assert vehicle == "truck-2"
    assert message.source is Source.SMARTCAR
    assert {s.odometer_km is not None or s.lat_deg is not None for s in message.samples} == {True}


async def test_puller_publishes_and_caches(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar(vehicles=1, api_version="v3")
    sc_id = mock.vehicle_ids[0]
    user_id = mock.owners.setdefault(sc_id, str(uuid.uuid4()))
    mock.faults = [Fault(429, retry_after="0.05"), Fault(503)]
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with puller_env(database, mqtt_url, mock) as env:
            http = env.http
            settings = IntegrationsSettings(**v3_settings(env.mock_url))  # type: ignore[arg-type]
            client = SmartcarV3Client(http, settings, SmartcarAppToken(http, settings))
            await env.connect_v3(fleet.tenant_id, sc_id, user_id, fleet.vehicles["truck-1"])
            redis = aioredis.Redis.from_url(redis_url)
            try:
                puller = SmartcarV3Puller(env.db, client, env.pub, redis, poll_s=1,
                                          location_cache_s=300)
                # location, odometer, fuel level, state of charge
                assert await puller.poll_once() == 4
                assert http.stats.rate_limited == 1
                assert http.stats.server_errors == 1
                cached = json.loads(await redis.get(location_cache_key(fleet.tenant_id, sc_id)))
                assert cached["latitude"] == pytest.approx(mock.fleet[sc_id].lat, abs=1e-6)
                # A wrong owner id is refused by Smartcar (403): counted, not fatal.
                await env.connect_v3(fleet.tenant_id, sc_id, "someone-else", None)
                assert await puller.poll_once() == 0
                assert puller.failures == 1
            finally:
                await redis.aclose()
        await wait_for(lambda: len(got) >= 1, what="smartcar v3 telemetry")
    vehicle, message = got[0]
    assert vehicle == "truck-1"
    assert message.source is Source.SMARTCAR
    fields = {name for s in message.samples for name in ("lat_deg", "odometer_km", "fuel_pct")
              if getattr(s, name) is not None}
    assert fields == {"lat_deg", "odometer_km", "fuel_pct"}


async def test_second_vehicle_of_same_owner_links_the_new_one(database, fleet, redis_url,
                                                               mqtt_url) -> None:
    mock = MockSmartcar(vehicles=2, api_version="v3")
    async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                   fleet.tenant_id) as a:
        first, user_id = await connect(a, fleet.vehicles["truck-0"])
        # The same owner connects a second car: /connections now lists both.
        mock.owners[mock.vehicle_ids[1]] = user_id
        second, again = await connect(a, fleet.vehicles["truck-1"])
        assert again == user_id
        assert first == mock.vehicle_ids[0]
        with psycopg.connect(database.owner_url) as conn:
            links = dict(conn.execute(
                "SELECT code, smartcar_id FROM vehicles WHERE smartcar_id IS NOT NULL").fetchall())
            rows = dict(conn.execute("SELECT smartcar_vehicle_id, vehicle_id"
                                     " FROM smartcar_v3_connections").fetchall())
        assert links == {"truck-0": mock.vehicle_ids[0], "truck-1": mock.vehicle_ids[1]}
        assert rows == {mock.vehicle_ids[0]: fleet.vehicles["truck-0"],
                        mock.vehicle_ids[1]: fleet.vehicles["truck-1"]}
        assert second == mock.vehicle_ids[0]  # "connected" lists all of the owner's cars


async def test_vehicle_connected_under_2_0_keeps_working_after_switch(
        database, fleet, redis_url, mqtt_url) -> None:
    """A deployment switched to v3 still commands vehicles whose consent is a 2.0 pair."""
    mock = MockSmartcar(vehicles=2, api_version="2.0")
    vid = fleet.vehicles["truck-2"]
    async with serve(mock.app()) as mock_url, pool(database.owner_url) as owner, \
            VendorHttp(timeout_s=5, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05,
                       name="smartcar") as http:
        settings = IntegrationsSettings(**v3_settings(mock_url))  # type: ignore[arg-type]
        client = SmartcarClient(http, settings)
        redirect = mock.authorize({"client_id": "mock-client-id",
                                   "redirect_uri": "http://x/cb", "state": "s"})
        pair = await client.exchange_code(redirect.split("code=")[1].split("&")[0])
        sc_id = (await client.vehicles(pair.access_token))[0]
        async with owner.acquire() as conn:
            await SmartcarTokens(client, TokenCipher(TOKEN_KEY), refresh_margin_s=600).store(
                conn, fleet.tenant_id, sc_id, pair, vehicle_id=vid, connected_by=None)
        mock.api_version = "v3"
        async with api(database, redis_url, mqtt_url, mock_url, fleet.tenant_id) as a, \
                a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/lock",
                               headers=a.headers("admin")) as r:
            assert r.status == 200, await r.text()
    assert mock.commands == [(sc_id, "LOCK")]
    assert f"POST /v2.0/vehicles/{sc_id}/security" in mock.requests
    assert mock.app_tokens_issued == 0
    with psycopg.connect(database.owner_url) as conn:
        details = conn.execute("SELECT details FROM audit_logs WHERE action = 'smartcar.lock'"
                               ).fetchone()[0]
    assert details["api_version"] == "2.0"


async def test_job_puller_covers_v3_vehicles(database, fleet, redis_url, mqtt_url) -> None:
    """`SmartcarPuller`, which the job runner builds, polls v3 connections under v3."""
    mock = MockSmartcar(vehicles=1, api_version="v3")
    sc_id = mock.vehicle_ids[0]
    user_id = mock.owners.setdefault(sc_id, str(uuid.uuid4()))
    async with puller_env(database, mqtt_url, mock) as env:
        db, http, pub, mock_url = env.db, env.http, env.pub, env.mock_url
        settings = IntegrationsSettings(**v3_settings(mock_url))  # type: ignore[arg-type]
        await env.connect_v3(fleet.tenant_id, sc_id, user_id, fleet.vehicles["truck-0"])
        tokens = SmartcarTokens(SmartcarClient(http, settings), TokenCipher(TOKEN_KEY),
                                refresh_margin_s=600)
        redis = aioredis.Redis.from_url(redis_url)
        try:
            puller = SmartcarPuller(db, tokens, pub, redis, poll_s=1, location_cache_s=300)
            assert puller.v3 is not None
            assert await puller.poll_once() == 4
        finally:
            await redis.aclose()
        two = IntegrationsSettings(**{**v3_settings(mock_url),  # type: ignore[arg-type]
                                      "smartcar_api_version": "2.0"})
        only_v2 = SmartcarPuller(db, SmartcarTokens(SmartcarClient(http, two),
                                                    TokenCipher(TOKEN_KEY), refresh_margin_s=1),
                                 pub, None, poll_s=1, location_cache_s=300)
        assert only_v2.v3 is None


async def test_without_token_key_the_job_polls_v3_connections(database, fleet, redis_url,
                                                              mqtt_url) -> None:
    """A v3-only deployment needs no `integrations.token_key`: the job's puller is v3 alone,
    while the Samsara puller (encrypted API tokens) stays off."""
    mock = MockSmartcar(vehicles=1, api_version="v3")
    sc_id = mock.vehicle_ids[0]
    user_id = mock.owners.setdefault(sc_id, str(uuid.uuid4()))
    keyless = {**v3_settings("http://127.0.0.1:1"), "token_key": ""}
    jobs = JobsSettings(pullers_enabled=True)
    names = [n for n, _ in puller_services(DatabaseSettings(), MqttSettings(), RedisSettings(),
                                           jobs, IntegrationsSettings(**keyless))]  # type: ignore[arg-type]
    assert names == ["smartcar"]
    two = IntegrationsSettings(**{**keyless, "smartcar_api_version": "2.0"})  # type: ignore[arg-type]
    assert puller_services(DatabaseSettings(), MqttSettings(), RedisSettings(), jobs, two) == []
    async with puller_env(database, mqtt_url, mock) as env:
        settings = IntegrationsSettings(**{**v3_settings(env.mock_url),  # type: ignore[arg-type]
                                           "token_key": ""})
        await env.connect_v3(fleet.tenant_id, sc_id, user_id, fleet.vehicles["truck-0"])
        redis = aioredis.Redis.from_url(redis_url)
        try:
            puller = build_puller(env.db, env.http, env.pub, redis, settings)
            assert isinstance(puller, SmartcarV3Puller)
            assert await puller.poll_once() == 4
        finally:
            await redis.aclose()
        with pytest.raises(IntegrationConfigError, match="token_key"):
            build_puller(env.db, env.http, env.pub, None,
                         IntegrationsSettings(**{**v3_settings(env.mock_url),  # type: ignore[arg-type]
                                                 "token_key": "",
                                                 "smartcar_api_version": "2.0"}))
