"""Root exceptions of the edge gateway."""

from __future__ import annotations

from core.errors import FleetError, SettingsError


class GatewayError(FleetError):
    """Root of every error raised by the edge gateway."""


class ConfigError(GatewayError, SettingsError):
    """A gateway setting is invalid."""


class SpoolError(GatewayError):
    """The on-disk store-and-forward spool cannot be opened or written."""


class SourceError(GatewayError):
    """A vehicle source (OBD-II adapter, CAN interface, GPS receiver) cannot be used."""


class DbcError(GatewayError):
    """A DBC file is missing or cannot be parsed."""
