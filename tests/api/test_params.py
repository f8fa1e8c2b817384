"""The request-parsing helpers of `api.params`, on generated input (no services needed)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import ValidationError
from api.params import BBox, check_tree, like_pattern, parse_time, storable
from tests.api.test_hostile_params import HOSTILE

# -- pure helpers --------------------------------------------------------------------------

@given(lon=st.floats(-180, 180), lat=st.floats(-90, 90), w=st.floats(-180, 180),
       e=st.floats(-180, 180))
def test_bbox_contains_matches_the_split_into_two_boxes(lon: float, lat: float, w: float,
                                                        e: float) -> None:
    """A box crossing the antimeridian is the union of its two halves."""
    box = BBox(w, -90, e, 90)
    if w <= e:
        assert box.contains(lon, lat) == (w <= lon <= e)
    else:
        assert box.contains(lon, lat) == (BBox(w, -90, 180, 90).contains(lon, lat)
                                          or BBox(-180, -90, e, 90).contains(lon, lat))


@given(HOSTILE)
def test_storable_and_check_tree_agree(text: str) -> None:
    """What `check_tree` refuses, `storable` makes storable; the rest passes unchanged."""
    try:
        check_tree({"k": [text]})
    except ValidationError:
        assert storable(text) != text
        check_tree({"k": [storable(text)]})
    else:
        assert storable(text) == text
        # Round-trips through UTF-8: PostgreSQL text can hold it.
        assert text.encode("utf-8").decode("utf-8") == text


@given(HOSTILE)
def test_like_pattern_matches_literally(text: str) -> None:
    """Unescaping the pattern gives back the text; no unescaped wildcard remains."""
    pattern = like_pattern(text)
    assert re.sub(r"\\(.)", r"\1", pattern) == text
    assert re.search(r"(?<!\\)(\\\\)*[%_]", pattern) is None


@pytest.mark.parametrize("raw", ["2024-02-29T23:59:60Z", "2024-01-01t00:00:00.123456789z",
                                 "2024-01-01T00:00:00+05:30", "0001-01-01T00:00:00Z"])
def test_rfc3339_forms_are_accepted(raw: str) -> None:
    """What the document's `format: date-time` allows, the handlers parse."""
    assert parse_time(raw, "from").tzinfo is not None


@pytest.mark.parametrize("raw", ["2024-02-30T00:00:00Z", "2024-01-01", "20240101T000000Z",
                                 "2024-W01-1T00:00:00Z", "2024-01-01T00:00:00+24:00", ""])
def test_non_rfc3339_forms_are_refused(raw: str) -> None:
    """What the document's format does not allow is a 400 naming the parameter."""
    with pytest.raises(ValidationError) as err:
        parse_time(raw, "to")
    assert err.value.field == "to"
