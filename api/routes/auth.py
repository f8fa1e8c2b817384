"""Login (AC-7 lockout), token refresh with rotation, logout and who-am-I."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from api import audit
from api.auth import (
    ROLES,
    SECTION_KEY,
    TOKENS_KEY,
    AuthUser,
    current_user,
    verify_password,
)
from api.db import POOL_KEY, tenant_connection
from api.errors import Locked, Unauthorized
from api.metrics import METRICS_KEY
from api.params import read_json
from api.routes.common import json_response
from api.routing import ApiRoute

_BAD_LOGIN = "invalid email or password"


class LoginIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Credentials."""

    email: str
    password: str


class RefreshIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A refresh token from a login or a previous refresh."""

    refresh_token: str


async def _issue(request: web.Request, conn: asyncpg.Connection, user: AuthUser
                 ) -> dict[str, Any]:
    tokens = request.app[TOKENS_KEY]
    jti = uuid.uuid4()
    await conn.execute(
        "INSERT INTO api_refresh_tokens (jti, tenant_id, user_id, expires_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        jti, user.tenant_id, user.id, float(tokens.refresh_ttl_s))
    return {"access_token": tokens.access_token(user), "token_type": "Bearer",
            "expires_in": tokens.ttl_s, "refresh_token": tokens.refresh_token(user, jti),
            "user": {"id": user.id, "tenant_id": user.tenant_id, "role": user.role,
                     "email": user.email, "driver_id": user.driver_id}}


async def login(request: web.Request) -> web.Response:
    """POST /api/auth/login: e-mail + password -> access and refresh tokens."""
    body = await read_json(request, LoginIn)
    section = request.app[SECTION_KEY]
    metrics = request.app[METRICS_KEY]
    pool = request.app[POOL_KEY]
    async with pool.acquire() as conn:
        # Before the tenant is known: the narrow definer function (docs/api.md, threat model).
        row = await conn.fetchrow(
            "SELECT user_id, tenant_id, password_hash, account_locked_until, can_log_in"
            " FROM api_login_lookup($1)", body.email)
    if row is None:
        await verify_password(None, body.password)  # same cost as a real check
        metrics.logins.labels("failure").inc()
        await audit.record(request, "auth.login", "user", None, "failure",
                           {"email": body.email, "reason": "unknown_email"},
                           error_message=_BAD_LOGIN)
        raise Unauthorized(_BAD_LOGIN, code="invalid_credentials")
    tenant_id, user_id = row["tenant_id"], row["user_id"]
    now = datetime.now(UTC)
    locked_until = row["account_locked_until"]
    if locked_until is not None and locked_until > now:
        metrics.logins.labels("locked").inc()
        await audit.record(request, "auth.login", "user", user_id, "failure",
                           {"email": body.email, "reason": "locked"},
                           tenant_id=tenant_id, user_id=user_id, error_message="account locked")
        retry = int((locked_until - now).total_seconds()) + 1
        raise Locked("account locked after repeated failed logins",
                     headers={"Retry-After": str(retry)}, details={"locked_until":
                                                                   locked_until.isoformat()})
    active = bool(row["can_log_in"])
    # An account that cannot log in has no hash here; the check costs the same regardless.
    ok = await verify_password(row["password_hash"], body.password)
    async with tenant_connection(pool, tenant_id) as conn:
        if not active:
            metrics.logins.labels("failure").inc()
            await audit.record(conn, "auth.login", "user", str(user_id), "failure",
                               {"email": body.email, "reason": "inactive"},
                               tenant_id=tenant_id, user_id=user_id, ip=request.remote,
                               user_agent=request.headers.get("User-Agent"),
                               error_message=_BAD_LOGIN)
        elif not ok:
            state = await conn.fetchrow(
                "UPDATE users SET failed_login_attempts = CASE "
                "  WHEN account_locked_until IS NOT NULL THEN 1 "
                "  ELSE failed_login_attempts + 1 END, "
                " account_locked_until = CASE WHEN (CASE WHEN account_locked_until IS NOT NULL "
                "  THEN 1 ELSE failed_login_attempts + 1 END) >= $3 "
                "  THEN now() + make_interval(secs => $4) END "
                "WHERE id = $1 AND tenant_id = $2 "
                "RETURNING failed_login_attempts, account_locked_until",
                user_id, tenant_id, section.lockout_failures, float(section.lockout_s))
            metrics.logins.labels("failure").inc()
            locked = state is not None and state["account_locked_until"] is not None
            await audit.record(conn, "auth.login", "user", str(user_id), "failure",
                               {"email": body.email, "reason": "bad_password",
                                "failed_attempts":
                                    state["failed_login_attempts"] if state else None},
                               tenant_id=tenant_id, user_id=user_id, ip=request.remote,
                               user_agent=request.headers.get("User-Agent"),
                               error_message=_BAD_LOGIN)
            if locked:
                await audit.record(conn, "auth.lockout", "user", str(user_id), "success",
                                   {"email": body.email, "lockout_s": section.lockout_s},
                                   tenant_id=tenant_id, user_id=user_id, ip=request.remote,
                                   user_agent=request.headers.get("User-Agent"))
        else:
            # The lookup hands out no role or e-mail: read them now, under the tenant's RLS.
            account = await conn.fetchrow(
                "UPDATE users SET failed_login_attempts = 0, account_locked_until = NULL, "
                "last_login_at = now() WHERE id = $1 AND tenant_id = $2 "
                "RETURNING role, email, driver_id", user_id, tenant_id)
            if account is None:  # deleted between the lookup and now
                raise Unauthorized(_BAD_LOGIN, code="invalid_credentials")
            user = AuthUser(id=user_id, tenant_id=tenant_id, role=account["role"],
                            email=account["email"], driver_id=account["driver_id"])
            issued = await _issue(request, conn, user)
            await audit.record(conn, "auth.login", "user", str(user_id), "success",
                               {"email": body.email}, tenant_id=tenant_id, user_id=user_id,
                               ip=request.remote, user_agent=request.headers.get("User-Agent"))
            metrics.logins.labels("success").inc()
            return json_response(issued)
    raise Unauthorized(_BAD_LOGIN, code="invalid_credentials")


async def refresh(request: web.Request) -> web.Response:
    """POST /api/auth/refresh: exchange a refresh token (used once) for a new pair."""
    body = await read_json(request, RefreshIn)
    claims = request.app[TOKENS_KEY].decode(body.refresh_token, typ="refresh")
    try:
        jti = uuid.UUID(str(claims["jti"]))
        tenant_id = uuid.UUID(str(claims["tenant_id"]))
        user_id = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise Unauthorized("invalid token claims", code="invalid_token") from exc
    agent = request.headers.get("User-Agent")
    async with tenant_connection(request.app[POOL_KEY], tenant_id) as conn:
        stored = await conn.fetchrow(
            "SELECT revoked_at, replaced_by, expires_at FROM api_refresh_tokens "
            "WHERE jti = $1 AND tenant_id = $2 AND user_id = $3 FOR UPDATE",
            jti, tenant_id, user_id)
        account = await conn.fetchrow(
            "SELECT id, email, role, driver_id, is_active, account_locked_until FROM users "
            "WHERE id = $1 AND tenant_id = $2", user_id, tenant_id)
        reason = None
        if stored is None:
            reason = "unknown_token"
        elif stored["revoked_at"] is not None or stored["replaced_by"] is not None:
            # A used token presented again: it may be stolen, so end the whole session family.
            reason = "reused_token"
            await conn.execute("UPDATE api_refresh_tokens SET revoked_at = now() "
                               "WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
                               user_id, tenant_id)
        elif account is None or not account["is_active"] or account["role"] not in ROLES:
            reason = "inactive"
        if reason is not None:
            await audit.record(conn, "auth.refresh", "user", str(user_id), "failure",
                               {"reason": reason}, tenant_id=tenant_id, user_id=user_id,
                               ip=request.remote, user_agent=agent, error_message=reason)
        elif account is not None:
            user = AuthUser(id=user_id, tenant_id=tenant_id, role=account["role"],
                            email=account["email"], driver_id=account["driver_id"])
            issued = await _issue(request, conn, user)
            new_jti = request.app[TOKENS_KEY].decode(issued["refresh_token"],
                                                     typ="refresh")["jti"]
            await conn.execute("UPDATE api_refresh_tokens SET replaced_by = $2 WHERE jti = $1",
                               jti, uuid.UUID(new_jti))
            await audit.record(conn, "auth.refresh", "user", str(user_id), "success", {},
                               tenant_id=tenant_id, user_id=user_id, ip=request.remote,
                               user_agent=agent)
            return json_response(issued)
    raise Unauthorized("refresh token not valid", code="invalid_token")


async def logout(request: web.Request) -> web.Response:
    """POST /api/auth/logout: revoke the caller's refresh tokens (access tokens expire)."""
    user = current_user(request)
    async with tenant_connection(request.app[POOL_KEY], user.tenant_id) as conn:
        await conn.execute("UPDATE api_refresh_tokens SET revoked_at = now() "
                           "WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
                           user.id, user.tenant_id)
        await audit.record(conn, "auth.logout", "user", str(user.id), "success", {},
                           tenant_id=user.tenant_id, user_id=user.id, ip=request.remote,
                           user_agent=request.headers.get("User-Agent"))
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    """GET /api/auth/me: the caller as the token says."""
    user = current_user(request)
    return json_response({"id": user.id, "tenant_id": user.tenant_id, "role": user.role,
                          "email": user.email, "driver_id": user.driver_id})


TOKENS = {"$ref": "#/components/schemas/Tokens"}
ROUTES = [
    ApiRoute("POST", "/api/auth/login", login, "Log in with e-mail and password", "auth", None,
             body=LoginIn, response=TOKENS, resource="user", audit=False),
    ApiRoute("POST", "/api/auth/refresh", refresh, "Rotate a refresh token", "auth", None,
             body=RefreshIn, response=TOKENS, resource="user", audit=False),
    ApiRoute("POST", "/api/auth/logout", logout, "Revoke the caller's refresh tokens", "auth",
             ROLES, status=204, resource="user", audit=False),
    ApiRoute("GET", "/api/auth/me", me, "The authenticated user", "auth", ROLES),
]
