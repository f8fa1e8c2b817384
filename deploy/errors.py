"""Root exceptions of the deploy package (the command line, demo and local services)."""

from __future__ import annotations

from core.errors import FleetError


class DeployError(FleetError):
    """Root of every error raised by the deploy package."""


class ServiceError(DeployError):
    """A local service could not be started, stopped or reached."""
