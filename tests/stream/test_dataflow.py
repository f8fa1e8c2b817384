"""In-process dataflow tests (TestingSource/TestingSink): dedupe, reorder, late, rejects."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSource

from stream.config import DataflowSettings
from stream.envelopes import EmittedEvent, RejectRow, StoredSample, VehicleStateRow
from tests.stream.helpers import T0, VEHICLE_ID, CountingDetector, Inbox, run_flow, sample


def stored_seqs(out: list) -> list[int]:
    return [x.reading.sample.seq for x in out if isinstance(x, StoredSample)]


def test_in_order_samples_are_stored_and_detected() -> None:
    inbox = Inbox()
    det = CountingDetector()
    out = run_flow([inbox.telemetry([sample(1, 0), sample(2, 1)]),
                    inbox.telemetry([sample(3, 2)])], detectors=[det])
    assert stored_seqs(out) == [1, 2, 3]
    assert det.seen == [1, 2, 3]
    assert len([x for x in out if isinstance(x, EmittedEvent)]) == 3
    states = [x for x in out if isinstance(x, VehicleStateRow)]
    assert states[-1].sample.seq == 3
    assert states[-1].ref.vehicle_id == VEHICLE_ID


def test_duplicates_are_dropped_once_seen() -> None:
    inbox = Inbox()
    det = CountingDetector()
    out = run_flow([inbox.telemetry([sample(1, 0), sample(2, 1)]),
                    inbox.telemetry([sample(2, 1), sample(3, 2)]),
                    inbox.telemetry([sample(1, 0)])], detectors=[det])
    assert stored_seqs(out) == [1, 2, 3]
    assert det.seen == [1, 2, 3]


def test_out_of_order_samples_are_reordered_by_seq() -> None:
    inbox = Inbox()
    det = CountingDetector()
    out = run_flow([inbox.telemetry([sample(1, 0)]), inbox.telemetry([sample(3, 2)]),
                    inbox.telemetry([sample(2, 1)])], detectors=[det])
    assert det.seen == [1, 2, 3]
    assert stored_seqs(out) == [1, 2, 3]


def test_a_gap_is_released_when_the_watermark_passes_and_late_samples_skip_detectors() -> None:
    inbox = Inbox()
    det = CountingDetector()
    out = run_flow([inbox.telemetry([sample(1, 0)]),
                    inbox.telemetry([sample(3, 2)]),   # seq 2 missing: held
                    inbox.telemetry([sample(4, 10)]),  # watermark 10 s - 5 s passes t=2
                    inbox.telemetry([sample(2, 1)])],  # arrives after: late
                   detectors=[det],
                   dataflow=DataflowSettings(reorder_window_ms=5000, min_hold_ms=0))
    assert det.seen == [1, 3, 4]
    assert stored_seqs(out) == [1, 3, 4, 2]


def test_message_rejects_carry_a_reason() -> None:
    inbox = Inbox()
    msgs = [
        inbox.raw("fleet/v1/acme/v1/telemetry", b"{not json"),
        inbox.raw("fleet/v1/acme/v1/telemetry", b'{"v": 7, "source": "gps", "samples": []}'),
        inbox.raw("fleet/v1/acme/v1/telemetry", b'{"v": 1, "source": "gps", "samples": []}'),
        inbox.raw("fleet/v9/acme/v1/telemetry", b"{}"),
        inbox.raw("nope/x", b"{}"),
        inbox.telemetry([sample(1, 0)], vehicle="nobody"),
        inbox.telemetry([sample(1, 0)], vehicle="v2"),
        inbox.telemetry([sample(1, 0)], vehicle="v3"),
    ]
    out = run_flow(msgs)
    reasons = sorted(x.reason for x in out if isinstance(x, RejectRow))
    assert reasons == sorted(["malformed", "unknown_version", "invalid", "unknown_version",
                              "bad_topic", "unknown_vehicle", "inactive_vehicle",
                              "vehicle_not_in_tenant"])
    assert all(isinstance(x, RejectRow) for x in out)
    by_reason = {x.reason: x for x in out if isinstance(x, RejectRow)}
    assert by_reason["malformed"].payload == b"{not json"
    assert by_reason["malformed"].offset == 1
    assert by_reason["malformed"].sample_seq == -1


def test_gps_filters_strip_positions_and_drop_bad_times() -> None:
    inbox = Inbox()
    det = CountingDetector()
    out = run_flow([inbox.telemetry([
        sample(1, 0),
        sample(2, 1, gps_fix=0, rpm=900.0),                 # invalid fix: position stripped
        sample(3, 2, lat_deg=53.5),                        # 111 km in 1 s: implied speed
        sample(4, 3, hdop=50.0),                           # hdop too high
        sample(5, 4, lat_deg=0.0, lon_deg=0.0),            # null island
        sample(6, 4 + 3600),                               # an hour in the future
    ], received_ms=T0 + 5000)], detectors=[det])
    rejects = {x.sample_seq: x.detail.split(":")[0] for x in out if isinstance(x, RejectRow)}
    assert rejects == {2: "invalid_fix", 3: "implied_speed", 4: "hdop", 5: "zero_position",
                       6: "future"}
    assert 6 not in stored_seqs(out)
    stored = {x.reading.sample.seq: x.reading for x in out if isinstance(x, StoredSample)}
    assert stored[2].sample.rpm == 900.0
    assert not stored[2].has_fix
    assert not stored[3].has_fix
    assert not stored[4].has_fix
    assert not stored[5].has_fix
    assert stored[1].has_fix


def test_exact_duplicate_fix_under_a_new_seq_is_dropped() -> None:
    inbox = Inbox()
    a = sample(1, 0)
    b = sample(2, 0, lat_deg=a.lat_deg, lon_deg=a.lon_deg)
    out = run_flow([inbox.telemetry([a, b])])
    assert stored_seqs(out) == [1]
    assert [x.detail.split(":")[0] for x in out if isinstance(x, RejectRow)] == ["duplicate"]


def test_restart_resumes_dedupe_and_detector_state(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    inbox = Inbox()
    first = inbox.telemetry([sample(1, 0), sample(2, 1)])
    second = inbox.telemetry([sample(3, 2)])
    redelivered = inbox.telemetry([sample(3, 2), sample(4, 3)])
    messages: list = [first, second, TestingSource.ABORT(), redelivered]
    out1: list = []
    run_flow(messages, detectors=[CountingDetector()], recovery_dir=tmp_path, out=out1)
    out2: list = []
    run_flow(messages, detectors=[CountingDetector()], recovery_dir=tmp_path, out=out2)
    counts1 = [x.event.value for x in out1 if isinstance(x, EmittedEvent)]
    counts2 = [x.event.value for x in out2 if isinstance(x, EmittedEvent)]
    assert counts1 == [1.0, 2.0, 3.0]  # aborted before the redelivery
    # The resumed run knows seqs 1-3 (no repeat events) and its counter continues at 4.
    assert counts2 == [4.0]
    assert stored_seqs(out2) == [4]


def test_a_gap_that_never_fills_is_released_by_the_processing_time_hold() -> None:
    inbox = Inbox()
    det = CountingDetector()
    now = time.time_ns() // 1_000_000
    msgs: list = [inbox.telemetry([sample(1, 0)], received_ms=T0),
                  inbox.telemetry([sample(3, 2)], received_ms=T0),  # seq 2 never comes
                  TestingSource.PAUSE(timedelta(seconds=1.5))]
    out = run_flow(msgs, detectors=[det],
                   dataflow=DataflowSettings(min_hold_ms=50, max_hold_ms=300),
                   clock_ms=None)
    assert now > 0
    assert stored_seqs(out) == [1, 3]
    assert det.seen == [1, 3]
