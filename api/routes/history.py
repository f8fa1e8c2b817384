"""Telemetry history (downsampled), tracks, latest positions, events, anomalies, trips and
the dashboard metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from api.auth import ROLES, SECTION_KEY, current_user, roles_except
from api.cache import cached
from api.db import tenant_transaction
from api.errors import Unprocessable
from api.params import (
    BBOX_PATTERN,
    UUID_SCHEMA,
    page_params,
    path_uuid,
    query_bbox,
    query_bool,
    query_choice,
    query_date,
    query_int,
    query_text,
    query_time,
    query_uuid,
)
from api.routes.common import driver_scope, json_response, page_body, visible_vehicle
from api.routing import ID_PARAM, PAGE_PARAMS, ApiRoute, Param
from api.trips import Point, detect_trips
from core.live import EventKind

MAX_RANGE = timedelta(days=366)
RESOLUTIONS = ("auto", "raw", "1m", "1h")


def time_range(request: web.Request, default: timedelta) -> tuple[datetime, datetime]:
    """`from`/`to` query parameters (default: the last `default` until now).

    Both are valid date-times on their own, so their relation (from < to, at most 366 days
    apart) is a 422: the document can state it only in words.
    """
    now = datetime.now(UTC)
    end = query_time(request, "to", now) or now
    start = query_time(request, "from")
    if start is None:
        start = end - default if end - datetime.min.replace(tzinfo=UTC) > default \
            else datetime.min.replace(tzinfo=UTC)
    if start >= end:
        raise Unprocessable("from must be before to", field="from")
    if end - start > MAX_RANGE:
        raise Unprocessable("time range is limited to 366 days", field="from")
    return start, end


def choose_source(span: timedelta, max_points: int, resolution: str) -> tuple[str, int]:
    """Pick (table, bucket width s): raw samples, time_bucket on raw, or a rollup table."""
    if resolution == "raw":
        return "telemetry", 0
    width_s = max(1, int(span.total_seconds() // max_points) + 1)
    if resolution == "1h" or (resolution == "auto" and span > timedelta(days=7)
                              and width_s >= 3600):
        return "telemetry_1h", max(width_s, 3600)
    if resolution == "1m" or (resolution == "auto" and span > timedelta(days=1)
                              and width_s >= 60):
        return "telemetry_1m", max(width_s, 60)
    if width_s <= 1:
        return "telemetry", 0
    return "telemetry", width_s


_RAW = """
SELECT time, seq, lat_deg AS lat, lon_deg AS lon, speed_kph,
       heading_deg, rpm, coolant_temp_c, fuel_level_pct, odometer_km, battery_voltage_v, ignition
  FROM tenant.telemetry
 WHERE tenant_id = $1 AND vehicle_id = $2 AND time >= $3 AND time < $4
 ORDER BY time LIMIT $5
"""
_BUCKETED = """
SELECT time_bucket($5::interval, time) AS time, count(*)::int AS samples,
       last(lat_deg, time) AS lat, last(lon_deg, time) AS lon,
       avg(speed_kph)::real AS avg_speed_kph, max(speed_kph) AS max_speed_kph,
       avg(rpm)::real AS avg_rpm, max(coolant_temp_c) AS max_coolant_temp_c,
       last(fuel_level_pct, time) AS fuel_level_pct, max(odometer_km) AS odometer_km,
       min(battery_voltage_v) AS min_battery_voltage_v
  FROM tenant.telemetry
 WHERE tenant_id = $1 AND vehicle_id = $2 AND time >= $3 AND time < $4
 GROUP BY 1 ORDER BY 1
"""
_ROLLUP = """
SELECT time_bucket($5::interval, bucket) AS time, sum(samples)::int AS samples,
       ST_Y(last(last_location, bucket)::geometry) AS lat,
       ST_X(last(last_location, bucket)::geometry) AS lon,
       (sum(sum_speed_kph) / nullif(sum(speed_samples), 0))::real AS avg_speed_kph,
       max(max_speed_kph) AS max_speed_kph,
       (sum(sum_rpm) / nullif(sum(rpm_samples), 0))::real AS avg_rpm,
       max(max_coolant_temp_c) AS max_coolant_temp_c,
       last(last_fuel_level_pct, bucket) AS fuel_level_pct, max(max_odometer_km) AS odometer_km,
       min(min_battery_voltage_v) AS min_battery_voltage_v
  FROM tenant.{table}
 WHERE tenant_id = $1 AND vehicle_id = $2 AND bucket >= $3 AND bucket < $4
 GROUP BY 1 ORDER BY 1
