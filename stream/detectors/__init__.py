"""The detectors and THE order they run in, for every reading of a vehicle.

`DETECTORS` below is the one list: a reader finds the pipeline order here and nowhere else
(Traccar's `ProcessingHandler`, made a table). Geofencing runs first because other detectors
use what it found (the fences a reading is in); anomaly scoring runs last. Each entry is a
factory, so the list stays readable in one place while detectors get their own settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from geo.config import GeofenceSettings
from geo.index import FenceIndex
from stream.detectors.anomaly import AnomalyScorer, AnomalySettings
from stream.detectors.base import Detector
from stream.detectors.battery import LowBatteryDetector
from stream.detectors.config import DetectorSettings
from stream.detectors.coolant import CoolantOverheatDetector
from stream.detectors.dtc import DtcDetector
from stream.detectors.fuel import FuelDetector
from stream.detectors.geofence import GeofenceDetector
from stream.detectors.harsh import HarshDrivingDetector
from stream.detectors.idling import IdlingDetector
from stream.detectors.ignition import IgnitionDetector
from stream.detectors.offline import OfflineDetector, wall_clock_ms
from stream.detectors.overspeed import IndexProvider, OverspeedDetector

__all__ = ["DETECTORS", "BuildContext", "Detector", "DetectorSettings", "build_detectors"]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Everything a detector factory may use."""

    settings: DetectorSettings
    index_provider: IndexProvider
    geofence_settings: GeofenceSettings | None
    anomaly_settings: AnomalySettings | None
    clock: Callable[[], int]


def _geofence(ctx: BuildContext) -> Detector:
    """The geofence detector (first: the others use the fences a reading is in)."""
    # The stream's provider returns the geo index itself (a FenceIndex, which is also what
    # overspeed reads its per-fence limits from).
    provider = cast("Callable[[], FenceIndex]", ctx.index_provider)
    return GeofenceDetector(provider, ctx.geofence_settings or GeofenceSettings())


def _anomaly(ctx: BuildContext) -> Detector:
    """The anomaly scorer."""
    return AnomalyScorer(ctx.anomaly_settings)


DETECTORS: Final[tuple[tuple[str, Callable[[BuildContext], Detector]], ...]] = (
    ("geofence", _geofence),
    ("ignition", lambda c: IgnitionDetector(c.settings)),
    ("overspeed", lambda c: OverspeedDetector(c.settings, c.index_provider)),
    ("harsh_driving", lambda c: HarshDrivingDetector(c.settings)),
    ("idling", lambda c: IdlingDetector(c.settings)),
    ("dtc", lambda c: DtcDetector(c.settings)),
    ("low_battery", lambda c: LowBatteryDetector(c.settings)),
    ("coolant_overheat", lambda c: CoolantOverheatDetector(c.settings)),
    ("fuel", lambda c: FuelDetector(c.settings)),
    ("device_offline", lambda c: OfflineDetector(c.settings, c.clock)),
    ("anomaly", _anomaly),
)
"""(name, factory) in running order."""


def build_detectors(settings: DetectorSettings, index_provider: IndexProvider,
                    geofence_settings: GeofenceSettings | None = None,
                    anomaly_settings: AnomalySettings | None = None,
                    *, clock: Callable[[], int] = wall_clock_ms) -> list[Detector]:
    """Instantiate `DETECTORS` in order.

    `index_provider()` returns the current geo index (geofence detector and per-fence speed
    limits); `clock` is processing time in Unix ms (device offline), replaceable in tests.
    Each detector's `name` is the key of its state in a vehicle's snapshot.
    """
    ctx = BuildContext(settings, index_provider, geofence_settings, anomaly_settings, clock)
    detectors = [factory(ctx) for _, factory in DETECTORS]
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detector names must be unique, got {names}")
    return detectors
