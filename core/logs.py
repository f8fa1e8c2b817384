"""The one logging set-up of every process: one JSON object per line with the same fields
everywhere (time, level, service, logger, message, and a record's `extra={"fields": {...}}`),
or plain text when stderr is a terminal (someone is reading it).

A logger that writes a line per event at a high rate (the API's access log) hands its lines
to logging in batches (`BatchedLog`): one record carries many entries, each formatted as its
own line with its own time, and the handler writes them with one call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

ENTRIES_ATTR = "entries"
"""A record's batch: a list of (time in epoch s, fields) pairs, one output line each."""

_encoder = msgspec.json.Encoder(enc_hook=str)


def _entries(record: logging.LogRecord) -> list[tuple[float, Mapping[str, Any]]] | None:
    entries = getattr(record, ENTRIES_ATTR, None)
    return entries if isinstance(entries, list) else None


class JsonFormatter(logging.Formatter):
    """Formats records as JSON; `extra={"fields": {...}}` adds structured fields."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line, or one per entry of a batch."""
        head = {"level": record.levelname.lower(), "service": self.service,
                "logger": record.name, "message": record.getMessage()}
        entries = _entries(record)
        if entries is not None:
            # Per entry only its time and fields: the rest is the batch's (a batch has no
            # exception).
            return _encoder.encode_lines(
                [{"time": self._time(created), **head, **fields} for created, fields in entries]
            ).decode().rstrip("\n")
        out: dict[str, object] = {"time": self._time(record.created), **head}
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # Values JSON has no type for (UUIDs are native to msgspec) are written as str().
        return _encoder.encode(out).decode()

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC with milliseconds; the text up to the second is computed once a
        second (a batch holds hundreds of lines of the same second)."""
        second = int(created)
        micros = round((created - second) * 1_000_000)  # as datetime rounds
        if micros >= 1_000_000:
            second, micros = second + 1, 0
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{micros // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """Plain text for a reader at a terminal; a batch's entries as one line each with their
    fields as `key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """`TEXT_FORMAT`, or one such line per entry of a batch."""
        entries = _entries(record)
        if entries is None:
            return super().format(record)
        message = record.getMessage()
        lines = []
        for created, fields in entries:
            stamp = time.strftime(self.default_time_format, time.localtime(created))
            millis = int(created * 1000) % 1000
            pairs = " ".join(f"{key}={value}" for key, value in fields.items())
            lines.append(f"{stamp},{millis:03d} {record.levelname} {record.name}: {message} "
                         f"{pairs}")
        return "\n".join(lines)


class BatchedLog:
    """Entries of one logger and message, handed to logging once per `interval_s` (or when
    `max_entries` wait) as one record.

    For lines written at a request's rate: a record per line costs its LogRecord, its
    formatting and a write to stderr with a flush, which was a fifth of a cached API
    request's time. An entry keeps the time it was added. Entries not yet handed over are
    lost if the process is killed (at most `interval_s` of them); `flush()` at shutdown.
    Without a running event loop every entry is handed over at once.
    """

    def __init__(self, logger: logging.Logger, message: str, *, interval_s: float = 0.25,
                 max_entries: int = 1000, level: int = logging.INFO) -> None:
        self.logger = logger
        self.message = message
        self.interval_s = interval_s
        self.max_entries = max_entries
        self.level = level
        self._entries: list[tuple[float, Mapping[str, Any]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, fields: Mapping[str, Any]) -> None:
        """Queue one line; it is handed to logging within `interval_s`."""
        if not self.logger.isEnabledFor(self.level):
            return
        self._entries.append((time.time(), fields))
        if len(self._entries) >= self.max_entries:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._timer = loop.call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        """Hand every queued entry to logging now, as one record."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entries:
            return
        entries, self._entries = self._entries, []
        self.logger.log(self.level, self.message, extra={ENTRIES_ATTR: entries})


def configure_logging(service: str, *, json_lines: bool | None = None,
                      level: int | str = logging.INFO) -> None:
    """Install the root handler on stderr: JSON lines (`json_lines` True), plain text (False),
    or, by default, JSON unless stderr is a terminal. `service` names the process (`api`,
    `stream`, `gateway`, ...) in every JSON line."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
