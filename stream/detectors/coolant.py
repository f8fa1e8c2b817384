"""Coolant overheat, sustained: one event per overheating episode."""

from __future__ import annotations

from stream.detectors.common import SustainedRule, SustainedThresholdDetector
from stream.detectors.config import DetectorSettings
from stream.model import Severity, VehicleEventType


class CoolantOverheatDetector(SustainedThresholdDetector):
    """Emits `coolant_overheat` (critical) once coolant has stayed at or above
    `coolant_overheat_c` for `coolant_overheat_min_s`; re-armed after cooling below
    threshold - `coolant_recover_c`. `value` is the hottest reading so far.
    """

    name = "coolant_overheat"
    event_type: VehicleEventType = "coolant_overheat"
    severity: Severity = "critical"

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(
            SustainedRule(threshold=settings.coolant_overheat_c, above=True,
                          min_s=settings.coolant_overheat_min_s,
                          rearm_margin=settings.coolant_recover_c,
                          max_gap_s=settings.sustain_max_gap_s),
            lambda sample: sample.coolant_c)
