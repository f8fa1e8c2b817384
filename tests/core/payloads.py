"""Generated wire payloads: valid telemetry, and each with one mutation (shared by the schema
agreement test and the stream's hostile-payload test)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from core import protocol as p

# Text without lone surrogates: JSON can carry them, but neither side is the subject here (the
# stream's hostile-payload test sends them through the real broker and sink).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
# An integral float is written "1.0": JSON Schema calls that an integer, the decoder does not
# (docs/protocol.md: integers are written as integers), so the generator leaves it out.
floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | floats | text
           | st.sampled_from(["P0301", "P0301\n", "gateway", "online", "", "\x00", "a\nb"]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6)


def bounded(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi).filter(lambda x: not x.is_integer())


@st.composite
def sample(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": draw(st.integers(0, 2**63 - 1)),
                           "t_ms": draw(st.integers(p.MIN_T_MS, p.MAX_T_MS))}
    if draw(st.booleans()):
        out["lat_deg"], out["lon_deg"] = draw(bounded(-90, 90)), draw(bounded(-180, 180))
    optional = {"speed_kph": bounded(0, 500), "rpm": bounded(0, 20000),
                "coolant_c": bounded(-60, 250), "ignition": st.booleans(),
                "sats": st.integers(0, 128), "gps_fix": st.integers(0, 8),
                "dtcs": st.lists(st.from_regex(r"\A[PCBU][0-3][0-9A-F]{3}\Z"), max_size=3),
                "extra": st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,6}\Z"),
                                         bounded(-p.EXTRA_LIMIT, p.EXTRA_LIMIT), max_size=3)}
    for name, strategy in optional.items():
        if draw(st.booleans()):
            out[name] = draw(strategy)
    return out


@st.composite
def telemetry(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"v": 1, "source": draw(st.sampled_from([s.value for s in p.Source])),
                           "samples": draw(st.lists(sample(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        out["device"] = draw(st.from_regex(r"\A[a-z0-9]{1,8}\Z"))
    if draw(st.booleans()):
        out["sent_ms"] = draw(st.integers(p.MIN_T_MS, p.MAX_T_MS))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid message with at most one change somewhere in it."""
    msg = draw(base)
    # Pick an object in the message: the message itself or one of its samples / extra maps.
    objects: list[dict[str, Any]] = [msg]
    for s in msg.get("samples", []):
        objects.append(s)
        if isinstance(s.get("extra"), dict):
            objects.append(s["extra"])
    target = draw(st.sampled_from(objects))
    action = draw(st.sampled_from(["keep", "drop", "replace", "add"]))
    if action == "drop" and target:
        del target[draw(st.sampled_from(sorted(target)))]
    elif action == "replace" and target:
        target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    elif action == "add":
        target[draw(text | st.sampled_from(["\x00x", "lat_deg", "v", "speed_mph"]))] = \
            draw(json_values)
    return msg
