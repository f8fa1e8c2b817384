"""The application role as an attacker would use it: row-level security and definer functions.

Whoever holds fleet_app's credentials (or injects SQL into one of the API's queries) can set
`app.tenant_id` to any tenant id they know, so these tests check that nothing lets that role
enumerate other tenants' rows or ids: every ordinary tenant table is under RLS (found from the
catalog, so a new table is covered without editing this file), and every SECURITY DEFINER
function it may execute hands out only what its one caller needs (docs/api.md, "Threat model:
the application role"). Hypertables, behind the tenant views, are tests/storage/test_tenancy.py's.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from api.auth import hash_password
from tests.conftest import TestDatabase

PASSWORD = "Fleet!Test2024"
pytestmark = pytest.mark.editions


@dataclass
class Seeded:
    """One tenant with a row in every ordinary tenant table."""

    slug: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)
    driver_id: uuid.UUID = field(default_factory=uuid.uuid4)
    vehicle_id: uuid.UUID = field(default_factory=uuid.uuid4)
    schedule_id: uuid.UUID = field(default_factory=uuid.uuid4)
    smartcar_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    oauth_state: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def email(self) -> str:
        """The seeded user's login."""
        return f"admin.{self.slug}@example.com"


def seed_rows(t: Seeded) -> list[tuple[str, dict[str, object]]]:
    """One row per tenant table, in foreign-key order (a new tenant table needs an entry)."""
    now = datetime.now(UTC)
    return [
        ("tenants", {"id": t.id, "slug": t.slug, "name": t.slug}),
        ("drivers", {"id": t.driver_id, "tenant_id": t.id, "first_name": "D",
                     "last_name": t.slug}),
        ("users", {"id": t.user_id, "tenant_id": t.id, "email": t.email, "role": "admin",
                   "password_hash": hash_password(PASSWORD, t.email)}),
        ("vehicles", {"id": t.vehicle_id, "tenant_id": t.id, "code": "v1",
                      "smartcar_id": t.smartcar_id}),
        ("devices", {"tenant_id": t.id, "vehicle_id": t.vehicle_id,
                     "mqtt_username": f"{t.slug}/v1", "mqtt_password_hash": "x"}),
        ("geofences", {"tenant_id": t.id, "name": "depot", "kind": "circle",
                       "geometry": "SRID=4326;POINT(13.4 52.5)", "radius_m": 100.0}),
        ("vehicle_state", {"vehicle_id": t.vehicle_id, "tenant_id": t.id, "time": now,
                           "last_seq": 1}),
        ("maintenance_schedules", {"id": t.schedule_id, "tenant_id": t.id,
                                   "vehicle_id": t.vehicle_id, "service_type": "oil",
                                   "interval_type": "days", "interval_value": 30.0,
                                   "next_service_due_date": date.today()}),
        ("work_orders", {"tenant_id": t.id, "vehicle_id": t.vehicle_id,
                         "schedule_id": t.schedule_id, "type": "preventive",
                         "description": "oil"}),
        ("event_acks", {"tenant_id": t.id, "kind": "vehicle", "vehicle_id": t.vehicle_id,
                        "event_time": now, "event_type": "overspeed", "acked_by": t.user_id}),
        # id, prev_hash and hash come from the chain trigger.
        ("audit_logs", {"tenant_id": t.id, "action": "seed", "resource_type": "tenant",
                        "outcome": "success"}),
        ("api_refresh_tokens", {"jti": uuid.uuid4(), "tenant_id": t.id, "user_id": t.user_id,
                                "expires_at": now + timedelta(days=1)}),
        ("integration_credentials", {"tenant_id": t.id, "vendor": "samsara",
                                     "secret_enc": b"ciphertext"}),
        ("samsara_feed_cursors", {"tenant_id": t.id, "feed": "gps"}),
        ("smartcar_tokens", {"tenant_id": t.id, "smartcar_vehicle_id": t.smartcar_id,
                             "vehicle_id": t.vehicle_id, "access_token_enc": b"a",
                             "refresh_token_enc": b"r", "access_expires_at": now,
                             "refresh_expires_at": now + timedelta(days=60)}),
        ("smartcar_v3_connections", {"tenant_id": t.id, "smartcar_vehicle_id": t.smartcar_id,
                                     "smartcar_user_id": "sc-user", "vehicle_id": t.vehicle_id}),
        ("smartcar_oauth_states", {"state": t.oauth_state, "tenant_id": t.id,
                                   "user_id": t.user_id, "vehicle_id": t.vehicle_id,
                                   "expires_at": now + timedelta(minutes=10)}),
        ("integration_dead_letters", {"tenant_id": t.id, "vendor": "samsara",
                                      "reason": "unknown_vehicle", "detail": "seed"}),
        ("analyst_roles", {"role_name": f"analyst_{t.slug}", "tenant_id": t.id}),
        ("archive_manifest", {"tenant_id": t.id, "table_name": "telemetry",
                              "day": date(2024, 1, 1), "blob_path": f"{t.slug}/x",
                              "row_count": 1, "sha256": "0" * 64, "size_bytes": 1}),
        ("archive_rejects", {"tenant_id": t.id, "table_name": "telemetry",
                             "day": date(2024, 1, 1), "row_key": '{"seq": 1}',
                             "column_name": "dtc_codes", "reason": "2-dimensional array",
                             "row_text": "(...)"}),
    ]


