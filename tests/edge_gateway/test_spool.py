"""The spool: order, seq persistence, bound with oldest-first drop, durability under kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from core.protocol import Sample
from edge_gateway.errors import SpoolError
from edge_gateway.spool import Spool

T0 = 1_780_000_000_000


def _sample(seq: int) -> Sample:
    return Sample(seq=seq, t_ms=T0 + seq, rpm=800.0 + seq)


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_samples=1000, first_seq=0)
    for _ in range(10):
        spool.append(_sample)
    rows = spool.read_after(-1, 4)
    assert [r.seq for r in rows] == [0, 1, 2, 3]
    assert [r.seq for r in spool.read_after(3, 100)] == list(range(4, 10))
    assert spool.ack(0, 3) == 4
    assert spool.count == 6
    assert [r.seq for r in spool.read_after(-1, 100)] == list(range(4, 10))
    spool.close()


def test_seq_survives_restart_even_when_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_samples=1000, first_seq=0)
    for _ in range(5):
        spool.append(_sample)
    spool.ack(0, 4)
    spool.close()
    spool = Spool(tmp_path / "s.db", max_samples=1000, first_seq=0)
    assert spool.count == 0
    stored = spool.append(_sample)
    assert stored is not None
    assert stored.seq == 5
    spool.close()


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_samples=1000, first_seq=0)
    spool.append_bodies([lambda seq: msgspec.json.encode(_sample(seq))] * 1000)
    spool.append(_sample)
    spool.append(_sample)
    assert spool.count == 1000
    assert spool.dropped == 2
    assert spool.read_after(-1, 1)[0].seq == 2
    spool.close()
    reopened = Spool(tmp_path / "s.db", max_samples=1000, first_seq=0)
    assert reopened.dropped == 2
    assert reopened.count == 1000
    reopened.close()


def test_unwritable_path_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError):
        Spool(blocker / "sub" / "s.db", max_samples=1000, first_seq=0)


def test_committed_samples_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed with SIGKILL loses nothing it reported as stored."""
    path = tmp_path / "s.db"
    script = textwrap.dedent(f"""
        import sys
        from core.protocol import Sample
        from edge_gateway.spool import Spool
        spool = Spool({str(path)!r}, max_samples=100000, first_seq=0)
        while True:
            s = spool.append(lambda seq: Sample(seq=seq, t_ms={T0} + seq))
            print(s.seq, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 200:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    spool = Spool(path, max_samples=100000, first_seq=0)
    seqs = [r.seq for r in spool.read_after(-1, 100000)]
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= last + 1
    assert spool.next_seq == len(seqs)
    spool.close()


def test_a_new_spool_starts_above_every_seq_a_lost_one_used(tmp_path: Path) -> None:
    old = Spool(tmp_path / "old.db", max_samples=1000)
    for _ in range(50):
        old.append(_sample)
    last = old.next_seq - 1
    old.close()
    (tmp_path / "old.db").unlink()  # the SD card was replaced
    new = Spool(tmp_path / "new.db", max_samples=1000)
    assert new.first_seq > last
    assert new.next_seq == new.first_seq
    new.close()
