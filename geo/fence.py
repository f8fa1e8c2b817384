"""One geofence: its identity, rules and the area it covers.

`zone` is the area the fence covers in WGS84 longitude/latitude, densified along great
circles so that a planar point-in-polygon test agrees with PostGIS geography. Circles and
corridors are buffered in metres in a local metric frame (`frame`), never in degrees. A fence
loaded from the database takes its zone from the generated `geofences.zone` column, so the
stream and SQL (`ST_Covers(zone, point)`) agree on every position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import shapely
from shapely.geometry.base import BaseGeometry

from geo.config import GeofenceSettings
from geo.errors import FenceGeometryError
from geo.geodesy import LocalFrame, densify_geodesic

FenceKind = Literal["polygon", "circle", "corridor"]
FENCE_KINDS: tuple[FenceKind, ...] = ("polygon", "circle", "corridor")
_DEFAULTS = GeofenceSettings()


@dataclass(frozen=True, slots=True, eq=False)
class Fence:
    """A geofence as the index and the detector use it (compare fences by `id`)."""

    id: UUID
    tenant_id: UUID
    name: str
    kind: FenceKind
    shape: BaseGeometry
    """As drawn, lon/lat: polygon/multipolygon, circle centre point or corridor centre line."""
    zone: BaseGeometry
    """Area covered, lon/lat Polygon or MultiPolygon, edges densified along great circles."""
    frame: LocalFrame
    """Local metric frame at the fence (metres east/north); `zone_m()` gives the zone in it."""
    radius_m: float | None = None
    corridor_width_m: float | None = None
    speed_limit_kph: float | None = None
    dwell_s: float | None = None
    """A dwell event fires after this many seconds inside; None: no dwell events."""
    debounce_s: float | None = None
    """Seconds a new state must hold before enter/exit counts; None: the settings' default."""
    alert_on_entry: bool = False
    alert_on_exit: bool = False
    category: str | None = None

    def zone_m(self) -> BaseGeometry:
        """The zone in the fence's local metric frame (metres)."""
        return self.frame.geometry_to_local(self.zone)

    @classmethod
    def polygon(cls, *, id: UUID, tenant_id: UUID, name: str, geometry: BaseGeometry,
                settings: GeofenceSettings = _DEFAULTS, **rules: object) -> Fence:
        """A polygon or multipolygon fence (holes allowed) from lon/lat geometry."""
        if not isinstance(geometry, shapely.Polygon | shapely.MultiPolygon):
            raise FenceGeometryError(f"polygon fence {name!r} needs a (Multi)Polygon, "
                                     f"got {geometry.geom_type}")
        return cls._make(id, tenant_id, name, "polygon", geometry, geometry, settings, rules)

    @classmethod
    def circle(cls, *, id: UUID, tenant_id: UUID, name: str, lon_deg: float, lat_deg: float,
               radius_m: float, settings: GeofenceSettings = _DEFAULTS,
               **rules: object) -> Fence:
        """A circle of `radius_m` metres around a lon/lat centre."""
        if not radius_m > 0:
            raise FenceGeometryError(f"circle fence {name!r} needs radius_m > 0")
        centre = shapely.Point(lon_deg, lat_deg)
        frame = LocalFrame.at(lon_deg, lat_deg)
        disc = shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=settings.circle_quad_segs)
        zone = frame.geometry_to_lonlat(disc)
        return cls._make(id, tenant_id, name, "circle", centre, zone, settings,
                         {**rules, "radius_m": float(radius_m)})

    @classmethod
    def corridor(cls, *, id: UUID, tenant_id: UUID, name: str, line: BaseGeometry,
                 width_m: float, settings: GeofenceSettings = _DEFAULTS,
                 **rules: object) -> Fence:
        """A corridor: a lon/lat centre line buffered by half of `width_m` on each side."""
        if not isinstance(line, shapely.LineString) or not width_m > 0:
            raise FenceGeometryError(f"corridor fence {name!r} needs a LineString and width_m > 0")
        frame = _frame_for(line)
        band = frame.geometry_to_local(line).buffer(
            width_m / 2, quad_segs=settings.corridor_quad_segs, cap_style="round",
            join_style="round")
        zone = frame.geometry_to_lonlat(band)
        return cls._make(id, tenant_id, name, "corridor", line, zone, settings,
                         {**rules, "corridor_width_m": float(width_m)})

    @classmethod
    def from_zone(cls, *, id: UUID, tenant_id: UUID, name: str, kind: FenceKind,
                  shape: BaseGeometry, zone: BaseGeometry,
                  settings: GeofenceSettings = _DEFAULTS, **rules: object) -> Fence:
        """A fence whose covered area was computed elsewhere (the database's `zone` column)."""
        if kind not in FENCE_KINDS:
            raise FenceGeometryError(f"fence {name!r} has unknown kind {kind!r}")
        return cls._make(id, tenant_id, name, kind, shape, zone, settings, rules)

    @classmethod
    def _make(cls, id: UUID, tenant_id: UUID, name: str, kind: FenceKind,  # noqa: PLR0917
              shape: BaseGeometry, zone: BaseGeometry, settings: GeofenceSettings,
              rules: dict[str, object]) -> Fence:
        if not isinstance(zone, shapely.Polygon | shapely.MultiPolygon) or zone.is_empty:
            raise FenceGeometryError(f"fence {name!r}: zone must be a non-empty (Multi)Polygon, "
                                     f"got {zone.geom_type}")
        if not zone.is_valid:
            # An invalid ring (self-touching, bow-tie) would make containment ambiguous; repair
            # it the way PostGIS ST_MakeValid does rather than reject a drawn fence.
            zone = shapely.make_valid(zone)
            polys = [g for g in shapely.get_parts(zone)
                     if isinstance(g, shapely.Polygon) and not g.is_empty]
            if not polys:
                raise FenceGeometryError(f"fence {name!r}: zone has no area")
            zone = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
        zone = densify_geodesic(zone, settings.densify_max_edge_m)
        try:
            return cls(id=id, tenant_id=tenant_id, name=name, kind=kind, shape=shape, zone=zone,
                       frame=_frame_for(zone), **rules)  # type: ignore[arg-type]
        except TypeError as exc:
            raise FenceGeometryError(f"fence {name!r}: {exc}") from exc


def _frame_for(geom: BaseGeometry) -> LocalFrame:
    minx, miny, maxx, maxy = geom.bounds
    return LocalFrame.at((minx + maxx) / 2, (miny + maxy) / 2)
