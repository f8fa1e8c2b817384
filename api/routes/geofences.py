"""Geofences as GeoJSON Features (RFC 7946): polygons, circles (centre + radius_m), corridors.

Geometry is validated with shapely before it reaches PostGIS, so an invalid shape gets a 400
that says where (``explain_validity``: "Self-intersection[lon lat]").
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec
from aiohttp import web
from shapely.errors import ShapelyError
from shapely.geometry import shape
from shapely.validation import explain_validity

from api.auth import MANAGERS, current_user, roles_except
from api.db import tenant_transaction
from api.errors import Unprocessable, ValidationError
from api.params import path_uuid, query_bool, query_choice, query_text, read_json
from api.routes.common import db_error, json_response
from api.routes.crud import TenantResource, crud_routes
from api.routing import AUDIT_RESOURCE_ID, Param

Kind = Literal["polygon", "circle", "corridor"]
KINDS = ("polygon", "circle", "corridor")
_GEOMETRY_FOR_KIND = {"polygon": ("Polygon", "MultiPolygon"), "circle": ("Point",),
                      "corridor": ("LineString",)}


INT4_MAX = 2**31 - 1
Metres = Annotated[float, msgspec.Meta(ge=0.01, le=20_000_000, description="metres")]
"""1 cm (below, PostGIS's buffer arithmetic underflows) to half the Earth's circumference."""
SpeedKph = Annotated[float, msgspec.Meta(ge=1, le=1000, description="km/h")]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=INT4_MAX, description="seconds")]
SecondsOrZero = Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX, description="seconds")]

_LON = {"type": "number", "minimum": -180, "maximum": 180}
_LAT = {"type": "number", "minimum": -90, "maximum": 90}
_POSITION = {"type": "array", "prefixItems": [_LON, _LAT], "minItems": 2, "maxItems": 2}
_RING = {"type": "array", "items": _POSITION, "minItems": 4}
GEOMETRY_SCHEMA: dict[str, Any] = {"oneOf": [
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"const": "Point"}, "coordinates": _POSITION}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"const": "LineString"},
        "coordinates": {"type": "array", "items": _POSITION, "minItems": 2}}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"const": "Polygon"},
        "coordinates": {"type": "array", "items": _RING, "minItems": 1}}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"const": "MultiPolygon"},
        "coordinates": {"type": "array", "minItems": 1, "items": {
            "type": "array", "items": _RING, "minItems": 1}}}},
], "description": "GeoJSON geometry (RFC 7946), [longitude, latitude]. Rings must be "
                  "closed and the shape valid (OGC), and the type must fit `kind` "
                  "(Point: circle, LineString: corridor), else 422 with the reason."}
Geometry = Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=GEOMETRY_SCHEMA)]


class FenceProperties(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Feature properties of a geofence."""

    name: str
    kind: Kind | None = None
    """Default: polygon for (Multi)Polygon, circle for Point, corridor for LineString."""
    radius_m: Metres | None = None
    corridor_width_m: Metres | None = None
    category: str | None = None
    speed_limit_kph: SpeedKph | None = None
    dwell_s: Seconds | None = None
    debounce_s: SecondsOrZero | None = None
    """How long a change must hold before it is an event; null: the fleet's setting
    (`geofence.debounce_s`, docs/geofencing.md)."""
    alert_on_entry: bool = False
    alert_on_exit: bool = False
    alert_recipients: list[str] = msgspec.field(default_factory=list)
    is_active: bool = True


FeatureId = Annotated[str | None, msgspec.Meta(extra_json_schema={
    "readOnly": True,
    "description": "The server issues a geofence's id (a UUID, in the answer); an id sent "
                   "with the Feature is accepted and ignored, as RFC 7946 allows any."})]


class FenceFeature(msgspec.Struct, kw_only=True):
    """A GeoJSON Feature carrying one geofence."""

    type: Literal["Feature"]
    geometry: Geometry
    properties: FenceProperties
    id: FeatureId = None


def _positions(coords: Any) -> list[tuple[float, float]]:
    if isinstance(coords, list | tuple) and coords and isinstance(coords[0], int | float):
        # The column is 2D (geography(Geometry, 4326)): exactly [longitude, latitude].
        if len(coords) != 2 or not all(
                isinstance(c, int | float) and not isinstance(c, bool) for c in coords):
            raise ValidationError("a position is [longitude, latitude]",
                                  field="geometry.coordinates")
        return [(float(coords[0]), float(coords[1]))]
    out: list[tuple[float, float]] = []
    for c in coords if isinstance(coords, list | tuple) else []:
        out.extend(_positions(c))
    return out


def _check_shape_of_coordinates(gtype: object, coords: Any, positions: list[Any]) -> None:
    """Rings closed with >= 4 positions, lines of >= 2: what GEOS needs to build the shape."""
    if gtype in ("Polygon", "MultiPolygon"):
        polys: list[Any] = [coords] if gtype == "Polygon" else list(coords or [])
        for poly in polys:
            for ring in poly or []:
                if len(ring) < 4 or ring[0] != ring[-1]:
                    raise Unprocessable(
                        "each polygon ring needs >= 4 positions and must be closed "
                        "(first position == last, RFC 7946 3.1.6)", field="geometry.coordinates")
    if gtype == "LineString" and len(positions) < 2:
        raise ValidationError("a LineString needs at least 2 positions (RFC 7946 3.1.4)",
                              field="geometry.coordinates")


def validate_feature(feature: FenceFeature) -> tuple[str, dict[str, Any]]:
    """Check kind, coordinates and validity; returns (kind, geometry).

    Raises ValidationError (400) where the document's schema is violated, Unprocessable
    (422) for what it cannot state: closed rings, OGC validity, the kind's geometry type.
    """
    geom = feature.geometry
    gtype = geom.get("type")
    props = feature.properties
    kind: str | None = props.kind or next(
        (k for k, types in _GEOMETRY_FOR_KIND.items() if gtype in types), None)
    if kind is None or gtype not in _GEOMETRY_FOR_KIND[kind]:
        allowed = ", ".join(t for ts in _GEOMETRY_FOR_KIND.values() for t in ts)
        raise Unprocessable(f"geometry type {gtype!r} does not fit kind {kind!r} "
                              f"(allowed: {allowed})", field="geometry.type")
    coords = geom.get("coordinates")
    positions = _positions(coords)
    if not positions:
        raise ValidationError("geometry has no coordinates", field="geometry.coordinates")
    for lon, lat in positions:
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180
                and -90 <= lat <= 90):
            raise ValidationError(f"position [{lon}, {lat}] is outside WGS84 longitude/latitude"
                                  " (RFC 7946 order is [longitude, latitude])",
                                  field="geometry.coordinates")
    _check_shape_of_coordinates(gtype, coords, positions)
    try:
        shp = shape(geom)
    except (ValueError, TypeError, AttributeError, IndexError, ShapelyError) as exc:
        # Whatever GEOS cannot build is the client's geometry, never a server error.
        raise Unprocessable(f"invalid geometry: {exc}", field="geometry") from exc
    if not shp.is_valid:
        raise Unprocessable(f"invalid geometry: {explain_validity(shp)}", field="geometry",
                            details={"reason": explain_validity(shp)})
    if kind == "circle" and not (props.radius_m and props.radius_m > 0):
        raise Unprocessable("a circle needs radius_m > 0", field="properties.radius_m")
    if kind == "corridor" and not (props.corridor_width_m and props.corridor_width_m > 0):
        raise Unprocessable("a corridor needs corridor_width_m > 0",
                            field="properties.corridor_width_m")
    return kind, geom


