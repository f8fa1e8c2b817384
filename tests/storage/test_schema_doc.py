"""docs/schema.md is the analysts' reference: it must match the migrated schema exactly."""

from __future__ import annotations

from pathlib import Path

import psycopg

from storage.schema_doc import render
from tests.conftest import TestDatabase

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def test_schema_doc_is_current(database: TestDatabase) -> None:
    with psycopg.connect(database.owner_url) as conn:
        expected = render(conn)
    assert DOC.read_text() == expected, (
        "docs/schema.md is stale: run `python -m storage.schema_doc > docs/schema.md`")


def test_every_column_is_described(database: TestDatabase) -> None:
    with psycopg.connect(database.owner_url) as conn:
        text = render(conn)
    undocumented = [line for line in text.splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    # Columns whose meaning is obvious from name and type alone may stay undescribed; the list
    # is kept short on purpose: a new table should comment its columns.
    assert len(undocumented) <= 108, undocumented
