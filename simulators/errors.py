"""Root exception of the simulators."""

from __future__ import annotations

from core.errors import FleetError


class SimulatorError(FleetError):
    """Root of every error raised by the simulators."""


class FaultSpecError(SimulatorError):
    """A fault specification (``KIND@START_S+DURATION_S``) cannot be parsed."""


class RouteError(SimulatorError):
    """A route (GeoJSON or city area) is unusable."""


class FrontEndError(SimulatorError):
    """A device front-end (ELM327, CAN, SLCAN, NMEA) failed to start or serve."""
