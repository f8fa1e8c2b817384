"""Acknowledgements of alerts: a dispatcher marks a geofence event, a vehicle event or a
fired anomaly as seen, with an optional comment (table `event_acks`, migration 0024).

`POST /api/event-acks` stores one acknowledgement per event, audited as `event.ack` (the
success row in the same transaction as the acknowledgement, so neither exists without the
other), and then publishes a `core.live.LiveAck` on the tenant's live channel: every
dispatcher whose WebSocket watches the vehicle gets it in the `acks` of a batch frame.
`GET /api/event-acks` lists them by event time. The event lists of `api.routes.history`
show each event's acknowledgement (`acked_at`, `acked_by_email`, `ack_comment`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from api import audit
from api.auth import MANAGERS, ROLES, AuthUser, current_user
from api.cache import REDIS_KEY
from api.db import tenant_transaction
from api.errors import ApiError, Conflict, NotFound, ValidationError
from api.params import UUID_SCHEMA, parse_time, query_uuid, read_json
from api.routes.common import db_error, json_response
from api.routes.history import EVENT_TABLES, TIME, EventTable, paged_events
from api.routing import PAGE_PARAMS, ApiRoute, Param
from core.live import EventKind, LiveAck, encode_live, live_channel

log = logging.getLogger("api.acks")

ACTION = "event.ack"
"""The audit action of an acknowledgement, refused ones included."""
RESOURCE = "event_ack"
"""The audit resource type; a stored acknowledgement's id is the resource id."""
COMMENT_MAX_CHARS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Comment = Annotated[str, msgspec.Meta(max_length=COMMENT_MAX_CHARS,
                                      description=f"At most {COMMENT_MAX_CHARS} characters.")]
EventTime = Annotated[str, msgspec.Meta(
    extra_json_schema={"format": "date-time"},
    description="The event's time as its list shows it (RFC 3339, as the query parameters "
                "`from`/`to`), matched exactly.")]
EventType = Annotated[str, msgspec.Meta(
    min_length=1, description="The event's event_type; for an anomaly its signal.")]
FenceId = Annotated[UUID | None, msgspec.Meta(
    description="The geofence of a geofence event (required for them); null or left out for "
                "the other kinds.")]


class AckIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An acknowledgement of one event, named as the event lists show it."""

    # A geofence event is named with its fence, the other kinds without one (their events
    # have none that identifies them): stated here, enforced by `_fence_of`.
    json_schema_extra: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"kind": {"const": "geofence"}}, "required": ["kind"]},
        "then": {"required": ["geofence_id"], "properties": {"geofence_id": UUID_SCHEMA}},
        "else": {"properties": {"geofence_id": {"type": "null"}}}}

    kind: EventKind
    vehicle_id: UUID
    time: EventTime
    event_type: EventType
    geofence_id: FenceId = None
    comment: Comment | None = None


# The acknowledgement as every answer shows it (a subquery `e` for `paged_events`: tenant_id,
# vehicle_id and time are what it filters on; tenant_id is not shown).
_ACKS = """(SELECT k.event_time AS time, k.tenant_id, k.id, k.kind, k.vehicle_id,
  v.code AS vehicle_code, k.event_type, k.geofence_id, k.acked_by, u.email AS acked_by_email,
  k.acked_at, k.comment
  FROM event_acks k JOIN vehicles v ON v.id = k.vehicle_id AND v.tenant_id = k.tenant_id
  LEFT JOIN users u ON u.id = k.acked_by WHERE k.tenant_id = $1) e"""
_ONE = f"SELECT * FROM {_ACKS} WHERE e.id = $2"  # noqa: S608 - constant text
_OF_EVENT = (f"SELECT * FROM {_ACKS} WHERE e.kind = $2 AND e.vehicle_id = $3 "  # noqa: S608
             "AND e.time = $4 AND e.event_type = $5 AND e.geofence_id IS NOT DISTINCT FROM $6")
_INSERT = """
INSERT INTO event_acks (tenant_id, kind, vehicle_id, event_time, event_type, geofence_id,
                        acked_by, comment)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT ON CONSTRAINT event_acks_one_per_event DO NOTHING