_SELECT = ("id, name, kind, ST_AsGeoJSON(geometry::geometry, 7)::jsonb AS geometry, radius_m, "
           "corridor_width_m, category, speed_limit_kph, dwell_s, debounce_s, alert_on_entry, "
           "alert_on_exit, alert_recipients, is_active, created_at, updated_at")
_PROPS = ("name", "kind", "radius_m", "corridor_width_m", "category", "speed_limit_kph",
          "dwell_s", "debounce_s", "alert_on_entry", "alert_on_exit", "alert_recipients",
          "is_active", "created_at", "updated_at")


def feature_json(row: asyncpg.Record) -> dict[str, Any]:
    """A geofence row as a GeoJSON Feature."""
    return {"type": "Feature", "id": str(row["id"]), "geometry": row["geometry"],
            "properties": {k: row[k] for k in _PROPS}}


# The seed's "Routes" column: admin/fleet_manager CRUD; driver and viewer read; technician none.
# A Feature in and out, a FeatureCollection as the list, PUT to replace: the body handlers are
# this module's; reading one and deleting are the declaration's.
GEOFENCES = TenantResource(
    noun="geofence", path="/api/geofences", table="geofences", tag="geofences",
    schema="GeofenceFeature", columns=("id", "geometry", *_PROPS), select=_SELECT,
    to_json=feature_json, order_by="r.name", read_roles=roles_except("technician"),
    write_roles=MANAGERS)


async def list_geofences(request: web.Request) -> web.Response:
    """GET /api/geofences: a FeatureCollection."""
    user = current_user(request)
    kind = query_choice(request, "kind", KINDS)
    active = query_bool(request, "active")
    category = query_text(request, "category")
    async with tenant_transaction(request) as conn:
        rows = await conn.fetch(
            f"SELECT {_SELECT} FROM geofences WHERE tenant_id = $1 "  # noqa: S608
            "AND ($2::text IS NULL OR kind = $2) AND ($3::boolean IS NULL OR is_active = $3) "
            "AND ($4::text IS NULL OR category = $4) ORDER BY name",
            user.tenant_id, kind, active, category)
    return json_response({"type": "FeatureCollection",
                          "features": [feature_json(r) for r in rows]})