"""


async def _series(request: web.Request, vehicle_id: UUID, *, start: datetime, end: datetime,
                  max_points: int, resolution: str) -> tuple[str, int, list[dict[str, Any]]]:
    user = current_user(request)
    table, width_s = choose_source(end - start, max_points, resolution)
    async with tenant_transaction(request) as conn:
        await visible_vehicle(conn, user, vehicle_id)
        if width_s == 0:
            rows = await conn.fetch(_RAW, user.tenant_id, vehicle_id, start, end, max_points)
        elif table == "telemetry":
            rows = await conn.fetch(_BUCKETED, user.tenant_id, vehicle_id, start, end,
                                    timedelta(seconds=width_s))
        else:
            rows = await conn.fetch(_ROLLUP.format(table=table), user.tenant_id, vehicle_id,
                                    start, end, timedelta(seconds=width_s))
    return table, width_s, [dict(r.items()) for r in rows]


def _series_params(request: web.Request) -> tuple[int, str]:
    max_points = query_int(request, "max_points", 1000, lo=2, hi=10000)
    resolution = query_choice(request, "resolution", RESOLUTIONS) or "auto"
    return max_points, resolution


async def telemetry_history(request: web.Request) -> web.Response:
    """GET /api/vehicles/{id}/telemetry: samples or time buckets over a time range."""
    vid = path_uuid(request)
    start, end = time_range(request, timedelta(hours=1))
    max_points, resolution = _series_params(request)
    table, width_s, rows = await _series(request, vid, start=start, end=end,
                                           max_points=max_points, resolution=resolution)
    return json_response({"vehicle_id": vid, "from": start, "to": end, "source": table,
                          "bucket_s": width_s, "points": rows})


async def track(request: web.Request) -> web.Response:
    """GET /api/vehicles/{id}/track: the path as a GeoJSON LineString Feature."""
    vid = path_uuid(request)
    start, end = time_range(request, timedelta(minutes=30))
    max_points, resolution = _series_params(request)
    table, width_s, rows = await _series(request, vid, start=start, end=end,
                                           max_points=max_points, resolution=resolution)
    pts = [r for r in rows if r["lat"] is not None]
    return json_response({
        "type": "Feature",
        "geometry": {"type": "LineString",
                     "coordinates": [[round(r["lon"], 7), round(r["lat"], 7)] for r in pts]},
        "properties": {"vehicle_id": vid, "from": start, "to": end, "source": table,
                       "bucket_s": width_s, "times": [r["time"] for r in pts]}})


POSITIONS_SQL = """
SELECT s.vehicle_id, v.code, s.time, ST_Y(s.location::geometry) AS lat,
       ST_X(s.location::geometry) AS lon, s.speed_kph, s.heading_deg, s.ignition, s.moving,
       s.fuel_level_pct, s.coolant_temp_c, s.battery_voltage_v, s.rpm, s.odometer_km,
       s.dtc_codes, s.inside_geofences
  FROM vehicle_state s JOIN vehicles v ON v.id = s.vehicle_id AND v.tenant_id = s.tenant_id
 WHERE s.tenant_id = $1 AND ($2::uuid IS NULL OR v.assigned_driver_id = $2)
   AND ($3::uuid IS NULL OR s.vehicle_id = $3)
   AND ($4::float8 IS NULL OR (ST_Y(s.location::geometry) BETWEEN $5 AND $7
        AND CASE WHEN $4 <= $6 THEN ST_X(s.location::geometry) BETWEEN $4 AND $6
                 ELSE ST_X(s.location::geometry) >= $4 OR ST_X(s.location::geometry) <= $6
            END))
 ORDER BY v.code