RETURNING id
"""


def _find_event_sql(table: EventTable) -> str:
    """The code of the event's vehicle when the event exists in the tenant, else no row."""
    sql = (f"SELECT v.code FROM {table.view} e JOIN vehicles v ON v.id = e.vehicle_id "  # noqa: S608 - names from EVENT_TABLES
           "AND v.tenant_id = e.tenant_id WHERE e.tenant_id = $1 AND e.vehicle_id = $2 "
           f"AND e.time = $3 AND e.{table.type_column} = $4")
    if table.by_fence:
        sql += " AND e.geofence_id = $5"
    if table.fired_only:
        sql += " AND e.is_event"
    return sql + " LIMIT 1"


_FIND_EVENT = {kind: _find_event_sql(table) for kind, table in EVENT_TABLES.items()}


def _fence_of(body: AckIn) -> UUID | None:
    """The geofence that names the event: required for geofence events, refused for others
    (their identity has none, so it could only make a second acknowledgement of one event).
    The document states the rule (`AckIn.json_schema_extra`), so breaking it is a 400."""
    if EVENT_TABLES[body.kind].by_fence:
        if body.geofence_id is None:
            raise ValidationError("a geofence event is named with its geofence_id",
                                  field="geofence_id")
        return body.geofence_id
    if body.geofence_id is not None:
        raise ValidationError(f"geofence_id names geofence events only, not a {body.kind} "
                              "event", field="geofence_id")
    return None


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch, exact (no float rounding)."""
    return (t - _EPOCH) // timedelta(milliseconds=1)


async def _store(request: web.Request, user: AuthUser, body: AckIn, event_time: datetime,
                 fence: UUID | None) -> tuple[dict[str, Any], str]:
    """Insert the acknowledgement and its audit row; returns it and the vehicle's code."""
    args: list[Any] = [user.tenant_id, body.vehicle_id, event_time, body.event_type]
    if fence is not None:
        args.append(fence)
    identity = (user.tenant_id, body.kind, body.vehicle_id, event_time, body.event_type, fence)
    async with tenant_transaction(request) as conn:
        code = await conn.fetchval(_FIND_EVENT[body.kind], *args)
        if code is None:
            raise NotFound("no such event")
        try:
            ack_id = await conn.fetchval(_INSERT, *identity, user.id, body.comment)
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
        if ack_id is None:
            existing = await conn.fetchrow(_OF_EVENT, *identity)
            shown = msgspec.to_builtins(_shown(existing)) if existing else None
            raise Conflict("this event is acknowledged already", details={"ack": shown})
        row = await conn.fetchrow(_ONE, user.tenant_id, ack_id)
        ack = _shown(row)
        await audit.record(conn, ACTION, RESOURCE, str(ack_id), "success",
                           {**_audit_details(request, body), "status": 201},
                           tenant_id=user.tenant_id, user_id=user.id, ip=request.remote,
                           user_agent=request.headers.get("User-Agent"))
    return ack, str(code)


def _shown(row: asyncpg.Record | None) -> dict[str, Any]:
    if row is None:
        raise RuntimeError("the acknowledgement just read is gone")
    out = dict(row.items())
    out.pop("tenant_id", None)
    return out


def _audit_details(request: web.Request, body: AckIn | None) -> dict[str, Any]:
    """What the audit row says about the request: the event it names, as sent."""
    details: dict[str, Any] = {"path": request.path}
    if body is not None:
        details.update(kind=body.kind, vehicle_id=str(body.vehicle_id), time=body.time,
                       event_type=body.event_type,
                       geofence_id=None if body.geofence_id is None else str(body.geofence_id))
    return details


