"""The stream's one root exception; library errors are wrapped at the boundary."""

from __future__ import annotations

from core.errors import FleetError


class StreamError(FleetError):
    """Root of every error the stream raises on purpose."""


class StreamConfigError(StreamError):
    """Settings that cannot work (checked at start-up)."""


class StreamSourceError(StreamError):
    """The MQTT source or its inbox could not do its job (broker or database down)."""


class SinkError(StreamError):
    """The database or Redis sink could not write a batch."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (psycopg's carry a multi-line context), or its
    type's name when it has none: what a log line or a dead letter's reason quotes."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]
