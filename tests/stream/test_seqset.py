"""The dedupe window's range set, against a plain set."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.seqset import SeqSet


def test_in_order_sequences_stay_one_range() -> None:
    s = SeqSet(window=100)
    for seq in range(1, 10_001):
        assert s.add(seq)
    assert (s.starts, s.ends) == ([9901], [10000])
    assert 9950 in s
    assert 5 not in s  # forgotten: below the window
    assert not s.add(10_000)


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=400))
def test_matches_a_plain_set_within_the_window(seqs: list[int]) -> None:
    s = SeqSet(window=64)
    seen: set[int] = set()
    for seq in seqs:
        top = max([seq, *seen]) if seen else seq
        fresh = s.add(seq)
        if seq > top - 64:
            assert fresh == (seq not in seen)
        seen.add(seq)
        high = max(seen)
        for x in range(high - 63, high + 1):
            assert (x in s) == (x in seen)
    assert all(b <= e for b, e in zip(s.starts, s.ends, strict=True))
