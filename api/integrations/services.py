"""The vendor pullers as long-running services of the job runner's leader: which ones these
settings allow, and each one's supervision (Samsara: one puller per tenant with a token,
started and stopped as tokens come and go; Smartcar: one puller for every connection)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import redis.asyncio as aioredis

from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.http import vendor_http
from api.integrations.publisher import MqttPublisher
from api.integrations.samsara.client import SamsaraClient
from api.integrations.samsara.puller import SamsaraPuller
from api.integrations.smartcar.puller import build_puller
from api.integrations.store import IntegrationStore, TenantRef
from api.jobs.config import JobsSettings
from api.jobs.runner import Service
from core.settings import DatabaseSettings, MqttSettings, RedisSettings

log = logging.getLogger(__name__)

TENANT_RESCAN_S = 60.0
"""How often the Samsara service looks for tenants that added or removed a token."""


def samsara_service(database: DatabaseSettings, mqtt: MqttSettings,
                    integ: IntegrationsSettings) -> Service:
    """All tenants' Samsara pullers, started and stopped as credentials come and go."""

    async def run() -> None:
        cipher = TokenCipher(integ.token_key)
        pool = await asyncpg.create_pool(database.ingest_url, min_size=1, max_size=4)
        tasks: dict[TenantRef, asyncio.Task[None]] = {}
        try:
            async with vendor_http(integ, "samsara") as http, \
                    MqttPublisher(mqtt, client_id_prefix=integ.mqtt_client_id_prefix) as pub:
                store = IntegrationStore(pool, cipher)
                while True:
                    tenants = set(await store.tenants_with("samsara"))
                    for tenant, task in list(tasks.items()):
                        if task.done():  # died: log it and start it again below
                            if not task.cancelled() and task.exception() is not None:
                                log.error("samsara puller of %s died: %r", tenant.slug,
                                          task.exception())
                            del tasks[tenant]
                    for gone in set(tasks) - tenants:
                        tasks.pop(gone).cancel()
                    for tenant in tenants - set(tasks):
                        token = await store.secret(tenant.id, "samsara")
                        if token is None:
                            continue
                        puller = SamsaraPuller(
                            tenant, SamsaraClient(http, integ.samsara_base_url, token), store,
                            pub, integ.samsara_feeds,
                            caught_up_wait_s=max(5.0, integ.samsara_caught_up_wait_s),
                            safety_poll_s=integ.samsara_safety_poll_s,
                            safety_lookback_s=integ.samsara_safety_lookback_s)
                        tasks[tenant] = asyncio.create_task(puller.run(),
                                                            name=f"samsara {tenant.slug}")
                    await asyncio.sleep(TENANT_RESCAN_S)
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await pool.close()

    return run


def smartcar_service(database: DatabaseSettings, mqtt: MqttSettings, redis: RedisSettings,
                     integ: IntegrationsSettings) -> Service:
    """The Smartcar puller of every connected vehicle."""

    async def run() -> None:
        pool = await asyncpg.create_pool(database.ingest_url, min_size=1, max_size=4)
        cache = aioredis.Redis.from_url(redis.url)
        try:
            async with vendor_http(integ, "smartcar") as http, \
                    MqttPublisher(mqtt, client_id_prefix=integ.mqtt_client_id_prefix) as pub:
                await build_puller(pool, http, pub, cache, integ).run()
        finally:
            await cache.aclose()
            await pool.close()

    return run


def puller_services(database: DatabaseSettings, mqtt: MqttSettings, redis: RedisSettings,
                    jobs: JobsSettings, integ: IntegrationsSettings) -> list[tuple[str, Service]]:
    """The vendor pullers these settings allow. Samsara API tokens and Smartcar 2.0 token
    pairs are stored encrypted with `integrations.token_key`, so without it those pullers
    are off; Smartcar v3 keeps no per-vehicle secret and runs without it."""
    if not jobs.pullers_enabled:
        return []
    services: list[tuple[str, Service]] = []
    if integ.token_key:
        services.append(("samsara", samsara_service(database, mqtt, integ)))
    else:
        log.warning("integrations.token_key is not set: the Samsara puller is off")
    if integ.smartcar_client_id and (integ.token_key or integ.smartcar_api_version == "v3"):
        services.append(("smartcar", smartcar_service(database, mqtt, redis, integ)))
    elif integ.smartcar_client_id:
        log.warning("integrations.token_key is not set: the Smartcar 2.0 puller is off")
    return services