"""


async def positions(request: web.Request) -> web.Response:
    """GET /api/positions: the latest state of each vehicle (optionally in a bbox)."""
    user = current_user(request)
    box = query_bbox(request)
    bbox = box.as_list() if box else (None, None, None, None)
    async with tenant_transaction(request) as conn:
        rows = await conn.fetch(POSITIONS_SQL, user.tenant_id, driver_scope(user),
                                query_uuid(request, "vehicle_id"), *bbox)
    return json_response({"items": [dict(r.items()) for r in rows]})


_DRIVER_VEHICLES = ("($2::uuid IS NULL OR e.vehicle_id IN (SELECT id FROM vehicles "
                    "WHERE tenant_id = $1 AND assigned_driver_id = $2))")


async def paged_events(request: web.Request, select: str, where: str, args: list[Any],
                       order: str) -> web.Response:
    """One page of `select` (a subquery `e` with tenant_id, vehicle_id and time) over the
    request's `from`/`to` (default: the last day), drivers limited to their vehicles.

    $1 is the tenant, $2 the driver scope, $3/$4 the range; `where` continues with $5...
    bound to `args`.
    """
    user = current_user(request)
    page, limit, offset = page_params(request)
    start, end = time_range(request, timedelta(days=1))
    base = [user.tenant_id, driver_scope(user), start, end, *args]
    n = len(base)
    full_where = f"e.tenant_id = $1 AND {_DRIVER_VEHICLES} AND e.time >= $3 AND e.time < $4 " \
                 f"{where}"
    async with tenant_transaction(request) as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM {select} WHERE {full_where}",  # noqa: S608
                                    *base)
        rows = await conn.fetch(
            f"SELECT * FROM {select} WHERE {full_where} ORDER BY {order} "  # noqa: S608
            f"LIMIT ${n + 1} OFFSET ${n + 2}", *base, limit, offset)
    return json_response(page_body([_clean(r) for r in rows], page, limit, int(total)))


def _clean(row: Any) -> dict[str, Any]:
    out = dict(row.items())
    out.pop("tenant_id", None)
    out.pop("location", None)
    return out


@dataclass(frozen=True)
class EventTable:
    """Where one kind of event is stored and which columns name one event of it: the
    vehicle, the time, the type and, for geofence events, the fence. `event_acks` points at
    an event with them. They are the unique keys of geofence_events and vehicle_events; an
    anomaly's key also has its `kind` (signal or fleet_relative), which an acknowledgement
    does not tell apart: one acknowledges both when they fire at the same instant."""

    view: str
    type_column: str
    """The event's type: event_type, or an anomaly's signal."""
    by_fence: bool = False
    """Geofence events are per fence as well."""
    fired_only: bool = False
    """Anomalies: only rows with is_event are events (the others are scores)."""


EVENT_TABLES: dict[EventKind, EventTable] = {
    "geofence": EventTable("tenant.geofence_events", "event_type", by_fence=True),
    "vehicle": EventTable("tenant.vehicle_events", "event_type"),
    "anomaly": EventTable("tenant.anomalies", "signal", fired_only=True),
}
ACK_COLUMNS = "k.acked_at, ku.email AS acked_by_email, k.comment AS ack_comment"
"""What an event list shows of an event's acknowledgement (null when there is none)."""


def acked(kind: EventKind, alias: str) -> str:
    """LEFT JOINs adding the acknowledgement of each event row `alias` (ACK_COLUMNS)."""
    table = EVENT_TABLES[kind]
    match = (f"k.tenant_id = {alias}.tenant_id AND k.kind = '{kind}' "
             f"AND k.vehicle_id = {alias}.vehicle_id AND k.event_time = {alias}.time "
             f"AND k.event_type = {alias}.{table.type_column}")
    if table.by_fence:
        match += f" AND k.geofence_id = {alias}.geofence_id"
    if table.fired_only:
        match += f" AND {alias}.is_event"
    return f"LEFT JOIN event_acks k ON {match} LEFT JOIN users ku ON ku.id = k.acked_by"


_GEO_EVENTS = f"""(SELECT g.time, g.tenant_id, g.vehicle_id, v.code AS vehicle_code, g.geofence_id,
  f.name AS geofence_name, g.event_type, ST_Y(g.location::geometry) AS lat,
  ST_X(g.location::geometry) AS lon, g.speed_kph, g.dwell_s, g.seq, g.details, {ACK_COLUMNS}
  FROM tenant.geofence_events g JOIN vehicles v ON v.id = g.vehicle_id
  LEFT JOIN geofences f ON f.id = g.geofence_id {acked("geofence", "g")}
  WHERE g.tenant_id = $1) e"""  # noqa: S608 - constant text


async def geofence_events(request: web.Request) -> web.Response:
    """GET /api/geofence-events: enter/exit/dwell/crossing events, newest first."""
    et = query_choice(request, "event_type", ("enter", "exit", "dwell", "crossing"))
    return await paged_events(
        request, _GEO_EVENTS,
        "AND ($5::uuid IS NULL OR e.vehicle_id = $5) AND ($6::uuid IS NULL OR e.geofence_id = $6)"
        " AND ($7::text IS NULL OR e.event_type = $7)",
        [query_uuid(request, "vehicle_id"), query_uuid(request, "geofence_id"), et],
        "e.time DESC")


