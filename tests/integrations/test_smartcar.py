"""Smartcar: Connect flow, token refresh, lock/unlock with RBAC and audit, webhooks, puller."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.auth import TOKENS_KEY, AuthUser
from api.config import ApiSection, ApiSettings
from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.http import VendorHttp
from api.integrations.publisher import MqttPublisher
from api.integrations.smartcar.client import SmartcarClient
from api.integrations.smartcar.consent import SmartcarTokens
from api.integrations.smartcar.puller import SmartcarPuller, location_cache_key
from api.integrations.smartcar.routes import sign_webhook
from core.ports import free_port as _free_port
from core.protocol import Source
from core.settings import DatabaseSettings, MqttSettings, RedisSettings
from simulators.samsara import Fault
from simulators.smartcar import MockSmartcar
from tests.integrations.conftest import TOKEN_KEY, pool, serve, telemetry_listener, wait_for

pytestmark = pytest.mark.services


def integ_settings(mock_url: str, api_url: str = "http://127.0.0.1:1") -> dict[str, object]:
    return {"token_key": TOKEN_KEY, "smartcar_api_version": "2.0",
            "smartcar_api_url": f"{mock_url}/v2.0",
            "smartcar_auth_url": mock_url, "smartcar_connect_url": mock_url,
            "smartcar_client_id": "mock-client-id", "smartcar_client_secret": "mock-client-secret",
            "smartcar_management_token": "mock-management-token",
            "smartcar_redirect_uri": f"{api_url}/api/smartcar/callback",
            "http_backoff_base_s": 0.01, "http_backoff_max_s": 0.05, "http_max_retries": 3}


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    app: object
    tenant_id: uuid.UUID

    def headers(self, role: str) -> dict[str, str]:
        user = AuthUser(id=uuid.uuid4(), tenant_id=self.tenant_id, role=role,
                        email=f"{role}@example.test")
        return {"Authorization": f"Bearer {self.app[TOKENS_KEY].access_token(user)}"}


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
        integrations=integ_settings(mock_url, url), jobs={"enabled": False})
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(url, session, app, tenant_id)
    finally:
        await server.close()


async def connect(a: Api, vehicle_id: uuid.UUID) -> str:
    async with a.session.get(f"{a.url}/api/smartcar/auth-url",
                             params={"vehicle_id": str(vehicle_id)},
                             headers=a.headers("fleet_manager")) as r:
        assert r.status == 200, await r.text()
        auth = await r.json()
    # The owner's browser: Connect (the mock approves) redirects to our callback.
    async with a.session.get(auth["url"], allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(f"{a.url}/api/smartcar/callback?")
    async with a.session.get(location) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["vehicle_id"] == str(vehicle_id)
    return str(body["connected"][0])


async def test_connect_refresh_lock_audit_rbac(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar(vehicles=2, access_ttl_s=60.0)  # inside the 600 s refresh margin
    vid = fleet.vehicles["truck-0"]
    async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                   fleet.tenant_id) as a:
        sc_id = await connect(a, vid)
        assert sc_id == mock.vehicle_ids[0]
        with psycopg.connect(database.owner_url) as conn:
            row = conn.execute("SELECT access_token_enc, generation FROM smartcar_tokens"
                               " WHERE smartcar_vehicle_id = %s", (sc_id,)).fetchone()
            linked = conn.execute("SELECT smartcar_id FROM vehicles WHERE id = %s",
                                  (vid,)).fetchone()[0]
        assert linked == sc_id
        assert row[1] == 1
        plain = TokenCipher(TOKEN_KEY).decrypt(row[0])
        assert plain in mock.access
        assert plain.encode() not in bytes(row[0])  # encrypted at rest

        # A state is single-use: replaying the callback fails.
        async with a.session.get(f"{a.url}/api/smartcar/callback",
                                 params={"state": "x" * 43, "code": "nope"}) as r:
            assert r.status == 400

        # Lock: the token expires within the margin, so it is refreshed first.
        async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/lock",
                                  headers=a.headers("fleet_manager")) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["action"] == "LOCK"
        assert mock.commands == [(sc_id, "LOCK")]
        assert len(mock.used_refresh) == 1
        # Concurrent unlocks: refreshes serialise on the row lock, none reuses a refresh token.
        results = await asyncio.gather(*[
            a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/unlock",
                           headers=a.headers("admin")) for _ in range(4)])
        assert [r.status for r in results] == [200] * 4
        for r in results:
            r.release()
        assert len(mock.used_refresh) == 5
        with psycopg.connect(database.owner_url) as conn:
            gen = conn.execute("SELECT generation FROM smartcar_tokens").fetchone()[0]
        assert gen == 6

        # RBAC: viewers, drivers and technicians may not lock or unlock.
        for role in ("viewer", "driver", "technician"):
            async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/lock",
                                      headers=a.headers(role)) as r:
                assert r.status == 403
        async with a.session.post(f"{a.url}/api/smartcar/vehicles/{vid}/lock") as r:
            assert r.status == 401
        # A vehicle without a Smartcar connection: 409, audited as a failure.
        other = fleet.vehicles["truck-1"]
        async with a.session.post(f"{a.url}/api/smartcar/vehicles/{other}/lock",
                                  headers=a.headers("admin")) as r:
            assert r.status == 409
        assert len(mock.commands) == 5

        with psycopg.connect(database.owner_url) as conn:
            audit = conn.execute("SELECT action, outcome, resource_id FROM audit_logs"
                                 " WHERE action LIKE 'smartcar.%' ORDER BY id").fetchall()
        assert [x[0] for x in audit] == ["smartcar.connect", "smartcar.lock"] + \
            ["smartcar.unlock"] * 4 + ["smartcar.lock"]
        assert [x[1] for x in audit][-1] == "failure"
        assert all(x[1] == "success" for x in audit[:-1])

        # Location: fetched once, then served from the 5-minute Redis cache.
        for cached in (False, True):
            async with a.session.get(f"{a.url}/api/smartcar/vehicles/{vid}/location",
                                     headers=a.headers("viewer")) as r:
                assert r.status == 200
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
    mock = MockSmartcar()
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
        async with a.session.get(f"{a.url}/api/smartcar/auth-url",
                                 headers=a.headers("viewer")) as r:
            assert r.status == 403


async def test_webhook_signature(database, fleet, redis_url, mqtt_url) -> None:
    mock = MockSmartcar()
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE vehicles SET smartcar_id = %s WHERE id = %s",
                     (mock.vehicle_ids[1], fleet.vehicles["truck-2"]))
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with serve(mock.app()) as mock_url, api(database, redis_url, mqtt_url, mock_url,
                                                       fleet.tenant_id) as a:
            hook = f"{a.url}/api/smartcar/webhooks"
            raw, headers = mock.webhook(mock.vehicle_ids[1])
            async with a.session.post(hook, data=raw, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["samples"] == 2
            forged = raw.replace(b'"distance": ', b'"distance": 1')
            async with a.session.post(hook, data=forged, headers=headers) as r:
                assert r.status == 401
            async with a.session.post(hook, data=raw, headers={"SC-Signature": "0" * 64}) as r:
                assert r.status == 401
            async with a.session.post(hook, data=raw) as r:
                assert r.status == 401
            verify = json.dumps({"version": "2.0", "webhookId": "w", "eventName": "verify",
                                 "payload": {"challenge": "abc123"}}).encode()
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
    mock = MockSmartcar(vehicles=1)
    mock.faults = [Fault(429, retry_after="0.05"), Fault(503)]
    settings = IntegrationsSettings(**integ_settings("http://unused"))
    cipher = TokenCipher(TOKEN_KEY)
    async with telemetry_listener(mqtt_url, fleet.slug) as got:
        async with serve(mock.app()) as mock_url, pool(database.ingest_url) as db, \
                VendorHttp(timeout_s=5, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05,
                           name="smartcar") as http, \
                MqttPublisher(MqttSettings(url=mqtt_url)) as pub:
            settings = IntegrationsSettings(**integ_settings(mock_url))
            client = SmartcarClient(http, settings)
            tokens = SmartcarTokens(client, cipher, refresh_margin_s=600)
            # Consent as the callback would store it.
            url = client.authorize_url("s" * 43)
            code = url and mock.authorize({"client_id": "mock-client-id",
                                           "redirect_uri": "http://x/cb", "state": "s"})
            pair = await client.exchange_code(code.split("code=")[1].split("&")[0])
            sc_id = (await client.vehicles(pair.access_token))[0]
            async with db.acquire() as conn:
                await tokens.store(conn, fleet.tenant_id, sc_id, pair,
                                   vehicle_id=fleet.vehicles["truck-1"], connected_by=None)
            redis = aioredis.Redis.from_url(redis_url)
            try:
                puller = SmartcarPuller(db, tokens, pub, redis, poll_s=1, location_cache_s=300)
                assert await puller.poll_once() == 4  # location, odometer, fuel, battery
                assert http.stats.rate_limited == 1
                assert http.stats.server_errors == 1
                cached = json.loads(await redis.get(location_cache_key(fleet.tenant_id, sc_id)))
                assert cached["latitude"] == pytest.approx(mock.fleet[sc_id].lat, abs=1e-6)
            finally:
                await redis.aclose()
        await wait_for(lambda: len(got) >= 1, what="smartcar telemetry")
    vehicle, message = got[0]
    assert vehicle == "truck-1"
    assert message.source is Source.SMARTCAR
    fields = {name for s in message.samples for name in ("lat_deg", "odometer_km", "fuel_pct")
              if getattr(s, name) is not None}
    assert fields == {"lat_deg", "odometer_km", "fuel_pct"}
