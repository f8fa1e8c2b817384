"""The one retrying database connection of the inbox, the writer and the rollup refresher,
against the real PostgreSQL behind a link the tests can cut (a database restart, as a client
sees it: every connection dropped, then new ones refused until it is back)."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from core.protocol import Sample, Source
from stream.config import DB_RETRY_DELAYS_S
from stream.database import RetryingConnection
from stream.envelopes import StoredSample
from stream.errors import SinkError, StreamSourceError
from stream.model import Reading, VehicleRef
from stream.mqtt_source import _Inbox, _Received
from stream.sink import Batch, DatabaseWriter, RollupRefresher
from tests.conftest import TestDatabase
from tests.stream.conftest import Fleet
from tests.stream.streamproc import count

T0 = 1_780_000_000_000
WAIT_S = 30.0


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class CuttableLink:
    """A TCP forwarder to PostgreSQL. `cut()` drops every connection through it and leaves
    the port closed (a client is refused, as while a database restarts); `restore()` listens
    on the same port again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listening: threading.Event | None = None
        self.restore()

    def restore(self) -> None:
        """Forward again (on the port of the first start)."""
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        self.port = server.getsockname()[1]
        server.settimeout(0.05)
        listening = self._listening = threading.Event()
        listening.set()
        threading.Thread(target=self._accept, args=(server, listening), daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and stop listening."""
        if self._listening is not None:
            self._listening.clear()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)
                sock.close()
            self._sockets.clear()
        time.sleep(0.1)  # the accept loop notices within its 0.05 s timeout and closes the port

    def _accept(self, server: socket.socket, listening: threading.Event) -> None:
        with server:
            while listening.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                with self._lock:
                    self._sockets |= {client, upstream}
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)

    def url(self, url: str) -> str:
        """`url` with this link in place of the database's host and port."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{self.port}"))


@pytest.fixture
def link(database: TestDatabase) -> Iterator[CuttableLink]:
    target = urlsplit(database.ingest_url)
    link = CuttableLink(target.hostname or "127.0.0.1", target.port or 5432)
    yield link
    link.cut()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run fn in a thread; the list receives its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def outage(link: CuttableLink, fn: Callable[[], Any], down_s: float) -> Any:
    """Cut the link, start fn, restore the link after down_s; fn's result."""
    link.cut()
    thread, out = in_thread(fn)
    time.sleep(down_s)
    assert thread.is_alive(), f"gave up while the database was down: {out}"
    link.restore()
    thread.join(WAIT_S)
    assert not thread.is_alive(), "still waiting after the database came back"
    if isinstance(out[0], Exception):
        raise out[0]
    return out[0]


def retry_delays(caplog: pytest.LogCaptureFixture, name: str) -> list[float]:
    """The back-off of each retry logged for the connection `name`."""
    pattern = re.compile(rf"^{re.escape(name)} \w+ failed \(.*\); retrying in ([0-9.]+) s$")
    return [float(m[1]) for r in caplog.records if r.name == "stream.database"
            and (m := pattern.match(r.getMessage()))]


def test_the_connection_waits_out_a_restart_with_the_capped_back_off(
        database: TestDatabase, link: CuttableLink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stream.database")
    db = RetryingConnection(link.url(database.ingest_url), name="probe", autocommit=True)
    pid = db.run("read", lambda c: c.execute("SELECT pg_backend_pid()").fetchone())
    assert outage(link, lambda: db.run("read", lambda c: c.execute("SELECT 1").fetchone()),
                  down_s=2.5) == (1,)
    assert db.run("read", lambda c: c.execute("SELECT pg_backend_pid()").fetchone()) != pid
    delays = retry_delays(caplog, "probe")
    assert delays[:4] == list(DB_RETRY_DELAYS_S)
    assert len(delays) >= 5  # 2.5 s of refusals outlast the first four delays
    assert max(delays) == 1.0  # capped at 1 s
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first attempt; then one in DB_RETRY_LOG_EVERY
    assert any(r.getMessage() == f"probe read succeeded again after {len(delays)} failed "
               f"attempts" for r in caplog.records)
    db.close()


def test_a_stop_ends_the_wait_and_other_errors_are_not_retried(
        database: TestDatabase, link: CuttableLink) -> None:
    stop = threading.Event()
    db = RetryingConnection(link.url(database.ingest_url), name="inbox p9",
                            error=StreamSourceError, autocommit=True, stop=stop)
    link.cut()
    thread, out = in_thread(lambda: db.run("read", lambda c: c.execute("SELECT 1")))
    time.sleep(0.5)
    stop.set()
    thread.join(WAIT_S)
    assert isinstance(out[0], StreamSourceError)
    assert str(out[0]) == "inbox p9: stopped while the database was unreachable"
    link.restore()

    db = RetryingConnection(link.url(database.ingest_url), name="probe", error=SinkError,
                            autocommit=True)
    calls = []

    def missing(conn: psycopg.Connection[Any]) -> None:
        calls.append(1)
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(SinkError, match=r'^probe: read failed: relation "no_such_table"'):
        db.run("read", missing)
    assert calls == [1]

    def ours(conn: psycopg.Connection[Any]) -> None:
        raise SinkError("decided by the caller")

    with pytest.raises(SinkError, match=r"^decided by the caller$"):
        db.run("read", ours)
    db.close()


def test_the_inbox_appends_through_a_database_restart(
        database: TestDatabase, link: CuttableLink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stream.database")
    inbox = _Inbox(link.url(database.ingest_url), "s-p0", 10)

    def message(i: int) -> _Received:
        return _Received(i, 1, "t", bytes([i]), T0 + i)

    inbox.append(1, [message(1)])
    outage(link, lambda: inbox.append(2, [message(2), message(3)]), down_s=1.5)
    assert [m.offset for m in inbox.read(0, 10)] == [1, 2, 3]
    assert retry_delays(caplog, "inbox s-p0")
    inbox.close()


def _samples(fleet: Fleet, seqs: range) -> list[StoredSample]:
    ref = VehicleRef(fleet.tenant_id, fleet.vehicles["v1"], fleet.slug, "v1")
    return [StoredSample(Reading(ref, Sample(seq=i, t_ms=T0 + i * 1000, speed_kph=40.0),
                                 Source.SIMULATOR)) for i in seqs]


def test_the_writer_and_the_rollup_refresher_through_a_database_restart(
        database: TestDatabase, fleet: Fleet, link: CuttableLink,
        caplog: pytest.LogCaptureFixture) -> None:
    """The writer waits out the outage (the dataflow stalls, nothing is lost); the rollup
    refresher's round fails at once and the next round, after the restart, does the work."""
    caplog.set_level(logging.DEBUG, logger="stream.database")
    url = link.url(database.ingest_url)
    writer = DatabaseWriter(url)
    writer.write(Batch.of(_samples(fleet, range(10))))
    outage(link, lambda: writer.write(Batch.of(_samples(fleet, range(10, 20)))), down_s=1.5)
    assert retry_delays(caplog, "database")
    writer.write(Batch.of(_samples(fleet, range(15, 30))))  # the new connection, prepared
    writer.close()
    assert count(database.owner_url, "SELECT count(*) FROM telemetry") == 30

    refresher = RollupRefresher(url, 3600.0, 10.0)
    try:
        link.cut()
        started = time.monotonic()
        assert not refresher.refresh(T0, T0 + 30_000)  # one attempt: the next round retries
        assert time.monotonic() - started < 5.0
        link.restore()
        assert refresher.refresh(T0, T0 + 30_000)
    finally:
        refresher.close()
    assert count(database.owner_url, "SELECT coalesce(sum(samples), 0) FROM telemetry_1m") \
        == 30