async def insert_geofence(conn: asyncpg.Connection, tenant_id: UUID, feature: FenceFeature
                          ) -> asyncpg.Record:
    """Validate and insert one geofence Feature (also used by the demo seeding)."""
    kind, geom = validate_feature(feature)
    p = feature.properties
    try:
        return await conn.fetchrow(
            "INSERT INTO geofences (tenant_id, name, kind, geometry, radius_m, corridor_width_m, "  # noqa: S608 - constant column list
            "category, speed_limit_kph, dwell_s, debounce_s, alert_on_entry, alert_on_exit, "
            "alert_recipients, is_active) VALUES ($1, $2, $3, "
            "ST_SetSRID(ST_GeomFromGeoJSON($4), 4326)::geography, $5, $6, $7, $8, $9, $10, "
            f"$11, $12, $13, $14) RETURNING {_SELECT}",
            tenant_id, p.name, kind, msgspec.json.encode(geom).decode(),
            p.radius_m if kind == "circle" else None,
            p.corridor_width_m if kind == "corridor" else None, p.category, p.speed_limit_kph,
            p.dwell_s, p.debounce_s, p.alert_on_entry, p.alert_on_exit, p.alert_recipients,
            p.is_active)
    except asyncpg.PostgresError as exc:
        raise _fence_error(exc) from exc


def _fence_error(exc: asyncpg.PostgresError) -> Exception:
    """PostGIS refuses some position and size pairs when it computes the fence's zone (a
    buffer whose best projection does not hold the point: "Point outside of projection
    domain"): a rule of the geometry, not of the schema, so a 422 naming the geometry."""
    if isinstance(exc, asyncpg.InternalServerError):
        return Unprocessable(f"the fence's zone cannot be computed: {exc}", field="geometry")
    return db_error(exc)


async def create_geofence(request: web.Request) -> web.Response:
    """POST /api/geofences: body is a GeoJSON Feature."""
    user = current_user(request)
    feature = await read_json(request, FenceFeature)
    async with tenant_transaction(request) as conn:
        row = await insert_geofence(conn, user.tenant_id, feature)
    request[AUDIT_RESOURCE_ID] = str(row["id"])
    return json_response(feature_json(row), status=201)


async def replace_geofence(request: web.Request) -> web.Response:
    """PUT /api/geofences/{id}: replace geometry and properties."""
    user = current_user(request)
    fid = path_uuid(request)
    feature = await read_json(request, FenceFeature)
    kind, geom = validate_feature(feature)
    p = feature.properties
    async with tenant_transaction(request) as conn:
        try:
            row = await conn.fetchrow(
                "UPDATE geofences SET name = $3, kind = $4, "  # noqa: S608 - constant column list
                "geometry = ST_SetSRID(ST_GeomFromGeoJSON($5), 4326)::geography, radius_m = $6,"
                " corridor_width_m = $7, category = $8, speed_limit_kph = $9, dwell_s = $10, "
                "debounce_s = $11, alert_on_entry = $12, alert_on_exit = $13, "
                "alert_recipients = $14, is_active = $15 WHERE id = $1 AND tenant_id = $2 "
                f"RETURNING {_SELECT}",
                fid, user.tenant_id, p.name, kind, msgspec.json.encode(geom).decode(),
                p.radius_m if kind == "circle" else None,
                p.corridor_width_m if kind == "corridor" else None, p.category,
                p.speed_limit_kph, p.dwell_s, p.debounce_s, p.alert_on_entry, p.alert_on_exit,
                p.alert_recipients, p.is_active)
        except asyncpg.PostgresError as exc:
            raise _fence_error(exc) from exc
    if row is None:
        raise GEOFENCES.not_found()
    return json_response(feature_json(row))


ROUTES = crud_routes(
    GEOFENCES, operations=("list", "create", "get", "update", "delete"),
    handlers={"list": list_geofences, "create": create_geofence, "update": replace_geofence},
    overrides={
        "list": {"summary": "Geofences as a FeatureCollection",
                 "params": (Param("kind", schema={"enum": list(KINDS)}),
                            Param("active", schema={"type": "boolean"}), Param("category")),
                 "response": {"$ref": "#/components/schemas/FeatureCollection"}},
        "create": {"summary": "Create a geofence from a Feature", "body": FenceFeature},
        "update": {"method": "PUT", "summary": "Replace a geofence", "body": FenceFeature}})
