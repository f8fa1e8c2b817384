"""The detectors and THE order they run in, for every reading of a vehicle.

`DETECTORS` below is the one list: a reader finds the pipeline order here and nowhere else
(Traccar's `ProcessingHandler`, made a table). Geofencing runs first because other detectors
use what it found (the fences a reading is in); anomaly scoring runs last. Each entry is a
factory, so the list stays readable in one place while detectors get their own settings.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from stream.detectors.base import Detector
from stream.detectors.battery import LowBatteryDetector
from stream.detectors.config import DetectorSettings
from stream.detectors.coolant import CoolantOverheatDetector
from stream.detectors.dtc import DtcDetector
from stream.detectors.fuel import FuelDetector
from stream.detectors.harsh import HarshDrivingDetector
from stream.detectors.idling import IdlingDetector
from stream.detectors.ignition import IgnitionDetector
from stream.detectors.offline import OfflineDetector, wall_clock_ms
from stream.detectors.overspeed import IndexProvider, OverspeedDetector

__all__ = ["DETECTORS", "BuildContext", "Detector", "DetectorSettings", "build_detectors"]

if TYPE_CHECKING:
    from stream.anomaly import AnomalySettings

GEOFENCE_MODULE: Final = "stream.detectors.geofence"


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Everything a detector factory may use."""

    settings: DetectorSettings
    index_provider: IndexProvider
    geofence_settings: Any | None
    anomaly_settings: AnomalySettings | None
    clock: Callable[[], int]


def _geofence(ctx: BuildContext) -> Detector | None:
    """The geofence detector, when its module exists (it is developed alongside)."""
    if importlib.util.find_spec(GEOFENCE_MODULE) is None:
        return None
    # Imported lazily: a missing module means "not built yet", but any error inside it must
    # surface, so only the existence check is guarded.
    geofence = importlib.import_module(GEOFENCE_MODULE)
    settings = ctx.geofence_settings
    if settings is None:
        settings = importlib.import_module("geo.config").GeofenceSettings()
    detector: Detector = geofence.GeofenceDetector(ctx.index_provider, settings)
    return detector


def _anomaly(ctx: BuildContext) -> Detector:
    """The anomaly scorer (imported here: stream.anomaly itself uses stream.detectors.common)."""
    from stream.anomaly import AnomalyScorer

    return AnomalyScorer(ctx.anomaly_settings)


DETECTORS: Final[tuple[tuple[str, Callable[[BuildContext], Detector | None]], ...]] = (
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
"""(name, factory) in running order; a factory returning None leaves its detector out."""


def build_detectors(settings: DetectorSettings, index_provider: IndexProvider,
                    geofence_settings: Any | None = None,
                    anomaly_settings: AnomalySettings | None = None,
                    *, clock: Callable[[], int] = wall_clock_ms) -> list[Detector]:
    """Instantiate `DETECTORS` in order.

    `index_provider()` returns the current geo index (geofence detector and per-fence speed
    limits); `clock` is processing time in Unix ms (device offline), replaceable in tests.
    Each detector's `name` is the key of its state in a vehicle's snapshot.
    """
    ctx = BuildContext(settings, index_provider, geofence_settings, anomaly_settings, clock)
    built = [factory(ctx) for _, factory in DETECTORS]
    detectors = [d for d in built if d is not None]
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detector names must be unique, got {names}")
    return detectors