def insert(conn: psycopg.Connection[tuple[object, ...]], table: str,
           row: dict[str, object]) -> None:
    """INSERT one row given as column -> value."""
    conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row))), list(row.values()))


@dataclass(frozen=True)
class World:
    """Tenants A and B seeded as the owner, and the tables the catalog calls tenant tables."""

    db: TestDatabase
    a: Seeded
    b: Seeded
    tables: dict[str, str]
    """table -> its tenant key column (tenant_id; id for tenants)"""


def tenant_tables(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """Every ordinary table of the public schema with a tenant_id column, plus tenants itself."""
    rows = conn.execute("""
        SELECT c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                             AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                            WHERE h.hypertable_schema = n.nspname
                              AND h.hypertable_name = c.relname)
         ORDER BY 1""").fetchall()
    return {"tenants": "id", **{str(r[0]): "tenant_id" for r in rows}}


@pytest.fixture(scope="module")
def world(module_database: TestDatabase) -> World:
    """Two seeded tenants; rows written as the owner, which RLS does not restrict."""
    a, b = Seeded(f"a{uuid.uuid4().hex[:8]}"), Seeded(f"b{uuid.uuid4().hex[:8]}")
    with psycopg.connect(module_database.owner_url, autocommit=True) as conn:
        tables = tenant_tables(conn)
        for tenant in (a, b):
            for table, row in seed_rows(tenant):
                insert(conn, table, row)
    return World(module_database, a, b, tables)


def app_conn(world: World, tenant: uuid.UUID | None) -> psycopg.Connection[tuple[object, ...]]:
    """A fleet_app session, bound to `tenant` for the whole session or to none."""
    conn = psycopg.connect(world.db.app_url, autocommit=True)
    if tenant is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
    return conn


# -- row-level security, generated from the catalog ---------------------------------------------

def test_catalog_finds_the_tenant_tables(world: World) -> None:
    # Guards the generated checks below against an empty or wrong catalog query.
    assert {"users", "vehicles", "smartcar_oauth_states", "audit_logs"} <= set(world.tables)
    assert "telemetry" not in world.tables  # hypertables: tests/storage/test_tenancy.py


def test_every_tenant_table_is_under_rls_for_the_app_role(world: World) -> None:
    """RLS on, fleet_app subject to it, and a policy keyed on app_current_tenant()."""
    with psycopg.connect(world.db.owner_url) as conn:
        role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles"
                            " WHERE rolname = 'fleet_app'").fetchone()
        assert role == (False, False)
        problems = []
        for table in world.tables:
            if not _app_may_touch(conn, table):
                continue  # no privilege at all: nothing to filter (analyst_roles)
            enabled, owner = conn.execute(
                "SELECT relrowsecurity, pg_get_userbyid(relowner) FROM pg_class"
                " WHERE oid = %s::regclass", (table,)).fetchone() or (False, "")
            # FORCE would matter only if fleet_app owned the table; the owner role is
            # NOBYPASSRLS but must see every tenant (jobs, definer functions), so RLS is
            # enabled, not forced, and this asserts the condition that makes that sufficient.
            if not enabled:
                problems.append(f"{table}: row-level security is off")
            if owner == "fleet_app":
                problems.append(f"{table}: owned by fleet_app, which owners' RLS exemption frees")
            policies = conn.execute(
                "SELECT qual, with_check FROM pg_policies WHERE schemaname = 'public'"
                " AND tablename = %s AND 'fleet_app' = ANY(roles)", (table,)).fetchall()
            # Every policy that lets fleet_app see rows must key them on the tenant (an
            # INSERT-only policy such as audit_anonymous_insert has no USING clause).
            visible = [str(q) for q, _ in policies if q is not None]
            if not visible or not all("app_current_tenant()" in q for q in visible):
                problems.append(f"{table}: fleet_app policies {policies} not keyed on the tenant")
        assert problems == []