async def _publish(request: web.Request, user: AuthUser, ack: dict[str, Any], code: str
                   ) -> None:
    """Tell every dispatcher of the tenant; the acknowledgement is stored either way, and a
    client that misses this message sees it in the event lists."""
    message = LiveAck(
        vehicle_id=str(ack["vehicle_id"]), code=code, t_ms=epoch_ms(ack["time"]),
        kind=ack["kind"], event_type=ack["event_type"],
        geofence_id=None if ack["geofence_id"] is None else str(ack["geofence_id"]),
        acked_by_email=ack["acked_by_email"] or user.email,
        acked_at_ms=epoch_ms(ack["acked_at"]), comment=ack["comment"])
    try:
        await request.app[REDIS_KEY].publish(live_channel(user.tenant_id), encode_live(message))
    except (RedisError, OSError) as exc:
        log.warning("acknowledgement %s stored but not published live: %s", ack["id"], exc)


async def acknowledge(request: web.Request) -> web.Response:
    """POST /api/event-acks: acknowledge one event (404 when the tenant has no such event,
    409 with the existing acknowledgement when it has one)."""
    user = current_user(request)
    body: AckIn | None = None
    try:
        body = await read_json(request, AckIn)
        event_time = parse_time(body.time, "time")
        fence = _fence_of(body)
        ack, code = await _store(request, user, body, event_time, fence)
    except ApiError as err:
        # Refused acknowledgements are audited too (AU-2), each in its own transaction.
        await audit.record(request, ACTION, RESOURCE, None, "failure",
                           {**_audit_details(request, body), "status": err.status,
                            "code": err.code}, error_message=err.message)
        raise
    await _publish(request, user, ack, code)
    return json_response(ack, status=201)


async def list_acks(request: web.Request) -> web.Response:
    """GET /api/event-acks: acknowledgements of events in `from`/`to` (default: the last
    day), newest event first; drivers see those of their vehicles."""
    return await paged_events(request, _ACKS, "AND ($5::uuid IS NULL OR e.vehicle_id = $5)",
                              [query_uuid(request, "vehicle_id")], "e.time DESC, e.id")


_NULLABLE_UUID = {"oneOf": [UUID_SCHEMA, {"type": "null"}]}
_NULLABLE_TEXT = {"type": ["string", "null"]}
ACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "vehicle_id", "vehicle_code", "time", "event_type",
                 "geofence_id", "acked_by", "acked_by_email", "acked_at", "comment"],
    "properties": {
        "id": UUID_SCHEMA, "kind": {"enum": ["geofence", "vehicle", "anomaly"]},
        "vehicle_id": UUID_SCHEMA, "vehicle_code": {"type": "string"},
        "time": {"type": "string", "format": "date-time",
                 "description": "The event's time"},
        "event_type": {"type": "string"}, "geofence_id": _NULLABLE_UUID,
        "acked_by": UUID_SCHEMA, "acked_by_email": _NULLABLE_TEXT,
        "acked_at": {"type": "string", "format": "date-time"}, "comment": _NULLABLE_TEXT}}
ACK_PAGE = {"allOf": [{"$ref": "#/components/schemas/Page"}, {"properties": {
    "items": {"type": "array", "items": ACK_SCHEMA}}}]}

# "Dispatch" in the seed's matrix: admin and fleet_manager acknowledge; whoever reads the
# events reads their acknowledgements (drivers: of their vehicle).
ROUTES = [
    ApiRoute("POST", "/api/event-acks", acknowledge,
             "Acknowledge an event (geofence event, vehicle event or fired anomaly)", "events",
             MANAGERS, body=AckIn, response=ACK_SCHEMA, status=201, resource=RESOURCE,
             audit=False),
    ApiRoute("GET", "/api/event-acks", list_acks, "Acknowledgements of events", "events",
             ROLES, params=(*PAGE_PARAMS, *TIME, Param("vehicle_id", schema=UUID_SCHEMA)),
             response=ACK_PAGE),
]
