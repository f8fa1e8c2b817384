"""Maintenance scheduler: due schedules become work orders (one per due occurrence) and mail.

A schedule is due by date (`days`), by distance (`km`, `miles`: the due odometer is stored in
km) or by engine hours (`hours`). The current odometer and engine hours are the largest of
vehicle_state (kept by the stream), the newest telemetry sample that has the signal, and the
vehicles row. Each due occurrence has a key (``date:2026-11-27``, ``km:15000.0``,
``hours:500.0``) and ``work_orders`` is unique on (schedule_id, schedule_due_key), so re-runs,
two overlapping runners or a crash between insert and mail never create a second order.
Mail goes out only for orders this run created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from api.jobs.config import JobsSettings
from api.jobs.errors import NotifyError
from api.jobs.mailer import Mailer

log = logging.getLogger(__name__)

KM_PER_MILE = 1.609344

_DUE_QUERY = """
SELECT s.id, s.tenant_id, s.vehicle_id, s.service_type, s.interval_type, s.interval_value,
       s.next_service_due_date, s.next_service_due_odometer_km,
       s.next_service_due_engine_hours_h, v.code, t.slug,
       greatest(vs.odometer_km, v.odometer_km, tel.odometer_km) AS odometer_km,
       greatest(vs.engine_hours_h, v.engine_hours_h, teh.engine_hours_h) AS engine_hours_h
  FROM maintenance_schedules s
  JOIN vehicles v ON v.id = s.vehicle_id
  JOIN tenants t ON t.id = s.tenant_id
  LEFT JOIN vehicle_state vs ON vs.vehicle_id = s.vehicle_id
  LEFT JOIN LATERAL (SELECT odometer_km FROM telemetry
                      WHERE vehicle_id = s.vehicle_id AND odometer_km IS NOT NULL
                      ORDER BY time DESC LIMIT 1) tel ON s.interval_type IN ('km', 'miles')
  LEFT JOIN LATERAL (SELECT engine_hours_h FROM telemetry
                      WHERE vehicle_id = s.vehicle_id AND engine_hours_h IS NOT NULL
                      ORDER BY time DESC LIMIT 1) teh ON s.interval_type = 'hours'
 WHERE s.is_active AND t.is_active AND v.status <> 'retired'
"""


@dataclass(frozen=True)
class DueOccurrence:
    """One schedule found due, and why."""

    schedule_id: UUID
    tenant_id: UUID
    vehicle_id: UUID
    vehicle_code: str
    tenant_slug: str
    service_type: str
    key: str
    reason: str
    odometer_km: float | None
    due_date: date | None


def due_occurrence(row: Any, today: date) -> DueOccurrence | None:
    """Whether one schedule row is due today; pure, so it is tested without a database."""
    kind = row["interval_type"]
    odo, hours = row["odometer_km"], row["engine_hours_h"]
    key = reason = None
    due_date: date | None = None
    if kind == "days" and row["next_service_due_date"] is not None:
        due_date = row["next_service_due_date"]
        if due_date <= today:
            key, reason = f"date:{due_date.isoformat()}", f"due on {due_date.isoformat()}"
    elif kind in ("km", "miles") and row["next_service_due_odometer_km"] is not None:
        due_km = float(row["next_service_due_odometer_km"])
        if odo is not None and odo >= due_km:
            shown = (f"{due_km / KM_PER_MILE:,.0f} mi" if kind == "miles" else f"{due_km:,.0f} km")
            key = f"km:{due_km:.1f}"
            reason = f"odometer {odo:,.0f} km reached the due mark {shown}"
    elif kind == "hours" and row["next_service_due_engine_hours_h"] is not None:
        due_h = float(row["next_service_due_engine_hours_h"])
        if hours is not None and hours >= due_h:
            key, reason = f"hours:{due_h:.1f}", f"engine hours {hours:,.1f} reached {due_h:,.1f}"
    if key is None or reason is None:
        return None
    return DueOccurrence(row["id"], row["tenant_id"], row["vehicle_id"], row["code"],
                         row["slug"], row["service_type"], key, reason, odo, due_date)


class MaintenanceJob:
    """Creates work orders for due schedules and mails the tenant's managers."""

    name = "maintenance"

    def __init__(self, db_url: str, settings: JobsSettings, mailer: Mailer | None = None,
                 today: date | None = None) -> None:
        self._db_url = db_url
        self._settings = settings
        self._mailer = mailer or Mailer(settings)
        self._today = today

    async def run(self) -> dict[str, Any]:
        """One pass over every active schedule."""
        today = self._today or datetime.now(UTC).date()
        created: list[tuple[DueOccurrence, UUID]] = []
        conn = await asyncpg.connect(self._db_url)
        try:
            rows = await conn.fetch(_DUE_QUERY)
            due = [d for d in (due_occurrence(r, today) for r in rows) if d is not None]
            for occ in due:
                async with conn.transaction():
                    wo_id = await conn.fetchval(
                        "INSERT INTO work_orders (tenant_id, vehicle_id, schedule_id,"
                        " schedule_due_key, type, priority, description, odometer_reading_km,"
                        " due_date) VALUES ($1, $2, $3, $4, 'preventive', 'medium', $5, $6, $7)"
                        " ON CONFLICT (schedule_id, schedule_due_key) DO NOTHING RETURNING id",
                        occ.tenant_id, occ.vehicle_id, occ.schedule_id, occ.key,
                        f"{occ.service_type}: {occ.reason}", occ.odometer_km,
                        occ.due_date or today)
                    await conn.execute("UPDATE maintenance_schedules SET last_checked_at = now()"
                                       " WHERE id = $1", occ.schedule_id)
                if wo_id is not None:
                    created.append((occ, wo_id))
            recipients = await self._recipients(conn, {occ.tenant_id for occ, _ in created})
        finally:
            await conn.close()
        mail_failures = 0
        for occ, wo_id in created:
            to = recipients.get(occ.tenant_id, []) + list(self._settings.maintenance_notify_to)
            try:
                await self._mailer.send(
                    to, f"[{occ.tenant_slug}] Maintenance due: {occ.vehicle_code}"
                        f" - {occ.service_type}",
                    f"Vehicle {occ.vehicle_code} needs {occ.service_type}: {occ.reason}.\n"
                    f"Work order {wo_id} was opened.\n")
            except NotifyError as exc:
                # The order exists either way; a lost mail is logged, not retried forever.
                mail_failures += 1
                log.warning("work order %s: %s", wo_id, exc)
        return {"schedules_due": len(due), "work_orders_created": len(created),
                "mail_failures": mail_failures}

    async def _recipients(self, conn: asyncpg.Connection,
                          tenants: set[UUID]) -> dict[UUID, list[str]]:
        if not tenants:
            return {}
        rows = await conn.fetch(
            "SELECT tenant_id, email FROM users WHERE tenant_id = ANY($1::uuid[]) AND is_active"
            " AND role IN ('admin', 'fleet_manager')", list(tenants))
        out: dict[UUID, list[str]] = {}
        for r in rows:
            out.setdefault(r["tenant_id"], []).append(r["email"])
        return out