def test_every_tenant_table_has_a_seed_row(world: World) -> None:
    """So that the zero-row checks below are not vacuous: the owner sees both tenants' rows."""
    seeded = {table for table, _ in seed_rows(world.a)}
    assert set(world.tables) - seeded == set(), "add a seed row for the new tenant table(s)"
    with psycopg.connect(world.db.owner_url) as conn:
        for table, key in world.tables.items():
            count = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = ANY(%s)").format(
                sql.Identifier(table), sql.Identifier(key)), ([world.a.id, world.b.id],)
            ).fetchone()
            assert count == (2,), table


def test_app_role_without_tenant_reads_nothing(world: World) -> None:
    with app_conn(world, None) as conn:
        seen = {}
        for table in world.tables:
            if conn.execute("SELECT has_table_privilege(%s, 'SELECT')", (table,)
                            ).fetchone() != (True,):
                continue  # no SELECT at all reads nothing either
            seen[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table))).fetchone()
        assert "smartcar_oauth_states" in seen
        assert {t: n for t, n in seen.items() if n != (0,)} == {}


def _app_may_touch(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    row = conn.execute(
        "SELECT has_table_privilege('fleet_app', %s, 'SELECT, INSERT, UPDATE, DELETE')",
        (table,)).fetchone()
    return row == (True,)


def test_app_role_of_tenant_a_reads_only_tenant_a(world: World) -> None:
    with app_conn(world, world.a.id) as conn:
        for table, key in world.tables.items():
            if not _app_may_touch(conn, table):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(table)))
                continue
            rows = conn.execute(sql.SQL("SELECT DISTINCT {} FROM {}").format(
                sql.Identifier(key), sql.Identifier(table))).fetchall()
            # Its own row proves the policy is not simply "deny"; B's never shows.
            assert rows == [(world.a.id,)], table


# -- smartcar_oauth_states and smartcar_consume_oauth_state ---------------------------------------

def _new_state(world: World, tenant: Seeded, *, ttl: timedelta = timedelta(minutes=10)) -> str:
    state = secrets.token_urlsafe(32)
    with psycopg.connect(world.db.owner_url, autocommit=True) as conn:
        insert(conn, "smartcar_oauth_states", {
            "state": state, "tenant_id": tenant.id, "user_id": tenant.user_id,
            "vehicle_id": tenant.vehicle_id, "expires_at": datetime.now(UTC) + ttl})
    return state


def _state_exists(world: World, state: str) -> bool:
    with psycopg.connect(world.db.owner_url) as conn:
        return conn.execute("SELECT count(*) FROM smartcar_oauth_states WHERE state = %s",
                            (state,)).fetchone() == (1,)


