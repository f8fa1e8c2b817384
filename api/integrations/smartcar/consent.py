"""What a vehicle owner's Connect consent leaves us: under 2.0 a token pair (stored encrypted,
refreshed before it expires), under v3 the owner's user id; and the one-time OAuth state that
ties a Connect redirect to the tenant that started it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from api.integrations.crypto import TokenCipher
from api.integrations.errors import NotConnectedError
from api.integrations.smartcar.client import Connection, SmartcarClient, TokenPair


def new_state() -> str:
    """A random OAuth state (the capability that ties the callback to a tenant)."""
    return secrets.token_urlsafe(32)


class SmartcarTokens:
    """Encrypted token pairs in `smartcar_tokens`; refreshed before expiry, atomically.

    A refresh runs in a transaction holding the row lock (SELECT ... FOR UPDATE): two API
    replicas or the puller and a lock request never refresh the same pair twice, which
    matters because Smartcar invalidates a refresh token once it has been used. The new
    pair replaces the old one in a single UPDATE with the generation incremented.
    """

    def __init__(self, client: SmartcarClient, cipher: TokenCipher, *,
                 refresh_margin_s: float) -> None:
        self.client = client
        self.cipher = cipher
        self.margin = timedelta(seconds=refresh_margin_s)
        self.refreshes = 0

    async def store(self, conn: asyncpg.Connection, tenant_id: UUID, sc_vehicle_id: str,
                    pair: TokenPair, *, vehicle_id: UUID | None,
                    connected_by: UUID | None) -> None:
        """Insert or replace the pair of a vehicle (a new consent)."""
        await conn.execute(
            "INSERT INTO smartcar_tokens (tenant_id, smartcar_vehicle_id, vehicle_id,"
            " access_token_enc, refresh_token_enc, access_expires_at, refresh_expires_at,"
            " connected_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (tenant_id, smartcar_vehicle_id) DO UPDATE SET"
            " vehicle_id = coalesce(EXCLUDED.vehicle_id, smartcar_tokens.vehicle_id),"
            " access_token_enc = EXCLUDED.access_token_enc,"
            " refresh_token_enc = EXCLUDED.refresh_token_enc,"
            " access_expires_at = EXCLUDED.access_expires_at,"
            " refresh_expires_at = EXCLUDED.refresh_expires_at,"
            " generation = smartcar_tokens.generation + 1,"
            " connected_by = EXCLUDED.connected_by",
            tenant_id, sc_vehicle_id, vehicle_id, self.cipher.encrypt(pair.access_token),
            self.cipher.encrypt(pair.refresh_token), pair.access_expires_at,
            pair.refresh_expires_at, connected_by)

    async def access_token(self, conn: asyncpg.Connection, tenant_id: UUID,
                           sc_vehicle_id: str) -> str:
        """A valid access token, refreshing (and storing the new pair) when close to expiry."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT access_token_enc, refresh_token_enc, access_expires_at,"
                " refresh_expires_at FROM smartcar_tokens WHERE tenant_id = $1"
                " AND smartcar_vehicle_id = $2 FOR UPDATE", tenant_id, sc_vehicle_id)
            if row is None:
                raise NotConnectedError(f"Smartcar vehicle {sc_vehicle_id} is not connected")
            now = datetime.now(UTC)
            if row["access_expires_at"] - now > self.margin:
                return self.cipher.decrypt(row["access_token_enc"])
            if row["refresh_expires_at"] <= now:
                raise NotConnectedError(
                    f"Smartcar consent of vehicle {sc_vehicle_id} expired: reconnect")
            pair = await self.client.refresh(self.cipher.decrypt(row["refresh_token_enc"]))
            await conn.execute(
                "UPDATE smartcar_tokens SET access_token_enc = $3, refresh_token_enc = $4,"
                " access_expires_at = $5, refresh_expires_at = $6, generation = generation + 1"
                " WHERE tenant_id = $1 AND smartcar_vehicle_id = $2", tenant_id, sc_vehicle_id,
                self.cipher.encrypt(pair.access_token), self.cipher.encrypt(pair.refresh_token),
                pair.access_expires_at, pair.refresh_expires_at)
            self.refreshes += 1
            return pair.access_token


class SmartcarV3Connections:
    """The owner (``sc-user-id``) of every vehicle connected through v3, per tenant.

    The user id is not a secret on its own (every request also needs the application token),
    so it is stored in clear, unlike the 2.0 token pairs.
    """

    async def store(self, conn: asyncpg.Connection, tenant_id: UUID, connection: Connection,
                    *, vehicle_id: UUID | None, connected_by: UUID | None) -> None:
        """Insert or replace a connection (a new consent)."""
        await conn.execute(
            "INSERT INTO smartcar_v3_connections (tenant_id, smartcar_vehicle_id,"
            " smartcar_user_id, vehicle_id, connected_by) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (tenant_id, smartcar_vehicle_id) DO UPDATE SET"
            " smartcar_user_id = EXCLUDED.smartcar_user_id,"
            " vehicle_id = coalesce(EXCLUDED.vehicle_id, smartcar_v3_connections.vehicle_id),"
            " connected_by = EXCLUDED.connected_by",
            tenant_id, connection.vehicle_id, connection.user_id, vehicle_id, connected_by)

    async def user_id(self, conn: asyncpg.Connection, tenant_id: UUID,
                      sc_vehicle_id: str) -> str | None:
        """The owner's Smartcar user id, or None when the vehicle has no v3 connection."""
        value: str | None = await conn.fetchval(
            "SELECT smartcar_user_id FROM smartcar_v3_connections WHERE tenant_id = $1"
            " AND smartcar_vehicle_id = $2", tenant_id, sc_vehicle_id)
        return value
