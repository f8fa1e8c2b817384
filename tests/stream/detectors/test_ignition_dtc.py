"""Ignition changes and new DTCs."""

from __future__ import annotations

from stream.detectors.config import DetectorSettings
from stream.detectors.dtc import DtcDetector
from stream.detectors.ignition import IgnitionDetector

from .readings import reading, run, secs, vehicle_events


def test_ignition_changes_only() -> None:
    readings = [reading(0, ignition=False), reading(1, ignition=False), reading(2, ignition=True),
                reading(3, speed_kph=10.0), reading(4, ignition=True), reading(5, ignition=False)]
    _, events = run(IgnitionDetector(DetectorSettings()), readings, pickle_every=1)
    assert [(e.event_type, secs(e.t_ms)) for e in vehicle_events(events)] == [
        ("ignition_on", 2), ("ignition_off", 5)]


def test_first_reading_is_a_baseline_not_a_change() -> None:
    _, events = run(IgnitionDetector(DetectorSettings()), [reading(0, ignition=True)])
    assert events == []


def test_ignition_from_rpm_when_no_ignition_signal() -> None:
    readings = [reading(0, rpm=0.0), reading(1, rpm=250.0), reading(2, rpm=800.0),
                reading(3, rpm=0.0)]
    _, events = run(IgnitionDetector(DetectorSettings(engine_on_rpm=300.0)), readings)
    assert [e.event_type for e in vehicle_events(events)] == ["ignition_on", "ignition_off"]


def test_dtc_new_codes_only_and_cleared_codes_count_again() -> None:
    readings = [
        reading(0, dtcs=[]),
        reading(1, dtcs=["P0301"]),
        reading(2, dtcs=["P0301"]),
        reading(3),                          # no DTC list: says nothing
        reading(4, dtcs=["P0301", "P0217", "P0420"]),
        reading(5, dtcs=[]),                 # cleared
        reading(6, dtcs=["P0301"]),          # reported again: new again
    ]
    _, events = run(DtcDetector(DetectorSettings()), readings, pickle_every=2)
    got = [(secs(e.t_ms), e.details["codes"]) for e in vehicle_events(events, "dtc_new")]
    assert got == [(1, ["P0301"]), (4, ["P0217", "P0420"]), (6, ["P0301"])]
    assert vehicle_events(events)[1].value == 2


def test_codes_in_first_report_are_new() -> None:
    _, events = run(DtcDetector(DetectorSettings()), [reading(0, dtcs=["U0100"])])
    assert [e.details["codes"] for e in vehicle_events(events)] == [["U0100"]]
