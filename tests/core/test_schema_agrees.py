"""The published JSON Schema (docs/protocol.schema.json) and the decoder say the same thing.

Device makers validate against the schema; the stream decodes with msgspec. Generated payloads
(valid messages, then one mutation each: a field removed, replaced by any JSON value, or an
unknown key added) must be accepted by both or refused by both. The validator is jsonschema-rs,
whose patterns follow ECMA-262 as JSON Schema requires.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import OPS_ROUTES, RESOURCE_MODULES
from api.openapi import build_openapi
from core import protocol as p
from edge_gateway.config import GatewayProcessSettings
from stream.config import StreamSettings
from tests.core.payloads import json_values, mutated, telemetry, text

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "protocol.schema.json").read_text())
VALIDATORS = {
    tp: jsonschema_rs.validator_for({"$schema": SCHEMA["$schema"],
                                     "$ref": f"#/$defs/{tp.__name__}", "$defs": SCHEMA["$defs"]})
    for tp in p.MESSAGE_TYPES.values()
}


def agree(kind: type[Any], msg: Any) -> None:
    wire = json.dumps(msg, ensure_ascii=False).encode()
    by_schema = VALIDATORS[kind].is_valid(msg)
    decoded = p.decode(wire, kind)
    by_decoder = not isinstance(decoded, p.Reject)
    assert by_schema == by_decoder, (wire, decoded)


@given(mutated(telemetry()))
@settings(max_examples=400, deadline=None)
def test_schema_and_decoder_agree_on_telemetry(msg: dict[str, Any]) -> None:
    agree(p.Telemetry, msg)


@given(st.sampled_from(list(p.MESSAGE_TYPES.values())),
       st.dictionaries(text | st.sampled_from(["v", "t_ms", "state", "id", "name", "ok"]),
                       json_values, max_size=5))
@settings(max_examples=200, deadline=None)
def test_schema_and_decoder_agree_on_any_object(kind: type[Any], msg: dict[str, Any]) -> None:
    agree(kind, msg)


@pytest.mark.parametrize("payload", [
    {"source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS}]},
    {"v": 0, "source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS}]},
    {"v": 1, "source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS, "dtcs": ["P0301\n"]}]},
    {"v": 1, "source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS, "extra": {"a\n": 1}}]},
    {"v": 1, "source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS, "lat_deg": 1.5}]},
    {"v": 1, "source": "gateway", "samples": [{"seq": 1, "t_ms": p.MIN_T_MS,
                                               "extra": {"big": 1e300}}]},
])
def test_the_cases_that_once_differed_are_refused_by_both(payload: dict[str, Any]) -> None:
    assert not VALIDATORS[p.Telemetry].is_valid(payload)
    assert isinstance(p.decode(json.dumps(payload).encode(), p.Telemetry), p.Reject)


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def _published_patterns() -> list[str]:
    found = _patterns(p.json_schema())
    for settings_type in (GatewayProcessSettings, StreamSettings):
        found += _patterns(msgspec.json.schema(settings_type))
    found += _patterns(build_openapi([r for m in RESOURCE_MODULES for r in m.ROUTES]
                                     + list(OPS_ROUTES)))
    return sorted(set(found))


@pytest.mark.parametrize("pattern", _published_patterns())
def test_every_published_pattern_matches_whole_strings_in_python_too(pattern: str) -> None:
    # The class behind "P0301\n": the wire contract's, the settings' and the API document's
    # patterns are checked by msgspec with Python's re.search, where a bare `$` also matches
    # before a final newline, while JSON Schema (ECMA-262) refuses that newline.
    @given(st.from_regex(pattern, fullmatch=True))
    @settings(max_examples=30, deadline=None)
    def check(value: str) -> None:
        assert re.search(pattern, value + "\n") is None

    check()
