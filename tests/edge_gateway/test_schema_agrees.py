"""The published JSON Schema (docs/protocol.schema.json) and the decoder say the same thing.

Device makers validate against the schema; the stream decodes with msgspec. Generated payloads
(valid messages, then one mutation each: a field removed, replaced by any JSON value, or an
unknown key added) must be accepted by both or refused by both. The validator is jsonschema-rs,
whose patterns follow ECMA-262 as JSON Schema requires.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gateway import protocol as p
from tests.edge_gateway.payloads import json_values, mutated, telemetry, text

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


def test_every_pattern_of_the_contract_and_the_settings_matches_whole_strings() -> None:
    # The class behind "P0301\n": a pattern ending in a bare `$` lets a trailing newline
    # through msgspec (Python) while JSON Schema (ECMA-262) refuses it.
    import msgspec

    from edge_gateway.config import GatewayProcessSettings
    from stream.config import StreamSettings

    patterns = _patterns(p.json_schema())
    for settings_type in (GatewayProcessSettings, StreamSettings):
        patterns += _patterns(msgspec.json.schema(settings_type))
    assert patterns
    assert [x for x in patterns if not x.endswith("(?!\\n)$")] == []
