"""docs/schema.md is the analysts' reference: it must match the migrated schema exactly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from storage.schema_doc import doc_file, render
from tests.conftest import TestDatabase

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.editions


def test_schema_doc_is_current(database: TestDatabase) -> None:
    with psycopg.connect(database.owner_url) as conn:
        expected = render(conn)
    doc = doc_file(database.edition)
    assert (ROOT / doc).read_text() == expected, (
        f"{doc} is stale: run `python -m storage.schema_doc > {doc}` on that edition")


def test_every_column_is_described(database: TestDatabase) -> None:
    with psycopg.connect(database.owner_url) as conn:
        text = render(conn)
    undocumented = [line for line in text.splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    # Columns whose meaning is obvious from name and type alone may stay undescribed; the list
    # is kept short on purpose: a new table should comment its columns.
    assert len(undocumented) <= 108, undocumented
