"""The root error of fleet-telemetry: every package's root error derives from it, so the
command line can tell an error of ours (one clear line) from a bug (a traceback)."""

from __future__ import annotations


class FleetError(Exception):
    """Root of every error raised by fleet-telemetry's packages."""


class SettingsError(FleetError):
    """A configuration value is missing or has the wrong type or range."""