def test_tenant_a_cannot_touch_tenant_b_states_directly(world: World) -> None:
    state = _new_state(world, world.b)
    with app_conn(world, world.a.id) as conn:
        assert conn.execute("SELECT count(*) FROM smartcar_oauth_states WHERE state = %s",
                            (state,)).fetchone() == (0,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM smartcar_oauth_states WHERE state = %s", (state,))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE smartcar_oauth_states SET tenant_id = %s WHERE state = %s",
                         (world.a.id, state))
        # Planting a state for B (so that B's owner's consent lands with us) is refused too.
        with pytest.raises(errors.InsufficientPrivilege):
            insert(conn, "smartcar_oauth_states", {
                "state": secrets.token_urlsafe(32), "tenant_id": world.b.id,
                "expires_at": datetime.now(UTC) + timedelta(minutes=10)})
    assert _state_exists(world, state)


@pytest.mark.parametrize("tenant", ["none", "a"])
def test_consume_needs_the_exact_state(world: World, tenant: str) -> None:
    state = _new_state(world, world.b)
    with app_conn(world, None if tenant == "none" else world.a.id) as conn:
        for guess in ("", "%", state[:-1], f"{state[:20]}%", state.upper(), f"{state} "):
            assert conn.execute("SELECT * FROM smartcar_consume_oauth_state(%s)",
                                (guess,)).fetchall() == [], guess
    assert _state_exists(world, state)


def test_consume_returns_only_what_the_callback_needs_once(world: World) -> None:
    state = _new_state(world, world.b)
    with app_conn(world, None) as conn:
        cur = conn.execute("SELECT * FROM smartcar_consume_oauth_state(%s)", (state,))
        assert [d.name for d in cur.description or ()] == ["tenant_id", "user_id", "vehicle_id"]
        assert cur.fetchall() == [(world.b.id, world.b.user_id, world.b.vehicle_id)]
        assert conn.execute("SELECT * FROM smartcar_consume_oauth_state(%s)",
                            (state,)).fetchall() == []
    assert not _state_exists(world, state)


def test_expired_state_is_refused_and_removed(world: World) -> None:
    expired = _new_state(world, world.b, ttl=timedelta(seconds=-1))
    other_expired = _new_state(world, world.a, ttl=timedelta(seconds=-1))
    live = _new_state(world, world.a)
    with app_conn(world, None) as conn:
        assert conn.execute("SELECT * FROM smartcar_consume_oauth_state(%s)",
                            (expired,)).fetchall() == []
    assert not _state_exists(world, expired)
    assert not _state_exists(world, other_expired)  # swept: nobody could use it
    assert _state_exists(world, live)


# -- api_login_lookup ------------------------------------------------------------------------------

LOGIN_COLUMNS = ["user_id", "tenant_id", "password_hash", "account_locked_until", "can_log_in"]


@pytest.mark.parametrize("tenant", ["none", "a"])
def test_login_lookup_returns_only_the_login_check(world: World, tenant: str) -> None:
    """By design any caller gets this for an e-mail it knows, and nothing more."""
    with app_conn(world, None if tenant == "none" else world.a.id) as conn:
        cur = conn.execute("SELECT * FROM api_login_lookup(%s)", (world.b.email.upper(),))
        assert [d.name for d in cur.description or ()] == LOGIN_COLUMNS
        rows = cur.fetchall()
    assert len(rows) == 1
    user_id, tenant_id, pw_hash, locked_until, can_log_in = rows[0]
    assert (user_id, tenant_id, locked_until, can_log_in) == (
        world.b.user_id, world.b.id, None, True)
    assert str(pw_hash).startswith("$argon2id$")


@pytest.mark.parametrize("guess", ["%", "%@example.com", "admin.%", "", "' OR true --"])
def test_login_lookup_does_not_enumerate(world: World, guess: str) -> None:
    with app_conn(world, None) as conn:
        assert conn.execute("SELECT * FROM api_login_lookup(%s)", (guess,)).fetchall() == []


