"""Root exception of the geo package."""

from __future__ import annotations

from core.errors import FleetError


class GeoError(FleetError):
    """Root of every error raised by the geo package."""


class FenceGeometryError(GeoError):
    """A fence's geometry is missing, of the wrong type, or invalid for its kind."""


class FenceStoreError(GeoError):
    """Fences could not be loaded from, or watched in, the database."""
