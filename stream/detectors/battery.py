"""Low battery voltage, sustained: cranking dips and single bad readings do not count."""

from __future__ import annotations

from stream.detectors.common import SustainedRule, SustainedThresholdDetector
from stream.detectors.config import DetectorSettings
from stream.model import Severity, VehicleEventType


class LowBatteryDetector(SustainedThresholdDetector):
    """Emits `low_battery` once the voltage has stayed below `low_battery_v` for
    `low_battery_min_s`; re-armed when it rises above threshold + `low_battery_recover_v`.

    The event is emitted as soon as the condition is sustained (an alert, not a post-mortem):
    `started_ms` is when the voltage went low, `value` the lowest voltage so far.
    """

    name = "low_battery"
    event_type: VehicleEventType = "low_battery"
    severity: Severity = "warning"

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(
            SustainedRule(threshold=settings.low_battery_v, above=False,
                          min_s=settings.low_battery_min_s,
                          rearm_margin=settings.low_battery_recover_v,
                          max_gap_s=settings.sustain_max_gap_s),
            lambda sample: sample.battery_v)
