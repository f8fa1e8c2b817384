"""Fences from PostgreSQL: load every tenant's active fences, and keep an index current.

`load_fences` reads the `geofences` table as the ingest role (it may read every tenant's
fences) and takes each zone from the generated `zone` column, computed by PostGIS in metres,
so the stream and SQL agree. `FenceWatcher` holds the current `FenceIndex` and rebuilds it
when fences change: the table's trigger NOTIFYs channel `fleet_geofences`, and a periodic
fingerprint comparison catches anything a notification missed (the connection dropped, or a
change arrived while reconnecting). A rebuilt index replaces the old one in a single reference
assignment, so readers (`watcher.current()`) never see a half-built index and never block.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
import shapely

from geo.config import GeofenceSettings
from geo.errors import FenceGeometryError, FenceStoreError, GeoError
from geo.fence import Fence
from geo.index import FenceIndex

CHANNEL = "fleet_geofences"
"""Notification channel of the `geofences` trigger (storage/migrations/0001_core.sql)."""

_FENCES_SQL = """
SELECT id, tenant_id, name, kind, ST_AsBinary(geometry), ST_AsBinary(zone), radius_m,
       corridor_width_m, speed_limit_kph, dwell_s, debounce_s, alert_on_entry, alert_on_exit,
       category
FROM geofences WHERE is_active ORDER BY id
"""
# Every row, active or not: an insert adds an id, an update bumps updated_at (trigger), a delete
# removes an id, so the digest changes on every change that matters.
_FINGERPRINT_SQL = """
SELECT count(*), coalesce(md5(string_agg(id::text || ':' || updated_at::text, ',' ORDER BY id)), '')
FROM geofences
"""


@dataclass(frozen=True, slots=True)
class FenceSnapshot:
    """Fences as loaded in one transaction, with the fingerprint of the table they came from."""

    fences: list[Fence]
    fingerprint: str
    skipped: list[tuple[str, str]]
    """(fence id, reason) of rows that could not be used (an invalid geometry)."""


def _fingerprint(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(_FINGERPRINT_SQL).fetchone()
    return f"{row[0]}:{row[1]}" if row else ""


def load_snapshot(conn: psycopg.Connection[Any], settings: GeofenceSettings) -> FenceSnapshot:
    """Read all active fences and the table's fingerprint in one consistent snapshot."""
    fences: list[Fence] = []
    skipped: list[tuple[str, str]] = []
    try:
        with conn.transaction():
            # One snapshot for both statements: the fingerprint describes exactly these rows.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = conn.execute(_FENCES_SQL).fetchall()
            fingerprint = _fingerprint(conn)
    except psycopg.Error as exc:
        raise FenceStoreError(f"cannot load geofences: {exc}") from exc
    for row in rows:
        (fid, tenant_id, name, kind, shape_wkb, zone_wkb, radius_m, width_m, limit_kph, dwell_s,
         debounce_s, alert_entry, alert_exit, category) = row
        try:
            fences.append(Fence.from_zone(
                id=fid, tenant_id=tenant_id, name=name, kind=kind,
                shape=shapely.from_wkb(bytes(shape_wkb)), zone=shapely.from_wkb(bytes(zone_wkb)),
                settings=settings, radius_m=radius_m, corridor_width_m=width_m,
                speed_limit_kph=limit_kph, dwell_s=None if dwell_s is None else float(dwell_s),
                # NULL: the fence follows the `debounce_s` setting (migration 0011).
                debounce_s=None if debounce_s is None else float(debounce_s),
                alert_on_entry=alert_entry,
                alert_on_exit=alert_exit, category=category))
        except (FenceGeometryError, shapely.errors.ShapelyError) as exc:
            # One bad fence must not take every other tenant's geofencing down with it.
            skipped.append((str(fid), str(exc)))
    return FenceSnapshot(fences, fingerprint, skipped)


def load_fences(ingest_url: str, settings: GeofenceSettings | None = None) -> FenceSnapshot:
    """Connect as the ingest role and load every tenant's active fences."""
    s = settings or GeofenceSettings()
    try:
        with psycopg.connect(ingest_url, autocommit=True,
                             connect_timeout=max(1, round(s.connect_timeout_s))) as conn:
            return load_snapshot(conn, s)
    except psycopg.Error as exc:
        raise FenceStoreError(f"cannot connect to load geofences: {exc}") from exc


def _notified(conn: psycopg.Connection[Any], timeout_s: float) -> bool:
    """True if a notification arrived within `timeout_s` (or was already waiting)."""
    gen = conn.notifies(timeout=timeout_s, stop_after=1)
    try:
        return any(True for _ in gen)
    finally:
        gen.close()  # releases the connection lock the generator holds


