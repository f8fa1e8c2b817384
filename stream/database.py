"""The stream's PostgreSQL connection: opened when needed, reopened and retried while the
database is unreachable.

The inbox (`stream.mqtt_source`), the writer (`stream.sink.DatabaseWriter`) and the rollup
refresher (`stream.sink.RollupRefresher`) each hold a `RetryingConnection` of their own (they
run in different threads, and a connection carries one transaction at a time), so all three
connect with the same settings, wait out an outage with the same back-off
(`stream.config.DB_RETRY_DELAYS_S`, capped at 1 s), log it the same way and turn the
database's errors into the stream's at this one boundary.

Only `psycopg.OperationalError` is retried: the connection refused, lost or timed out (a
database restart, a network cut). Any other error is about the statement or its data, which
trying again cannot change: it comes out at once as the caller's `StreamError`, and deciding
what to do with a refused row (the sink sets it aside) is the caller's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from stream.config import DB_RETRY_DELAYS_S, DB_RETRY_LOG_EVERY
from stream.errors import StreamError, first_line

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class RetryingConnection:
    """One PostgreSQL connection, reopened and retried while the database is unreachable."""

    def __init__(self, url: str, *, name: str, error: type[StreamError] = StreamError,
                 connect_timeout_s: float = 10.0, autocommit: bool = False,
                 prepare: Callable[[psycopg.Connection[Any]], None] | None = None,
                 stop: threading.Event | None = None) -> None:
        """`name` begins its log lines and errors (``inbox fleet-stream-p0``, ``database``);
        `error` is what it raises; `prepare` runs on every new connection (adapters and
        anything else tied to one connection); `stop`, once set, ends a wait for the
        database with `error` (without it, the wait lasts as long as the outage)."""
        self.url = url
        self.name = name
        self.error = error
        self.stop = stop or threading.Event()
        self.prepare = prepare
        self._options: dict[str, Any] = {"connect_timeout": int(connect_timeout_s),
                                         "autocommit": autocommit}
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, opened and prepared first if need be (raises
        `psycopg.OperationalError` when the database is unreachable)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = psycopg.connect(self.url, **self._options)
            try:
                if self.prepare is not None:
                    self.prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def run(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T], *,
            retry: bool = True) -> _T:
        """`fn(connection)`, called again on a new connection after each back-off while the
        database is unreachable (once only when not `retry`: for a caller whose next round is
        its retry). A `StreamError` from `fn` passes through; any other database error comes
        out as `error`, naming `what` failed."""
        attempt = 0
        while True:
            try:
                result = fn(self.connection())
            except psycopg.OperationalError as exc:
                self.close()
                if not retry:
                    raise self.error(f"{self.name}: {what} failed: {first_line(exc)}") from exc
                delay = DB_RETRY_DELAYS_S[min(attempt, len(DB_RETRY_DELAYS_S) - 1)]
                log.log(logging.DEBUG if attempt % DB_RETRY_LOG_EVERY else logging.WARNING,
                        "%s %s failed (%s, attempt %d); retrying in %.2f s",
                        self.name, what, first_line(exc), attempt + 1, delay)
                if self.stop.wait(delay):
                    raise self.error(f"{self.name}: stopped while the database was "
                                     f"unreachable") from exc
                attempt += 1
            except psycopg.Error as exc:
                raise self.error(f"{self.name}: {what} failed: {first_line(exc)}") from exc
            else:
                if attempt:
                    log.info("%s %s succeeded again after %d failed attempts", self.name, what,
                             attempt)
                return result

    def close(self) -> None:
        """Drop the connection (the next `run` opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
