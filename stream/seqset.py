"""A compact set of recently seen sequence numbers (the per-vehicle dedupe window).

Stored as sorted, disjoint, inclusive ranges: in-order data is one range whatever its length,
so the state Bytewax snapshots stays a few integers instead of thousands.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from stream.model import snapshot_state


@snapshot_state
@dataclass(slots=True)
class SeqSet:
    """Seen sequence numbers within `window` of the highest one; older ones are forgotten."""

    window: int
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def add(self, seq: int) -> bool:
        """Remember seq; False if it was already there."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, seq) - 1
        if i >= 0 and seq <= ends[i]:
            return False
        joins_left = i >= 0 and ends[i] == seq - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = seq
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
        self._trim()
        return True

    @property
    def floor(self) -> int | None:
        """Lowest remembered seq (older ones may or may not have been seen)."""
        return self.starts[0] if self.starts else None

    def _trim(self) -> None:
        low = self.ends[-1] - self.window + 1
        while self.ends and self.ends[0] < low:
            del self.starts[0], self.ends[0]
        if self.starts and self.starts[0] < low:
            self.starts[0] = low