_VEHICLE_EVENTS = f"""(SELECT ve.time, ve.tenant_id, ve.vehicle_id, v.code AS vehicle_code,
  ve.event_type, ve.severity, ve.started_at, ve.ended_at, ve.duration_s, ve.value, ve.threshold,
  ST_Y(ve.location::geometry) AS lat, ST_X(ve.location::geometry) AS lon, ve.geofence_id,
  ve.details, {ACK_COLUMNS} FROM tenant.vehicle_events ve JOIN vehicles v ON v.id = ve.vehicle_id
  {acked("vehicle", "ve")} WHERE ve.tenant_id = $1) e"""  # noqa: S608 - constant text


async def vehicle_events(request: web.Request) -> web.Response:
    """GET /api/vehicle-events: detector events (overspeed, harsh braking, ...)."""
    return await paged_events(
        request, _VEHICLE_EVENTS,
        "AND ($5::uuid IS NULL OR e.vehicle_id = $5) AND ($6::text IS NULL OR e.event_type = $6)"
        " AND ($7::text IS NULL OR e.severity = $7)",
        [query_uuid(request, "vehicle_id"), query_text(request, "event_type"),
         query_choice(request, "severity", ("info", "warning", "critical"))],
        "e.time DESC")


_ANOMALIES = f"""(SELECT a.time, a.tenant_id, a.vehicle_id, v.code AS vehicle_code, a.signal,
  a.kind, a.value, a.score, a.threshold, a.is_event, a.details, {ACK_COLUMNS}
  FROM tenant.anomalies a JOIN vehicles v ON v.id = a.vehicle_id {acked("anomaly", "a")}
  WHERE a.tenant_id = $1) e"""  # noqa: S608 - constant text


async def anomalies(request: web.Request) -> web.Response:
    """GET /api/anomalies: anomaly scores; `events_only=true` for fired anomalies."""
    return await paged_events(
        request, _ANOMALIES,
        "AND ($5::uuid IS NULL OR e.vehicle_id = $5) AND ($6::text IS NULL OR e.signal = $6)"
        " AND ($7::boolean IS NULL OR e.is_event = $7)",
        [query_uuid(request, "vehicle_id"), query_text(request, "signal"),
         query_bool(request, "events_only")],
        "e.time DESC")


async def trips(request: web.Request) -> web.Response:
    """GET /api/vehicles/{id}/trips?date=YYYY-MM-DD: trips and stops of one UTC day."""
    user = current_user(request)
    vid = path_uuid(request)
    day = query_date(request, "date") or datetime.now(UTC).date()
    start = datetime.combine(day, time(0), tzinfo=UTC)
    # The day after 9999-12-31 is past datetime's range; the bound is then its last instant.
    end = start + timedelta(days=1) if day < date.max else datetime.max.replace(tzinfo=UTC)
    async with tenant_transaction(request) as conn:
        await visible_vehicle(conn, user, vid)
        rows = await conn.fetch(
            "SELECT time, speed_kph, ignition, lat_deg AS lat, lon_deg AS lon, odometer_km "
            "FROM tenant.telemetry "
            "WHERE tenant_id = $1 AND vehicle_id = $2 AND time >= $3 AND time < $4 "
            "ORDER BY time", user.tenant_id, vid, start, end)
    found, stops = detect_trips(Point(r["time"], r["speed_kph"], r["ignition"], r["lat"],
                                      r["lon"], r["odometer_km"]) for r in rows)
    return json_response({"vehicle_id": vid, "date": day.isoformat(),
                          "trips": [t.as_json() for t in found],
                          "stops": [s.as_json() for s in stops]})


_DASHBOARD_SQL = {
    "vehicles_by_status": "SELECT status, count(*)::int FROM vehicles WHERE tenant_id = $1 "
                          "GROUP BY status",
    "vehicle_events_24h": "SELECT event_type, count(*)::int FROM tenant.vehicle_events WHERE "
                          "tenant_id = $1 AND time > now() - interval '24 hours' GROUP BY 1",
    "geofence_events_24h": "SELECT event_type, count(*)::int FROM tenant.geofence_events WHERE "
                           "tenant_id = $1 AND time > now() - interval '24 hours' GROUP BY 1",
}


