"""Database access of the pullers: credentials, cursors, vehicle mapping, dead letters.

The pullers run in the job runner as the ingest role (``database.ingest_url``), which may read
every tenant's vehicles and write video events, cursors and Smartcar tokens (0006 migration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from api.integrations.crypto import TokenCipher


@dataclass(frozen=True)
class TenantRef:
    """A tenant as the pullers need it: database id and topic slug."""

    id: UUID
    slug: str


@dataclass(frozen=True)
class VehicleRef:
    """One of our vehicles, found by a vendor id."""

    id: UUID
    code: str


class IntegrationStore:
    """Queries shared by the Samsara and Smartcar pullers."""

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def tenants_with(self, vendor: str) -> list[TenantRef]:
        """Active tenants with active credentials for `vendor`."""
        rows = await self.pool.fetch(
            "SELECT t.id, t.slug FROM integration_credentials c"
            " JOIN tenants t ON t.id = c.tenant_id"
            " WHERE c.vendor = $1 AND c.is_active AND t.is_active ORDER BY t.slug", vendor)
        return [TenantRef(r["id"], r["slug"]) for r in rows]

    async def secret(self, tenant_id: UUID, vendor: str) -> str | None:
        """The decrypted credential of a tenant, or None."""
        enc = await self.pool.fetchval(
            "SELECT secret_enc FROM integration_credentials"
            " WHERE tenant_id = $1 AND vendor = $2 AND is_active", tenant_id, vendor)
        return None if enc is None else self.cipher.decrypt(enc)

    async def vehicles_by_vendor_id(self, tenant_id: UUID, column: str) -> dict[str, VehicleRef]:
        """Map vendor vehicle id -> our vehicle, for column samsara_id or smartcar_id."""
        if column not in ("samsara_id", "smartcar_id"):
            raise ValueError(column)
        rows = await self.pool.fetch(
            f"SELECT id, code, {column} AS ext FROM vehicles"  # noqa: S608 - column whitelisted
            f" WHERE tenant_id = $1 AND {column} IS NOT NULL", tenant_id)
        return {r["ext"]: VehicleRef(r["id"], r["code"]) for r in rows}

    async def load_cursor(self, tenant_id: UUID, feed: str) -> str | None:
        """The stored end cursor of a feed (None: start from the latest state)."""
        value: str | None = await self.pool.fetchval(
            "SELECT end_cursor FROM samsara_feed_cursors WHERE tenant_id = $1 AND feed = $2",
            tenant_id, feed)
        return value

    async def save_cursor(self, tenant_id: UUID, feed: str, cursor: str | None, *,
                          reset: bool = False) -> None:
        """Store the cursor after the page it ends has been published."""
        await self.pool.execute(
            "INSERT INTO samsara_feed_cursors (tenant_id, feed, end_cursor, pages, resets)"
            " VALUES ($1, $2, $3, 1, $4::int)"
            " ON CONFLICT (tenant_id, feed) DO UPDATE SET end_cursor = EXCLUDED.end_cursor,"
            " pages = samsara_feed_cursors.pages + 1,"
            " resets = samsara_feed_cursors.resets + $4::int, updated_at = now()",
            tenant_id, feed, cursor, 1 if reset else 0)

    async def dead_letter(self, tenant_id: UUID, vendor: str, reason: str, *,
                          external_id: str | None, detail: str, payload: Any) -> None:
        """Record a vendor record we could not use."""
        await self.pool.execute(
            "INSERT INTO integration_dead_letters (tenant_id, vendor, reason, external_id,"
            " detail, payload) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            tenant_id, vendor, reason, external_id, detail, json.dumps(payload, default=str))