class FenceWatcher:
    """Holds the current index and swaps in a new one when fences change in the database.

    Use as a context manager (or `start()`/`stop()`); `current` is the `index_provider` the
    detector and the dataflow call. Reload failures keep the previous index and are retried.
    """

    def __init__(self, ingest_url: str, settings: GeofenceSettings | None = None, *,
                 log: Callable[[str], None] | None = None,
                 on_reload: Callable[[FenceIndex], None] | None = None) -> None:
        """Nothing connects until `start()`."""
        self._url = ingest_url
        self._settings = settings or GeofenceSettings()
        self._log = log or (lambda _m: None)
        self._on_reload = on_reload
        self._index: FenceIndex | None = None
        self._fingerprint = ""
        self._version = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        """How many times an index was built (the first load included)."""

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FenceIndex:
        """Load the fences (raising FenceStoreError if that fails) and start watching."""
        index = self.reload()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="geofence-watcher", daemon=True)
        self._thread.start()
        return index

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching; returns once the watcher thread has ended (or after `timeout_s`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> FenceWatcher:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- the index ---------------------------------------------------------------------------

    def current(self) -> FenceIndex:
        """The index in force now (lock-free: one reference read)."""
        index = self._index
        if index is None:
            raise FenceStoreError("FenceWatcher has not loaded any fences yet: call start()")
        return index

    def reload(self, conn: psycopg.Connection[Any] | None = None) -> FenceIndex:
        """Load the fences and swap in a new index now."""
        if conn is None:
            snapshot = load_fences(self._url, self._settings)
        else:
            snapshot = load_snapshot(conn, self._settings)
        for fid, reason in snapshot.skipped:
            self._log(f"geofence {fid} skipped: {reason}")
        index = FenceIndex.build(snapshot.fences, self._settings, version=self._version + 1,
                                 previous=self._index)
        with self._changed:
            self._version = index.version
            self._fingerprint = snapshot.fingerprint
            self._index = index
            self.reloads += 1
            self._changed.notify_all()
        self._log(f"geofence index v{index.version}: {len(index)} fences")
        if self._on_reload is not None:
            self._on_reload(index)
        return index

    def wait_for_version(self, version: int, timeout_s: float) -> bool:
        """Block until the index version is at least `version`; False on time-out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._version >= version, timeout_s)

    # ---- the watcher thread ------------------------------------------------------------------

    def _run(self) -> None:
        s = self._settings
        while not self._stop.is_set():
            try:
                with self._listen() as conn:
                    # Anything that changed between the load and LISTEN is caught right here.
                    self._poll(conn)
                    self._watch(conn)
            except (psycopg.Error, GeoError) as exc:
                self._log(f"geofence watcher: {exc}; retrying in {s.reconnect_backoff_s} s")
                self._stop.wait(s.reconnect_backoff_s)
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one reload
                # A bug in one reload must not end live reloading for the life of the process:
                # keep the last good index, say so, and try again.
                self._log(f"geofence watcher: unexpected {type(exc).__name__}: {exc}; "
                          f"retrying in {s.reconnect_backoff_s} s")
                self._stop.wait(s.reconnect_backoff_s)

    @contextlib.contextmanager
    def _listen(self) -> Iterator[psycopg.Connection[Any]]:
        conn = psycopg.connect(self._url, autocommit=True,
                               connect_timeout=max(1, round(self._settings.connect_timeout_s)))
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            yield conn
        finally:
            conn.close()

    def _watch(self, conn: psycopg.Connection[Any]) -> None:
        s = self._settings
        next_poll = time.monotonic() + s.reload_poll_s
        while not self._stop.is_set():
            # Short waits so that stop() is honoured within half a second.
            wait_s = max(0.0, min(0.5, next_poll - time.monotonic()))
            if _notified(conn, wait_s):
                # Coalesce a burst (a bulk import NOTIFYs once per row) into one reload.
                deadline = time.monotonic() + s.reload_settle_s
                while (left := deadline - time.monotonic()) > 0:
                    if not _notified(conn, left):
                        break
                self.reload(conn)
                next_poll = time.monotonic() + s.reload_poll_s
            elif time.monotonic() >= next_poll:
                self._poll(conn)
                next_poll = time.monotonic() + s.reload_poll_s

    def _poll(self, conn: psycopg.Connection[Any]) -> None:
        try:
            fingerprint = _fingerprint(conn)
        except psycopg.Error as exc:
            raise FenceStoreError(f"cannot read the geofence fingerprint: {exc}") from exc
        if fingerprint != self._fingerprint:
            self.reload(conn)
