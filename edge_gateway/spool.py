"""Store-and-forward spool: every sample is on disk before it is published.

SQLite in WAL mode, one row per sample keyed by its sequence number, plus a small `meta`
table holding the next sequence number and the dropped-samples counter. The sequence number
is assigned in the same transaction that stores the sample, so it increases monotonically
across restarts, `kill -9` and power cuts; a new spool starts from the clock (`SEQS_PER_MS`),
so even a lost spool does not make a vehicle reuse old seqs.

fsync policy: `synchronous=FULL`, so every commit fsyncs the write-ahead log before it
returns. The builder commits each new sample (at most one per tick, 10 per second by
default) before the publisher can read it, so a sample that was ever published is durable;
a power cut can lose only the sample being written at that instant, which was never
published. Acknowledged samples are deleted in one transaction per PUBACK. If a power cut
loses a delete, those samples are sent again with the same seq (at-least-once; the stream
drops repeats by `(vehicle, seq)`).

Bound: at most `max_samples` rows. When an append would exceed it, the oldest rows are
deleted first and added to the persistent `dropped` counter reported in `status`.

All methods are blocking and must run on one thread (`SpoolWorker` does that for asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from core.protocol import Sample
from edge_gateway.errors import SpoolError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SEQS_PER_MS = 1000
"""A new spool starts at Unix ms x 1000, so that a vehicle whose spool was lost (a replaced SD
card) still continues above every seq it used before, unless it had produced more than 1000
samples per millisecond on average, or its clock went back."""


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """One stored sample: its seq and its encoded JSON."""

    seq: int
    body: bytes


class Spool:
    """The SQLite spool of one vehicle (blocking API, single thread)."""

    def __init__(self, path: str | Path, max_samples: int, first_seq: int | None = None
                 ) -> None:
        self.path = Path(path)
        self.max_samples = max_samples
        self._encoder = msgspec.json.Encoder()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            start = first_seq
            if start is None:
                start = time.time_ns() // 1_000_000 * SEQS_PER_MS
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES "
                             "('next_seq', ?), ('first_seq', ?), ('dropped', 0)", (start, start))
            self._count = int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])
            self._next_seq = self._meta("next_seq")
            self._dropped = self._meta("dropped")
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        # A spool copied from an older install may hold rows above next_seq: never reuse seqs.
        top = self._db.execute("SELECT max(seq) FROM spool").fetchone()[0]
        if top is not None and top >= self._next_seq:
            self._next_seq = int(top) + 1

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    @property
    def count(self) -> int:
        """Samples waiting for a PUBACK."""
        return self._count

    @property
    def dropped(self) -> int:
        """Samples dropped (oldest first) because the spool was full, since it was created."""
        return self._dropped

    @property
    def first_seq(self) -> int:
        """The seq of the first sample this spool ever stored."""
        return self._meta("first_seq")

    @property
    def next_seq(self) -> int:
        """The seq the next appended sample gets."""
        return self._next_seq

    def append(self, make: Callable[[int], Sample | None]) -> Sample | None:
        """Store one sample built by `make(seq)` and commit it (fsync) before returning it."""
        seq = self._next_seq
        sample = make(seq)
        if sample is None:
            return None
        body = self._encoder.encode(sample)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                overflow = self._count + 1 - self.max_samples
                if overflow > 0:
                    self._drop_oldest(overflow)
                self._db.execute("INSERT INTO spool (seq, body) VALUES (?, ?)", (seq, body))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
        self._next_seq = seq + 1
        self._count += 1
        return sample

    def append_bodies(self, bodies: Sequence[Callable[[int], bytes]]) -> int:
        """Store many pre-encoded samples in one transaction (bulk load: tests, benchmarks)."""
        start = self._next_seq
        rows = [(start + i, make(start + i)) for i, make in enumerate(bodies)]
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                overflow = self._count + len(rows) - self.max_samples
                if overflow > 0:
                    self._drop_oldest(overflow)
                self._db.executemany("INSERT INTO spool (seq, body) VALUES (?, ?)", rows)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'",
                                 (start + len(rows),))
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
        self._next_seq = start + len(rows)
        self._count += len(rows)
        return len(rows)

    def _drop_oldest(self, n: int) -> None:
        cur = self._db.execute(
            "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (n,))
        removed = max(cur.rowcount, 0)
        self._dropped += removed
        self._count -= removed
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'dropped'", (self._dropped,))

    def read_after(self, after_seq: int, limit: int) -> list[SpoolRow]:
        """The oldest stored samples with seq > after_seq, in seq order."""
        try:
            rows = self._db.execute(
                "SELECT seq, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit)).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read spool {self.path}: {exc}") from exc
        return [SpoolRow(int(seq), bytes(body)) for seq, body in rows]

    def ack(self, first_seq: int, last_seq: int) -> int:
        """Delete samples first_seq..last_seq once the broker acknowledged them."""
        try:
            cur = self._db.execute("DELETE FROM spool WHERE seq BETWEEN ? AND ?",
                                   (first_seq, last_seq))
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot acknowledge samples in {self.path}: {exc}") from exc
        removed = max(cur.rowcount, 0)
        self._count -= removed
        return removed

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        # A failed checkpoint is harmless: SQLite replays the WAL at the next open.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


class SpoolWorker:
    """Runs a `Spool` on its own thread so that fsyncs never block the event loop."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        # One thread: SQLite connections must not be shared between threads concurrently,
        # and one writer keeps seq assignment trivially ordered.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.appended = asyncio.Event()
        """Set whenever a sample was stored; the publisher clears it before it waits."""

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run one spool method on the spool thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)

    async def append(self, make: Callable[[int], Sample | None]) -> Sample | None:
        """Store one sample and wake the publisher."""
        sample = await self.run(self.spool.append, make)
        if sample is not None:
            self.appended.set()
        return sample

    def close(self) -> None:
        """Close the spool on its thread and stop the thread."""
        self._executor.submit(self.spool.close).result()
        self._executor.shutdown(wait=True)