def test_login_lookup_hides_hash_of_accounts_that_cannot_log_in(
        module_database: TestDatabase) -> None:
    inactive_user, inactive_tenant = Seeded(f"u{uuid.uuid4().hex[:8]}"), Seeded(
        f"t{uuid.uuid4().hex[:8]}")
    with psycopg.connect(module_database.owner_url, autocommit=True) as conn:
        for t in (inactive_user, inactive_tenant):
            for table, row in seed_rows(t)[:3]:  # tenants, drivers, users
                insert(conn, table, row)
        conn.execute("UPDATE users SET is_active = false, account_locked_until = now() - "
                     "interval '1 hour' WHERE id = %s", (inactive_user.user_id,))
        conn.execute("UPDATE tenants SET is_active = false WHERE id = %s",
                     (inactive_tenant.id,))
    with psycopg.connect(module_database.app_url) as conn:
        for t in (inactive_user, inactive_tenant):
            row = conn.execute("SELECT password_hash, account_locked_until, can_log_in"
                               " FROM api_login_lookup(%s)", (t.email,)).fetchone()
            # A lock-out that has run out is not reported either.
            assert row == (None, None, False), t.slug


def test_login_lookup_reports_a_lockout_in_force(module_database: TestDatabase) -> None:
    t = Seeded(f"l{uuid.uuid4().hex[:8]}")
    with psycopg.connect(module_database.owner_url, autocommit=True) as conn:
        for table, row in seed_rows(t)[:3]:
            insert(conn, table, row)
        until = conn.execute("UPDATE users SET account_locked_until = now() + interval '5 min'"
                             " WHERE id = %s RETURNING account_locked_until",
                             (t.user_id,)).fetchone()
    with psycopg.connect(module_database.app_url) as conn:
        assert conn.execute("SELECT account_locked_until FROM api_login_lookup(%s)",
                            (t.email,)).fetchone() == until


async def test_login_through_the_narrow_lookup(world: World, make_client: Any) -> None:
    """The API's login with the narrowed lookup: role and e-mail now come from an RLS read."""
    t = Seeded(f"h{uuid.uuid4().hex[:8]}")
    with psycopg.connect(world.db.owner_url, autocommit=True) as conn:
        for table, row in seed_rows(t)[:3]:
            insert(conn, table, row)
    client = make_client()
    await client.start_server()
    try:
        resp = await client.post("/api/auth/login", json={"email": t.email.upper(),
                                                          "password": PASSWORD})
        assert resp.status == 200, await resp.text()
        user = (await resp.json())["user"]
        assert (user["id"], user["tenant_id"], user["role"], user["email"]) == (
            str(t.user_id), str(t.id), "admin", t.email)
        with psycopg.connect(world.db.owner_url, autocommit=True) as conn:
            conn.execute("UPDATE users SET is_active = false WHERE id = %s", (t.user_id,))
        # The right password on a deactivated account: the same answer as a wrong one.
        resp = await client.post("/api/auth/login", json={"email": t.email,
                                                          "password": PASSWORD})
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_credentials"
    finally:
        await client.close()
    with psycopg.connect(world.db.owner_url) as conn:
        reasons = conn.execute(
            "SELECT outcome, details->>'reason' FROM audit_logs WHERE tenant_id = %s"
            " AND action = 'auth.login' ORDER BY id", (t.id,)).fetchall()
        failures = conn.execute("SELECT failed_login_attempts FROM users WHERE id = %s",
                                (t.user_id,)).fetchone()
    assert reasons == [("success", None), ("failure", "inactive")]
    assert failures == (0,)


# -- smartcar_vehicle_owner ------------------------------------------------------------------------

def test_vehicle_owner_returns_the_topic_only(world: World) -> None:
    with app_conn(world, None) as conn:
        cur = conn.execute("SELECT * FROM smartcar_vehicle_owner(%s)", (world.b.smartcar_id,))
        assert [d.name for d in cur.description or ()] == ["tenant_slug", "vehicle_code"]
        assert cur.fetchall() == [(world.b.slug, "v1")]
        assert conn.execute("SELECT * FROM smartcar_vehicle_owner(%s)",
                            ("%",)).fetchall() == []


