"""The Smartcar pullers: on a schedule, one pass over every connected vehicle, publishing its
signals as telemetry (2.0 vehicles with their token pairs, v3 vehicles with the application
token; `build_puller` picks what the settings allow).

Also what the 2.0 and v3 passes share: which vehicles are connected, one pass over them, and
where a vehicle's last location is cached (the location route reads it too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from api.integrations.config import IntegrationsSettings
from api.integrations.crypto import TokenCipher
from api.integrations.errors import IntegrationConfigError, NotConnectedError, VendorError
from api.integrations.http import VendorHttp
from api.integrations.publisher import Publisher
from api.integrations.smartcar.client import SmartcarAppToken, SmartcarClient, SmartcarV3Client
from api.integrations.smartcar.consent import SmartcarTokens
from api.integrations.smartcar.signals import SIGNALS, signals_to_samples, to_sample
from core.protocol import Sample, Source

log = logging.getLogger(__name__)


def location_cache_key(tenant_id: UUID | str, sc_vehicle_id: str) -> str:
    """Redis key of the cached last location of a Smartcar vehicle."""
    return f"fleet:smartcar:location:{tenant_id}:{sc_vehicle_id}"


def connected_vehicles_sql(table: str, *extra_columns: str) -> str:
    """Active vehicles of active tenants with a Smartcar connection in `table`.

    `table` is one of our own connection tables (never user input); its rows carry
    tenant_id, vehicle_id and smartcar_vehicle_id.
    """
    columns = ", ".join(["k.tenant_id", "t.slug", "k.smartcar_vehicle_id",
                         *(f"k.{c}" for c in extra_columns), "v.code"])
    return (f"SELECT {columns} FROM {table} k JOIN tenants t ON t.id = k.tenant_id"  # noqa: S608
            " JOIN vehicles v ON v.tenant_id = k.tenant_id"
            " AND (v.id = k.vehicle_id OR v.smartcar_id = k.smartcar_vehicle_id)"
            " WHERE t.is_active AND v.status = 'active' ORDER BY t.slug, v.code")


async def poll_each(rows: Sequence[asyncpg.Record],
                    poll: Callable[[asyncpg.Record], Awaitable[int]],
                    label: str) -> tuple[int, int]:
    """Poll every vehicle row; a vendor failure of one vehicle is logged and counted, and the
    pass goes on. Returns (samples published, failures)."""
    published = failures = 0
    for row in rows:
        try:
            published += await poll(row)
        except (VendorError, NotConnectedError) as exc:
            failures += 1
            log.warning("%s %s/%s: %s", label, row["slug"], row["code"], exc)
    return published, failures


class _Puller:
    """What the 2.0 and v3 pullers share: the schedule, the counters, publishing a vehicle."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, redis: Any, *,
                 poll_s: float, location_cache_s: int) -> None:
        self.pool = pool
        self.publisher = publisher
        self.redis = redis
        self.poll_s = poll_s
        self.location_cache_s = location_cache_s
        self.samples = 0
        self.failures = 0

    async def poll_once(self) -> int:
        """One pass over the connected vehicles; returns samples published."""
        raise NotImplementedError

    async def _publish(self, row: asyncpg.Record, samples: list[Sample]) -> int:
        """Publish one vehicle's samples (nothing when there are none); returns how many."""
        if samples:
            await self.publisher.publish(row["slug"], row["code"], Source.SMARTCAR, samples)
            self.samples += len(samples)
        return len(samples)

    async def run(self) -> None:
        """Poll forever every `poll_s` seconds."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)


class SmartcarPuller(_Puller):
    """Pulls location, odometer and fuel/battery of every connected vehicle on a schedule.

    One pass covers vehicles connected under 2.0 (token pairs) and, when the deployment uses
    v3, those connected under v3 (`SmartcarV3Puller`, built here from the same HTTP client),
    so the job wiring needs no change when ``smartcar_api_version`` changes.
    """

    def __init__(self, pool: asyncpg.Pool, tokens: SmartcarTokens, publisher: Publisher,
                 redis: Any, *, poll_s: float, location_cache_s: int,
                 v3: SmartcarV3Puller | None = None) -> None:
        super().__init__(pool, publisher, redis, poll_s=poll_s,
                         location_cache_s=location_cache_s)
        self.tokens = tokens
        self.v3 = v3
        if v3 is None and tokens.client.settings.smartcar_api_version == "v3":
            settings = tokens.client.settings
            client = SmartcarV3Client(tokens.client.http, settings,
                                      SmartcarAppToken(tokens.client.http, settings))
            self.v3 = SmartcarV3Puller(pool, client, publisher, redis, poll_s=poll_s,
                                       location_cache_s=location_cache_s)

    async def poll_once(self) -> int:
        """One pass over every connected vehicle (2.0, then v3); returns samples published."""
        published = await self._poll_v2()
        if self.v3 is not None:
            published += await self.v3.poll_once()
        return published

    async def _poll_v2(self) -> int:
        rows = await self.pool.fetch(connected_vehicles_sql("smartcar_tokens"))
        published, failures = await poll_each(rows, self._poll_vehicle, "smartcar")
        self.failures += failures
        return published

    async def _poll_vehicle(self, row: asyncpg.Record) -> int:
        sc_id = row["smartcar_vehicle_id"]
        async with self.pool.acquire() as conn:
            token = await self.tokens.access_token(conn, row["tenant_id"], sc_id)
        samples: list[Sample] = []
        for signal in SIGNALS:
            try:
                body, t_ms = await self.tokens.client.read(token, sc_id, signal)
                samples.append(to_sample(signal, body, t_ms))
            except VendorError as exc:
                if exc.status in (404, 409, 501):
                    # Not supported by this make/model (e.g. /fuel on an EV): skip the signal.
                    continue
                raise
            except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
                log.warning("smartcar %s %s: unusable body: %s", sc_id, signal, exc)
                continue
            if signal == "location":
                await self.redis.set(location_cache_key(row["tenant_id"], sc_id),
                                     json.dumps({**body, "t_ms": t_ms}),
                                     ex=self.location_cache_s)
        return await self._publish(row, samples)


class SmartcarV3Puller(_Puller):
    """Pulls the signals of every v3-connected vehicle on a schedule and publishes them."""

    def __init__(self, pool: asyncpg.Pool, client: SmartcarV3Client, publisher: Publisher,
                 redis: Any, *, poll_s: float, location_cache_s: int) -> None:
        super().__init__(pool, publisher, redis, poll_s=poll_s,
                         location_cache_s=location_cache_s)
        self.client = client

    async def poll_once(self) -> int:
        """One pass over every v3-connected active vehicle; returns samples published."""
        rows = await self.pool.fetch(
            connected_vehicles_sql("smartcar_v3_connections", "smartcar_user_id"))
        published, failures = await poll_each(rows, self._poll_vehicle, "smartcar v3")
        self.failures += failures
        return published

    async def _poll_vehicle(self, row: asyncpg.Record) -> int:
        sc_id = row["smartcar_vehicle_id"]
        items = await self.client.signals(row["smartcar_user_id"], sc_id)
        samples, location = signals_to_samples(items, default_ms=int(time.time() * 1000))
        if location is not None:
            await self.redis.set(location_cache_key(row["tenant_id"], sc_id),
                                 json.dumps(location), ex=self.location_cache_s)
        return await self._publish(row, samples)


def build_puller(pool: asyncpg.Pool, http: VendorHttp, publisher: Publisher, redis: Any,
                 settings: IntegrationsSettings) -> SmartcarPuller | SmartcarV3Puller:
    """The puller the job runner runs: 2.0 and v3 connections with `integrations.token_key`
    (2.0 token pairs are stored encrypted with it); without the key, under v3, the v3
    connections alone (v3 keeps no secret per vehicle), and 2.0 connections are skipped."""
    if settings.token_key:
        tokens = SmartcarTokens(SmartcarClient(http, settings), TokenCipher(settings.token_key),
                                refresh_margin_s=settings.smartcar_refresh_margin_s)
        return SmartcarPuller(pool, tokens, publisher, redis, poll_s=settings.smartcar_poll_s,
                              location_cache_s=settings.smartcar_location_cache_s)
    if settings.smartcar_api_version != "v3":
        raise IntegrationConfigError("the Smartcar 2.0 puller needs integrations.token_key (the "
                          "vehicles' token pairs are stored encrypted with it)")
    log.warning("integrations.token_key is not set: vehicles connected under Smartcar 2.0 are "
                "not polled, those connected under v3 are")
    client = SmartcarV3Client(http, settings, SmartcarAppToken(http, settings))
    return SmartcarV3Puller(pool, client, publisher, redis, poll_s=settings.smartcar_poll_s,
                            location_cache_s=settings.smartcar_location_cache_s)
