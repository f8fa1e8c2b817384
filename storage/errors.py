"""Root exceptions of the storage package."""

from __future__ import annotations

from core.errors import FleetError


class StorageError(FleetError):
    """Root of every error raised by the storage package."""


class MigrationError(StorageError):
    """A migration could not be applied, or the recorded history does not match the files."""