def test_claiming_another_tenants_smartcar_vehicle_diverts_nothing(world: World) -> None:
    """Tenant A's manager links B's Smartcar vehicle id to a vehicle of A's."""
    with app_conn(world, world.a.id) as conn:
        conn.execute("INSERT INTO vehicles (tenant_id, code, smartcar_id) VALUES (%s, %s, %s)",
                     (world.a.id, "claim", world.b.smartcar_id))
        # B holds a consent for it (seeded connection and token pair): B alone receives it.
        assert conn.execute("SELECT * FROM smartcar_vehicle_owner(%s)",
                            (world.b.smartcar_id,)).fetchall() == [(world.b.slug, "v1")]
    with psycopg.connect(world.db.owner_url, autocommit=True) as owner:
        owner.execute("DELETE FROM smartcar_v3_connections WHERE tenant_id = %s", (world.b.id,))
        owner.execute("DELETE FROM smartcar_tokens WHERE tenant_id = %s", (world.b.id,))
    try:
        with app_conn(world, None) as conn:
            # Two bare links, no consent: neither is trusted.
            assert conn.execute("SELECT * FROM smartcar_vehicle_owner(%s)",
                                (world.b.smartcar_id,)).fetchall() == []
    finally:
        with psycopg.connect(world.db.owner_url, autocommit=True) as owner:
            owner.execute("DELETE FROM vehicles WHERE tenant_id = %s AND code = 'claim'",
                          (world.a.id,))
            for table, row in seed_rows(world.b):
                if table in ("smartcar_tokens", "smartcar_v3_connections"):
                    insert(owner, table, row)


# -- the list of definer functions the application role can execute --------------------------------

OURS = {
    "api_login_lookup(text)",
    "fleet_analyst_tenant()",
    "smartcar_consume_oauth_state(text)",
    "smartcar_vehicle_owner(text)",
}
# Owned by the extensions (installed by the admin role), reviewed in docs/api.md. A migration,
# run as the schema owner, cannot revoke them.
EXTENSIONS = {
    "st_estimatedextent(text,text,text,boolean)",
    "st_estimatedextent(text,text,text)",
    "st_estimatedextent(text,text)",
    "_timescaledb_functions.cagg_migrate_update_watermark(integer)",
}


def test_definer_functions_the_app_role_can_execute_are_reviewed(world: World) -> None:
    with psycopg.connect(world.db.owner_url) as conn:
        rows = conn.execute("""
            SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.proconfig
              FROM pg_proc p
             WHERE p.prosecdef AND has_function_privilege('fleet_app', p.oid, 'EXECUTE')
        """).fetchall()
    ours = {name: config for name, owner, config in rows if owner == "fleet_owner"}
    theirs = {name for name, owner, _ in rows if owner != "fleet_owner"}
    assert set(ours) == OURS, "a new SECURITY DEFINER function: review it (docs/api.md)"
    assert theirs <= EXTENSIONS, "an extension added a SECURITY DEFINER function: review it"
    # A pinned search_path, so that the caller's temporary objects cannot stand in for ours.
    assert all(c and "search_path=public, pg_temp" in c for c in ours.values()), ours


def test_audit_chain_still_runs_for_the_app_role(world: World) -> None:
    """EXECUTE on the trigger function was revoked; inserting an audit row must still work."""
    with app_conn(world, world.a.id) as conn:
        row = conn.execute("INSERT INTO audit_logs (tenant_id, action, resource_type, outcome)"
                           " VALUES (%s, 'probe', 'tenant', 'success') RETURNING id, hash",
                           (world.a.id,)).fetchone()
    assert row is not None
    assert len(str(row[1])) == 64


def test_estimated_extent_does_not_leak_other_tenants_positions(world: World) -> None:
    with psycopg.connect(world.db.owner_url, autocommit=True) as owner:
        owner.execute("ANALYZE geofences")
    with app_conn(world, None) as conn:
        try:
            extent = conn.execute(
                "SELECT ST_EstimatedExtent('public', 'geofences', 'zone')").fetchone()
        except errors.InsufficientPrivilege:
            return
    assert extent == (None,)
