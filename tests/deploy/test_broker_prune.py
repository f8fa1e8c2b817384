"""`fleet broker prune` and migration 0019: no device login outlives its device (#23)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from deploy.cli import main
from deploy.services import MQTT_ADMIN_USER, LocalServices
from tests.conftest import TestDatabase
from tests.deploy.test_broker_rules import NOT_AUTHORIZED, connect

MIGRATION = Path(__file__).resolve().parents[2] / "storage/migrations/0019_orphaned_devices.sql"


def _tenant_with_devices(db: TestDatabase, slug: str, codes: list[str]) -> dict[str, uuid.UUID]:
    """A tenant, a vehicle per code and a provisioned device row for each."""
    with psycopg.connect(db.owner_url) as conn:
        row = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
                           (slug, slug)).fetchone()
        assert row is not None
        vehicles = {}
        for code in codes:
            v = conn.execute("INSERT INTO vehicles (tenant_id, code) VALUES (%s, %s) "
                             "RETURNING id", (row[0], code)).fetchone()
            assert v is not None
            vehicles[code] = v[0]
            conn.execute("INSERT INTO devices (tenant_id, vehicle_id, mqtt_username, "
                         "mqtt_password_hash) VALUES (%s, %s, %s, '$7$101$x$y')",
                         (row[0], v[0], f"{slug}/{code}"))
    return vehicles


def test_a_device_orphaned_before_the_fix_is_revoked_by_the_migration(
        database: TestDatabase) -> None:
    slug = f"o{uuid.uuid4().hex[:8]}"
    vehicles = _tenant_with_devices(database, slug, ["kept", "gone"])
    with psycopg.connect(database.owner_url) as conn:
        # What a vehicle delete did before the API revoked devices with it.
        conn.execute("DELETE FROM vehicles WHERE id = %s", (vehicles["gone"],))
        conn.execute(MIGRATION.read_text())
        rows = dict(conn.execute(
            "SELECT split_part(mqtt_username, '#', 1), status FROM devices WHERE "
            "mqtt_username LIKE %s", (f"{slug}/%",)).fetchall())
        hashes = [r[0] for r in conn.execute(
            "SELECT mqtt_password_hash FROM devices WHERE mqtt_username LIKE %s",
            (f"{slug}/gone#revoked-%",))]
    assert rows == {f"{slug}/kept": "provisioned", f"{slug}/gone": "revoked"}
    assert len(hashes) == 1
    assert hashes[0].startswith("$7$101$")
    assert hashes[0] != "$7$101$x$y"


def test_prune_deletes_the_logins_the_database_does_not_hold(
        services: LocalServices, database: TestDatabase, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    slug = f"p{uuid.uuid4().hex[:8]}"
    _tenant_with_devices(database, slug, ["live", "lost"])
    for code in ("live", "stray"):
        services.add_device_login(f"{slug}/{code}", "pw-" + code)
    monkeypatch.setenv("FLEET_DATABASE_ADMIN_URL", database.admin_url)
    monkeypatch.setenv("FLEET_API_MQTT_ADMIN_URL", services.mqtt_url(MQTT_ADMIN_USER))
    stray = connect(services, f"{slug}/stray", "pw-stray", f"{slug}/stray")
    try:
        assert main(["broker", "prune", "--tenant", slug, "--dry-run"]) == 0
        out = capsys.readouterr()
        assert f"would delete {slug}/stray" in out.out
        assert f"missing on the broker: {slug}/lost" in out.err
        assert stray.connected
        assert main(["broker", "prune", "--tenant", slug]) == 0
        assert f"deleting {slug}/stray" in capsys.readouterr().out
        # Its session ends, and it cannot log in again; the live device still can.
        stray.wait(lambda: stray.disconnects)
        again = connect(services, f"{slug}/stray", "pw-stray", f"{slug}/stray")
        again.close()
        assert again.connack == [NOT_AUTHORIZED]
        live = connect(services, f"{slug}/live", "pw-live", f"{slug}/live")
        live.close()
        assert live.connack == [0]
    finally:
        stray.close()