async def dashboard(request: web.Request) -> web.Response:
    """GET /api/dashboard: fleet metrics, cached in Redis for an hour (the seed's policy)."""
    user = current_user(request)

    async def compute() -> dict[str, Any]:
        out: dict[str, Any] = {"computed_at": datetime.now(UTC).isoformat()}
        async with tenant_transaction(request) as conn:
            for name, sql in _DASHBOARD_SQL.items():
                out[name] = {r[0]: r[1] for r in await conn.fetch(sql, user.tenant_id)}
            live = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE time > now() - interval '5 minutes')::int AS "
                "online, count(*) FILTER (WHERE time > now() - interval '5 minutes' AND moving)"
                "::int AS moving, avg(fuel_level_pct)::real AS avg_fuel_level_pct "
                "FROM vehicle_state WHERE tenant_id = $1", user.tenant_id)
            out["anomalies_24h"] = await conn.fetchval(
                "SELECT count(*)::int FROM tenant.anomalies WHERE tenant_id = $1 AND is_event "
                "AND time > now() - interval '24 hours'", user.tenant_id)
            # From the 1-minute rollup: as fresh as its last refresh (about a minute behind).
            distance = await conn.fetchval(
                "SELECT sum(distance_km) FROM tenant.telemetry_1m WHERE tenant_id = $1 "
                "AND bucket >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
                user.tenant_id)
            out["distance_today_km"] = round(float(distance or 0.0), 1)
        out["vehicles_total"] = sum(out["vehicles_by_status"].values())
        out.update(dict(live.items()) if live else {})
        return out

    ttl_s = request.app[SECTION_KEY].dashboard_cache_ttl_s
    body = await cached(request, "dashboard", user.tenant_id, variant="", ttl_s=ttl_s,
                        compute=compute)
    return web.Response(body=body, content_type="application/json")


# The seed's "Vehicles" read column applies to everything recorded about vehicles.
TIME = (Param("from", schema={"type": "string", "format": "date-time"},
              description="RFC 3339; default: `to` minus the route's default span. "
              "from < to and at most 366 days before it, else 422."),
        Param("to", schema={"type": "string", "format": "date-time"},
              description="RFC 3339; default: now"))
SERIES = (*TIME, Param("resolution", schema={"enum": list(RESOLUTIONS)}),
          Param("max_points", schema={"type": "integer", "minimum": 2, "maximum": 10000}))
PAGE = {"$ref": "#/components/schemas/Page"}
ROUTES = [
    ApiRoute("GET", "/api/vehicles/{id}/telemetry", telemetry_history,
             "Telemetry over a time range, downsampled", "telemetry", ROLES,
             params=(ID_PARAM, *SERIES)),
    ApiRoute("GET", "/api/vehicles/{id}/track", track, "Track as a GeoJSON LineString",
             "telemetry", ROLES, params=(ID_PARAM, *SERIES)),
    ApiRoute("GET", "/api/vehicles/{id}/trips", trips, "Trips and stops of one UTC day",
             "telemetry", ROLES, params=(ID_PARAM, Param("date", schema={"type": "string",
                                                                 "format": "date"}))),
    ApiRoute("GET", "/api/positions", positions, "Latest position and signals per vehicle",
             "telemetry", ROLES,
             params=(Param("vehicle_id", schema=UUID_SCHEMA),
                     Param("bbox", schema={"type": "string", "pattern": BBOX_PATTERN},
                           description="west,south,east,north in degrees (RFC 7946 order); "
                           "west > east crosses the antimeridian, -180,-90,180,90 is the "
                           "whole world. Longitudes -180..180, latitudes -90..90, south < "
                           "north and west != east, else 422."))),
    ApiRoute("GET", "/api/geofence-events", geofence_events, "Geofence events", "events", ROLES,
             params=(*PAGE_PARAMS, *TIME, Param("vehicle_id", schema=UUID_SCHEMA),
                     Param("geofence_id", schema=UUID_SCHEMA),
                     Param("event_type", schema={"enum": ["enter", "exit", "dwell",
                                                          "crossing"]})), response=PAGE),
    ApiRoute("GET", "/api/vehicle-events", vehicle_events, "Vehicle events", "events", ROLES,
             params=(*PAGE_PARAMS, *TIME, Param("vehicle_id", schema=UUID_SCHEMA),
                     Param("event_type"),
                     Param("severity", schema={"enum": ["info", "warning", "critical"]})),
             response=PAGE),
    ApiRoute("GET", "/api/anomalies", anomalies, "Anomalies", "events", ROLES,
             params=(*PAGE_PARAMS, *TIME, Param("vehicle_id", schema=UUID_SCHEMA), Param("signal"),
                     Param("events_only", schema={"type": "boolean"})), response=PAGE),
    ApiRoute("GET", "/api/dashboard", dashboard, "Fleet metrics (cached 1 h)", "dashboard",
             roles_except("driver")),
]
