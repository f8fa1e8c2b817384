"""Root exceptions of the deploy package."""

from __future__ import annotations


class DeployError(Exception):
    """Root of every error raised by the deploy package."""


class SettingsError(DeployError):
    """A configuration value is missing or has the wrong type or range."""


class ServiceError(DeployError):
    """A local service could not be started, stopped or reached."""
