"""`snapshot_state`: the per-vehicle state classes pickle by their field values."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pytest

from stream.model import snapshot_state


@snapshot_state
@dataclass(slots=True)
class Pair:
    a: int
    b: list[int] = field(default_factory=list)


@snapshot_state
@dataclass(frozen=True, slots=True)
class One:
    only: Pair


def test_snapshot_state_pickles_by_field_values_and_refuses_keyword_fields() -> None:
    value = One(Pair(1, [2, 3]))
    assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301 - our own bytes
    assert value.__reduce__() == (One, (Pair(1, [2, 3]),))
    with pytest.raises(TypeError, match="positional"):
        @snapshot_state
        @dataclass(kw_only=True)
        class Named:
            a: int


@dataclass(frozen=True, slots=True)
class OneMore(One):
    extra: int = 0


def test_a_subclass_of_a_snapshot_state_class_pickles_its_own_fields() -> None:
    value = OneMore(Pair(1), 5)
    assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301 - our own bytes
