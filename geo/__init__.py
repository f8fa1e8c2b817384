"""Geofencing: fences, a vectorised multi-tenant index, loading and live reload from PostGIS.

`geo.fence.Fence` is one fence; `geo.index.FenceIndex` answers "which fences contain these
positions" for a batch at a time; `geo.store` loads fences from the `geofences` table and
keeps an index current through LISTEN/NOTIFY. The per-vehicle enter/exit/dwell/crossing logic
lives in `stream.detectors.geofence`. docs/geofencing.md explains the semantics.
"""
