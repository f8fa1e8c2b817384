"""Root exceptions of the storage package."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error raised by the storage package."""


class MigrationError(StorageError):
    """A migration could not be applied, or the recorded history does not match the files."""
