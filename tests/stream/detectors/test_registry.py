"""The one ordered detector list."""

from __future__ import annotations

import importlib.util
import pickle

import msgspec
import pytest

from stream.detectors import DETECTORS, build_detectors
from stream.detectors.anomaly import AnomalySettings
from stream.detectors.config import DetectorSettings


class NoLimits:
    def speed_limit_kph(self, fence_ids: frozenset[object]) -> float | None:
        return None


def test_order_geofence_first_anomaly_last() -> None:
    names = [name for name, _ in DETECTORS]
    assert names[0] == "geofence"
    assert names[-1] == "anomaly"
    built = [d.name for d in build_detectors(DetectorSettings(), NoLimits)]
    has_geofence = importlib.util.find_spec("stream.detectors.geofence") is not None
    assert built[0] == ("geofence" if has_geofence else "ignition")
    assert built[-1] == "anomaly"
    assert len(set(built)) == len(built)


def test_every_initial_state_pickles() -> None:
    for det in build_detectors(DetectorSettings(), NoLimits):
        state = det.initial_state()
        assert pickle.loads(pickle.dumps(state)) == state or det.name == "geofence"  # noqa: S301


def test_anomaly_settings_are_passed_through() -> None:
    settings = AnomalySettings(signals=["coolant_c"])
    [scorer] = [d for d in build_detectors(DetectorSettings(), NoLimits,
                                           anomaly_settings=settings) if d.name == "anomaly"]
    assert scorer._specs[0].name == "coolant_c"  # type: ignore[attr-defined]


def test_settings_validate_units_and_ranges() -> None:
    settings = msgspec.convert({"overspeed_limit_kph": "90", "idle_min_s": 120},
                               DetectorSettings, strict=False)
    assert settings.overspeed_limit_kph == 90.0
    with pytest.raises(msgspec.ValidationError, match="harsh_brake_mps2"):
        msgspec.convert({"harsh_brake_mps2": 0}, DetectorSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown"):
        msgspec.convert({"overspeed_limt_kph": 90}, DetectorSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown anomaly signals"):
        msgspec.convert({"signals": ["coolant"]}, AnomalySettings)
