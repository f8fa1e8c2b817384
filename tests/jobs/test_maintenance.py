"""Maintenance scheduler: due schedules become one work order each, and mail."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from api.jobs.config import JobsSettings
from api.jobs.maintenance import MaintenanceJob, due_occurrence
from tests.integrations.conftest import seed_fleet

pytestmark = pytest.mark.services

TODAY = date(2026, 11, 27)


def test_due_rules() -> None:
    base = {"id": 1, "tenant_id": 2, "vehicle_id": 3, "code": "v", "slug": "t",
            "service_type": "oil", "next_service_due_date": None,
            "next_service_due_odometer_km": None, "next_service_due_engine_hours_h": None,
            "odometer_km": 10_000.0, "engine_hours_h": 100.0}
    assert due_occurrence({**base, "interval_type": "days",
                           "next_service_due_date": TODAY}, TODAY).key == "date:2026-11-27"
    assert due_occurrence({**base, "interval_type": "days",
                           "next_service_due_date": TODAY + timedelta(days=1)}, TODAY) is None
    miles = due_occurrence({**base, "interval_type": "miles",
                            "next_service_due_odometer_km": 9_656.064}, TODAY)
    assert miles is not None
    assert miles.key == "km:9656.1"
    assert "6,000 mi" in miles.reason
    assert due_occurrence({**base, "interval_type": "km",
                           "next_service_due_odometer_km": 10_000.5}, TODAY) is None
    assert due_occurrence({**base, "interval_type": "hours",
                           "next_service_due_engine_hours_h": 99.0}, TODAY).key == "hours:99.0"
    assert due_occurrence({**base, "interval_type": "hours", "engine_hours_h": None,
                           "next_service_due_engine_hours_h": 99.0}, TODAY) is None


async def test_work_orders_idempotent_and_mailed(database, tenant_slug, smtp_sink) -> None:
    fleet = seed_fleet(database.owner_url, tenant_slug, {
        "v-days": {"odometer_km": "100"}, "v-km": {"odometer_km": "5000"},
        "v-hours": {"engine_hours_h": "10"}, "v-notdue": {"odometer_km": "10"}})
    v = fleet.vehicles
    now = datetime.now(UTC)
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (tenant_id, email, role, password_hash) VALUES"
                     " (%s, 'boss@example.test', 'fleet_manager', 'x'),"
                     " (%s, 'viewer@example.test', 'viewer', 'x')",
                     (fleet.tenant_id, fleet.tenant_id))
        # Odometer from telemetry (newer than the vehicles row), hours from vehicle_state.
        conn.execute("INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, odometer_km,"
                     " source) VALUES (%s, %s, %s, 1, 15000.5, 'gateway')",
                     (now, fleet.tenant_id, v["v-km"]))
        conn.execute("INSERT INTO vehicle_state (vehicle_id, tenant_id, time, last_seq,"
                     " engine_hours_h) VALUES (%s, %s, %s, 1, 501)",
                     (v["v-hours"], fleet.tenant_id, now))
        rows = [
            (v["v-days"], "inspection", "days", 90, "next_service_due_date", TODAY),
            (v["v-km"], "oil change", "km", 15000, "next_service_due_odometer_km", 15000),
            (v["v-hours"], "filters", "hours", 500, "next_service_due_engine_hours_h", 500),
            (v["v-notdue"], "tyres", "miles", 10000, "next_service_due_odometer_km", 16093),
        ]
        for vid, service, kind, interval, col, due in rows:
            conn.execute(
                f"INSERT INTO maintenance_schedules (tenant_id, vehicle_id, service_type,"
                f" interval_type, interval_value, {col}) VALUES (%s, %s, %s, %s, %s, %s)",
                (fleet.tenant_id, vid, service, kind, interval, due))
    settings = JobsSettings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port,
                            maintenance_notify_to=["shop@example.test"])
    job = MaintenanceJob(database.owner_url, settings, today=TODAY)
    first = await job.run()
    assert first == {"schedules_due": 3, "work_orders_created": 3, "mail_failures": 0}
    # Re-runs (or a second runner racing) create nothing new and send no more mail.
    second = await job.run()
    assert second == {"schedules_due": 3, "work_orders_created": 0, "mail_failures": 0}
    with psycopg.connect(database.owner_url) as conn:
        orders = conn.execute("SELECT schedule_due_key, type, vehicle_id FROM work_orders"
                              " ORDER BY schedule_due_key").fetchall()
    assert [o[0] for o in orders] == ["date:2026-11-27", "hours:500.0", "km:15000.0"]
    assert {o[1] for o in orders} == {"preventive"}
    assert len(smtp_sink.messages) == 3
    subjects = sorted(m["Subject"] for m in smtp_sink.messages)
    assert subjects[0] == f"[{tenant_slug}] Maintenance due: v-days - inspection"
    assert all(m["To"] == "boss@example.test, shop@example.test" for m in smtp_sink.messages)


async def test_mail_failure_keeps_work_order(database, tenant_slug) -> None:
    fleet = seed_fleet(database.owner_url, tenant_slug, {"v": {}})
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("INSERT INTO maintenance_schedules (tenant_id, vehicle_id, service_type,"
                     " interval_type, interval_value, next_service_due_date)"
                     " VALUES (%s, %s, 'inspection', 'days', 30, %s)",
                     (fleet.tenant_id, fleet.vehicles["v"], TODAY))
    settings = JobsSettings(smtp_host="127.0.0.1", smtp_port=9, smtp_timeout_s=2,
                            maintenance_notify_to=["shop@example.test"])
    result = await MaintenanceJob(database.owner_url, settings, today=TODAY).run()
    assert result == {"schedules_due": 1, "work_orders_created": 1, "mail_failures": 1}
