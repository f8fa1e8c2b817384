"""The one logging set-up of every process: one JSON object per line with the same fields
everywhere (time, level, service, logger, message, and a record's `extra={"fields": {...}}`),
or plain text when stderr is a terminal (someone is reading it)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats records as JSON; `extra={"fields": {...}}` adds structured fields."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "service": self.service, "logger": record.name,
            "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(service: str, *, json_lines: bool | None = None,
                      level: int | str = logging.INFO) -> None:
    """Install the root handler on stderr: JSON lines (`json_lines` True), plain text (False),
    or, by default, JSON unless stderr is a terminal. `service` names the process (`api`,
    `stream`, `gateway`, ...) in every JSON line."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else
                         logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
