"""Settings of geofencing: the index grid, the detector's debounce and the reload watcher.

The stream process embeds `GeofenceSettings` in its root settings (section `geofence`), so
every key can be set in TOML or as ``FLEET_GEOFENCE_<KEY>``. Units are in the names.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class GeofenceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Geofence index, detector and reload settings (docs/geofencing.md)."""

    # -- detector ------------------------------------------------------------------------------
    debounce_s: NonNegative = 0.0
    """Minimum seconds a new inside/outside state must hold before enter/exit counts, for fences
    that do not set their own `debounce_s` (the column is NULL, or a fence built in code
    without one)."""
    min_fixes: Annotated[int, Meta(ge=1)] = 2
    """Consecutive fixes that must agree on the new state before enter/exit counts; with the
    default of 2 a single stray fix across a boundary never flaps a fence."""
    crossing_events: bool = True
    """Emit `crossing` when two consecutive fixes straddle a fence with no fix inside it."""
    crossing_max_gap_s: Positive = 600.0
    """No crossing is inferred across a gap between fixes longer than this: the vehicle may
    have gone anywhere meanwhile."""

    # -- index ---------------------------------------------------------------------------------
    grid_cell_m: Annotated[float, Meta(ge=5)] = 30.0
    """Edge of the index's pre-classification grid cells, metres (north-south). Positions in a
    cell wholly inside or outside a fence need no exact test; smaller cells mean fewer exact
    tests but more memory."""
    max_cells_per_fence: Annotated[int, Meta(ge=1)] = 250_000
    """Fences whose bounding box spans more grid cells than this (regions, countries) skip the
    grid and are tested through an STRtree instead, so memory stays bounded."""
    densify_max_edge_m: Positive = 100.0
    """Fence edges longer than this are split along the great circle, so the planar test in
    longitude/latitude agrees with PostGIS geography (great-circle edges) to millimetres."""
    circle_quad_segs: Annotated[int, Meta(ge=1)] = 16
    """Segments per quarter circle when a circle fence is built here (as the migration does)."""
    corridor_quad_segs: Annotated[int, Meta(ge=1)] = 8
    """Segments per quarter circle of a corridor's round ends and joins (PostGIS default)."""

    # -- reload --------------------------------------------------------------------------------
    reload_poll_s: Positive = 30.0
    """Fallback: compare the fences' version this often even when no NOTIFY arrived (a lost
    connection or a change made with triggers disabled)."""
    reload_settle_s: NonNegative = 0.2
    """After a NOTIFY, wait this long for more before reloading, so a bulk edit of many fences
    causes one reload, not one per row."""
    reconnect_backoff_s: Positive = 2.0
    """Wait before reconnecting after the watcher lost its database connection."""
    connect_timeout_s: Positive = 10.0
    """Database connect timeout of the loader and the watcher."""
