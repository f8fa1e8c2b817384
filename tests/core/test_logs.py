"""The one logging set-up (core/logs.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.logs import BatchedLog, JsonFormatter, TextFormatter, configure_logging


def test_every_process_logs_the_same_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """#14: one logging set-up; JSON lines (stderr is not a terminal here) with the same
    fields for the API, the stream and the gateway."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for service in ("api", "stream", "gateway"):
            configure_logging(service)
            logging.getLogger(f"{service}.x").info("hello %s", service,
                                                   extra={"fields": {"n": 1}})
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(r["service"], r["logger"], r["message"], r["n"]) for r in lines] == [
            ("api", "api.x", "hello api", 1), ("stream", "stream.x", "hello stream", 1),
            ("gateway", "gateway.x", "hello gateway", 1)]
        assert {frozenset(r) for r in lines} == {
            frozenset({"time", "level", "service", "logger", "message", "n"})}
        configure_logging("stream", json_lines=False)
        logging.getLogger("stream.x").warning("plain")
        assert capsys.readouterr().err.rstrip().endswith("WARNING stream.x: plain")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


class _Capture(logging.Handler):
    """Keeps each formatted record as the handler was given it (one write per record)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.writes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.writes.append(self.format(record))


def _batched_logger(name: str, formatter: logging.Formatter) -> tuple[logging.Logger, _Capture]:
    logger = logging.getLogger(name)
    capture = _Capture(formatter)
    logger.handlers[:] = [capture]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, capture


async def test_a_batch_is_one_write_of_one_line_per_entry() -> None:
    """#13: the access log is handed to logging in batches; each entry keeps its own time
    and fields, and reads exactly like a record logged on its own."""
    logger, capture = _batched_logger("test.batched.json", JsonFormatter("api"))
    batch = BatchedLog(logger, "request", max_entries=3, interval_s=60)
    user = uuid.uuid4()
    batch.add({"status": 200, "user_id": user})
    await asyncio.sleep(0.002)
    batch.add({"status": 404, "user_id": None})
    assert capture.writes == []  # written when full, flushed, or after interval_s
    batch.add({"status": 401, "user_id": None})
    assert len(capture.writes) == 1
    lines = [json.loads(line) for line in capture.writes[0].split("\n")]
    assert [(r["status"], r["user_id"]) for r in lines] == [
        (200, str(user)), (404, None), (401, None)]
    assert {r["message"] for r in lines} == {"request"}
    assert {r["logger"] for r in lines} == {"test.batched.json"}
    assert lines[0]["time"] < lines[1]["time"]
    single = json.loads(JsonFormatter("api").format(logging.LogRecord(
        "test.batched.json", logging.INFO, __file__, 1, "request", None, None)))
    assert set(single) | {"status", "user_id"} == set(lines[0])
    batch.flush()
    assert len(capture.writes) == 1  # nothing left to write


async def test_a_batch_is_written_within_its_interval() -> None:
    """With an event loop, entries wait at most `interval_s` for their write."""
    logger, capture = _batched_logger("test.batched.timer", JsonFormatter("api"))
    batch = BatchedLog(logger, "request", interval_s=0.05)
    for status in (200, 201):
        batch.add({"status": status})
    assert capture.writes == []
    await asyncio.sleep(0.2)
    assert [[json.loads(x)["status"] for x in w.split("\n")] for w in capture.writes] == [
        [200, 201]]


def test_a_disabled_logger_keeps_no_entries() -> None:
    """A logger set above the batch's level neither queues nor writes."""
    logger, capture = _batched_logger("test.batched.off", JsonFormatter("api"))
    logger.setLevel(logging.WARNING)
    batch = BatchedLog(logger, "request", max_entries=1)
    batch.add({"status": 200})
    batch.flush()
    assert capture.writes == []


def test_without_an_event_loop_each_entry_is_written_at_once() -> None:
    """No loop, no timer that would write later: nothing waits."""
    logger, capture = _batched_logger("test.batched.sync", JsonFormatter("api"))
    batch = BatchedLog(logger, "request", interval_s=60)
    batch.add({"status": 200})
    assert [json.loads(w)["status"] for w in capture.writes] == [200]


async def test_plain_text_shows_each_entry_with_its_fields() -> None:
    """At a terminal a batch reads as one line per entry, fields as key=value."""
    logger, capture = _batched_logger("test.batched.text", TextFormatter())
    batch = BatchedLog(logger, "request", max_entries=2, interval_s=60)
    batch.add({"method": "GET", "status": 200})
    batch.add({"method": "POST", "status": 400})
    lines = capture.writes[0].split("\n")
    assert [line.split(" INFO ", 1)[1] for line in lines] == [
        "test.batched.text: request method=GET status=200",
        "test.batched.text: request method=POST status=400"]


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_line_times_read_as_datetime_writes_them(created: float) -> None:
    """The formatter computes the text up to the second once a second; every time must still
    read exactly as `datetime.isoformat` (milliseconds, UTC) writes it, rounding included."""
    formatter = JsonFormatter("api")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    for at in (created, created + 0.0004, float(int(created)) + 0.9999996):
        record.created = at
        assert json.loads(formatter.format(record))["time"] == \
            datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
