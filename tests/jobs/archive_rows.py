"""Telemetry rows of the archive tests: a few vehicles' samples on days past the hot window."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
"""The archive tests' "now" (noon today, UTC)."""
OLD_DAYS = (40, 35)


def insert_telemetry(owner_url: str, tenant_id: uuid.UUID, vehicle_id: uuid.UUID, *,
                     day_offset: int, n: int, seq0: int) -> None:
    """`n` samples of one vehicle, 37 s apart from noon `day_offset` days ago, sequence numbers
    from `seq0`; one with a DTC, a third with `extra`."""
    base = NOW - timedelta(days=day_offset)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for i in range(n):
            conn.execute(
                "INSERT INTO telemetry (time, tenant_id, vehicle_id, seq, lon_e7, lat_e7,"
                " speed_kph, rpm, fuel_level_pct, odometer_km, ignition, gps_satellites,"
                " dtc_codes, extra, source, received_at) VALUES (%s, %s, %s, %s,"
                " round(%s * 1e7), round(%s * 1e7), %s, %s, %s, %s, %s, %s,"
                " %s, %s::jsonb, 'gateway', %s)",
                (base + timedelta(seconds=37 * i, microseconds=123), tenant_id, vehicle_id,
                 seq0 + i, 13.4 + i * 1e-4, 52.5 + i * 1e-4, 40.5 + i, 1500.25, 55.5,
                 1000.125 + i, i % 2 == 0, 9, ["P0301"] if i == 3 else None,
                 '{"intake_temp_c": 21.5}' if i % 3 == 0 else None,
                 base + timedelta(seconds=37 * i + 1)))


def snapshot(owner_url: str, day: date | None = None) -> list[str]:
    with psycopg.connect(owner_url) as conn:
        if day is None:
            rows = conn.execute("SELECT t::text FROM telemetry t ORDER BY vehicle_id, seq")
        else:
            rows = conn.execute(
                "SELECT t::text FROM telemetry t WHERE time >= %s AND time < %s"
                " ORDER BY vehicle_id, seq", (datetime.combine(day, datetime.min.time(), UTC),
                                              datetime.combine(day, datetime.min.time(), UTC)
                                              + timedelta(days=1)))
        return [r[0] for r in rows]


def chunks(owner_url: str) -> int:
    with psycopg.connect(owner_url) as conn:
        return conn.execute("SELECT count(*) FROM show_chunks('telemetry')").fetchone()[0]


