"""The one logging set-up (core/logs.py)."""

from __future__ import annotations

import json
import logging

import pytest

from core.logs import configure_logging


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
