"""Authentication and audit: IA-5 rules, AC-7 lockout, JWT tampering, refresh rotation,
rate limit, dev-bypass refusal, audit rows and `fleet audit verify`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import time
import uuid
from typing import Any

import asyncpg
import jwt
import pytest

from api import audit_cli
from api.app import create_app
from api.auth import AuthUser, TokenIssuer, hash_password, password_problems
from api.config import ApiSection
from api.errors import ApiConfigError, ValidationError
from deploy import seed
from tests.api.conftest import PASSWORD, World, api_settings, login

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(("password", "missing"), [
    ("Sh0rt!", "at least 8"), ("alllowercase1!", "uppercase"), ("ALLUPPER1!", "lowercase"),
    ("NoDigits!!", "digit"), ("NoSpecial123", "special")])
async def test_password_rules(password: str, missing: str) -> None:
    """IA-5: each rule is enforced and named."""
    problems = password_problems(password)
    assert any(missing in p for p in problems), problems
    assert password_problems(PASSWORD) == []


async def test_create_user_rejects_weak_password_naming_the_field(world: World) -> None:
    """POST /api/users with a weak password -> 400 with field=password."""
    resp = await world.client.post(
        "/api/users", json={"email": f"weak{uuid.uuid4().hex[:6]}@example.com",
                            "password": "weak", "role": "viewer"},
        headers=world.auth(world.a.tokens["admin"]))
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["field"] == "password"


async def _new_user(world: World, role: str = "viewer") -> str:
    conn = await asyncpg.connect(world.db.app_url)
    try:
        email = f"u{uuid.uuid4().hex[:10]}@example.com"
        await seed.create_user(conn, world.a.id, email, PASSWORD, role)
        return email
    finally:
        await conn.close()


async def test_lockout_after_three_failures(world: World) -> None:
    """AC-7: the third failure locks the account for 30 minutes, even for the right password."""
    email = await _new_user(world)
    c = world.client
    for _ in range(3):
        resp = await c.post("/api/auth/login", json={"email": email, "password": "Wrong!Pass1"})
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_credentials"
    resp = await c.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 423
    retry_after = int(resp.headers["Retry-After"])
    assert 1700 <= retry_after <= 1801
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        row = await conn.fetchrow(
            "SELECT failed_login_attempts, account_locked_until - now() AS left "
            "FROM users WHERE email = $1", email)
        assert row["failed_login_attempts"] == 3
        assert 1700 <= row["left"].total_seconds() <= 1800
        # Once the lock has expired, the right password works and resets the counter.
        await conn.execute("UPDATE users SET account_locked_until = now() - interval '1 s' "
                           "WHERE email = $1", email)
        token = await login(c, email)
        assert token
        assert await conn.fetchval("SELECT failed_login_attempts FROM users WHERE email = $1",
                                   email) == 0
        actions = await conn.fetch(
            "SELECT action, outcome, ip_address, user_agent, details FROM audit_logs "
            "WHERE details->>'email' = $1 ORDER BY id", email)
    finally:
        await conn.close()
    outcomes = [(r["action"], r["outcome"]) for r in actions]
    assert outcomes == [("auth.login", "failure")] * 3 + [("auth.lockout", "success"),
                                                          ("auth.login", "failure"),
                                                          ("auth.login", "success")]
    assert all(r["ip_address"] is not None and r["user_agent"] for r in actions)


async def test_unknown_email_is_audited_without_tenant(world: World) -> None:
    """A failed login for an unknown address is recorded (tenant NULL) and answers like a
    wrong password."""
    email = f"nobody{uuid.uuid4().hex[:8]}@example.com"
    resp = await world.client.post("/api/auth/login", json={"email": email, "password": "x"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_credentials"
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        row = await conn.fetchrow("SELECT tenant_id, outcome FROM audit_logs "
                                  "WHERE details->>'email' = $1", email)
    finally:
        await conn.close()
    assert row is not None
    assert row["tenant_id"] is None
    assert row["outcome"] == "failure"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_jwt_tampering_rejected(world: World) -> None:
    """alg none, a wrong key, an expired token and a refresh token used as access: 401."""
    a = world.a
    claims = {"sub": str(a.user_ids["admin"]), "tenant_id": str(a.id), "role": "admin",
              "email": a.users["admin"], "typ": "access", "iat": int(time.time()),
              "exp": int(time.time()) + 600}
    none_token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    wrong_key = jwt.encode(claims, "another-secret-another-secret-0123456789", algorithm="HS256")
    expired = jwt.encode({**claims, "iat": int(time.time()) - 7200,
                          "exp": int(time.time()) - 3600}, "t" * 40, algorithm="HS256")
    hs512 = jwt.encode(claims, "t" * 40, algorithm="HS512")  # algorithm not configured
    viewer_to_admin = world.a.tokens["viewer"].split(".")
    payload = json.loads(base64.urlsafe_b64decode(viewer_to_admin[1] + "=="))
    payload["role"] = "admin"
    escalated = f"{viewer_to_admin[0]}.{_b64(payload)}.{viewer_to_admin[2]}"
    for token, code in ((none_token, "invalid_token"), (wrong_key, "invalid_token"),
                        (expired, "token_expired"), (hs512, "invalid_token"),
                        (escalated, "invalid_token"), ("garbage", "invalid_token")):
        resp = await world.client.get("/api/vehicles", headers=world.auth(token))
        assert resp.status == 401, token
        assert (await resp.json())["error"]["code"] == code
    # The same claims signed correctly are accepted (the test itself is sound).
    good = jwt.encode(claims, "t" * 40, algorithm="HS256")
    assert (await world.client.get("/api/vehicles", headers=world.auth(good))).status == 200


async def test_refresh_rotates_and_detects_reuse(world: World) -> None:
    """A refresh token works once; presenting it again revokes the whole family."""
    email = await _new_user(world, "fleet_manager")
    c = world.client
    first = await (await c.post("/api/auth/login", json={"email": email,
                                                         "password": PASSWORD})).json()
    resp = await c.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status == 200
    second = await resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await (await c.get("/api/auth/me", headers=world.auth(second["access_token"]))).json()
    assert me["role"] == "fleet_manager"
    # Reuse of the first token: refused, and the second one is revoked as well.
    assert (await c.post("/api/auth/refresh",
                         json={"refresh_token": first["refresh_token"]})).status == 401
    assert (await c.post("/api/auth/refresh",
                         json={"refresh_token": second["refresh_token"]})).status == 401
    # An access token is not a refresh token.
    assert (await c.post("/api/auth/refresh",
                         json={"refresh_token": second["access_token"]})).status == 401


async def test_rate_limit_answers_429_with_retry_after(make_client: Any, world: World) -> None:
    """Per client: the 6th request within the minute is refused with Retry-After."""
    client = make_client(rate_limit_per_min=5)
    await client.start_server()
    try:
        headers = world.auth(await login(world.client, await _new_user(world)))
        # The window is a calendar minute: do not start in its last seconds.
        if 60 - time.time() % 60 < 3:
            await asyncio.sleep(3.5)
        statuses = []
        for _ in range(6):
            resp = await client.get("/api/auth/me", headers=headers)
            statuses.append(resp.status)
        assert statuses == [200] * 5 + [429]
        body = await resp.json()
        assert body["error"]["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        # Another client (by user) is not affected.
        other = await client.get("/api/auth/me", headers=world.auth(world.b.tokens["admin"]))
        assert other.status == 200
    finally:
        await client.close()


async def test_dev_bypass_refused_in_production(world: World) -> None:
    """The development flag cannot be combined with production settings."""
    with pytest.raises(ApiConfigError):
        create_app(api_settings(world.db, world.redis_url, environment="production",
                                dev_auth_bypass=True, dev_tenant_id=str(world.a.id)))
    with pytest.raises(ApiConfigError):
        TokenIssuer(ApiSection(environment="production", jwt_secret="short"))


async def test_dev_bypass_in_development(make_client: Any, world: World) -> None:
    """With the flag (development only), a request without a token acts as an admin."""
    client = make_client(environment="development", dev_auth_bypass=True,
                         dev_tenant_id=str(world.a.id))
    await client.start_server()
    try:
        resp = await client.get("/api/vehicles")
        assert resp.status == 200
        assert (await resp.json())["total"] >= 2
    finally:
        await client.close()


async def test_mutations_are_audited_and_verify_catches_an_edit(world: World,
                                                               capsys: Any) -> None:
    """Every mutating request leaves an audit row; editing one breaks `fleet audit verify`."""
    c, headers = world.client, world.auth(world.a.tokens["fleet_manager"])
    resp = await c.post("/api/vehicles", json={"code": f"aud{uuid.uuid4().hex[:6]}"},
                        headers=headers)
    assert resp.status == 201
    vid = (await resp.json())["id"]
    denied = await c.delete(f"/api/vehicles/{vid}", headers=world.auth(world.a.tokens["viewer"]))
    assert denied.status == 403
    conn = await asyncpg.connect(world.db.owner_url)
    try:
        rows = await conn.fetch("SELECT action, outcome, user_id, ip_address, details "
                                "FROM audit_logs WHERE resource_id = $1 ORDER BY id", vid)
        assert [(r["action"], r["outcome"]) for r in rows] == [
            ("vehicle.post", "success"), ("vehicle.delete", "failure")]
        assert rows[1]["user_id"] == world.a.user_ids["viewer"]
        assert json.loads(rows[1]["details"])["status"] == 403

        args = argparse.Namespace(action="verify", url=world.db.owner_url, expect_head=None,
                                  max_problems=50, config=None)
        assert audit_cli.run(args) == 0
        intact = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert intact["ok"]
        assert intact["rows"] > 5
        # Edit one row as the owner (the application role cannot).
        target = await conn.fetchval("SELECT id FROM audit_logs WHERE resource_id = $1 "
                                     "ORDER BY id LIMIT 1", vid)
        await conn.execute("UPDATE audit_logs SET outcome = 'failure' WHERE id = $1", target)
        assert audit_cli.run(args) == 1
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert any(f"row {target}: content does not match" in p for p in report["problems"])
        # Restore so later tests see an intact chain; deletion is caught too.
        await conn.execute("UPDATE audit_logs SET outcome = 'success' WHERE id = $1", target)
        assert audit_cli.run(args) == 0
        capsys.readouterr()
    finally:
        await conn.close()


async def test_audit_verify_detects_deleted_and_truncated_rows() -> None:
    """Pure chain check: a gap, a broken link and a missing recorded head are reported."""
    def chain(n: int) -> list[tuple[int, str, str, str]]:
        rows, prev = [], audit_cli.GENESIS
        for i in range(1, n + 1):
            h = hashlib.sha256(f"{i}{prev}".encode()).hexdigest()
            rows.append((i, prev, h, h))
            prev = h
        return rows

    rows = chain(5)
    assert audit_cli.verify_rows(rows)[1] == []
    _, problems, _ = audit_cli.verify_rows(rows[:2] + rows[3:])
    assert any("missing" in p for p in problems)
    assert any("prev_hash" in p for p in problems)
    _, problems, _ = audit_cli.verify_rows(rows[:4], expect_head=(5, rows[4][2]))
    assert any("recorded head" in p for p in problems)


async def test_token_issuer_round_trip() -> None:
    """Claims survive encode/decode; drivers keep their driver id."""
    issuer = TokenIssuer(ApiSection(jwt_secret="k" * 40))
    user = AuthUser(id=uuid.uuid4(), tenant_id=uuid.uuid4(), role="driver", email="d@x.io",
                    driver_id=uuid.uuid4())
    assert issuer.user_from_access(issuer.access_token(user)) == user
    with pytest.raises(ValidationError):
        hash_password("short")
