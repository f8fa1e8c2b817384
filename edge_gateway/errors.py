"""Root exceptions of the edge gateway."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised by the edge gateway."""


class ConfigError(GatewayError):
    """A gateway setting is invalid."""
