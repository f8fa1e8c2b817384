"""The wire contract: round trips, and every kind of bad input rejected with a reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import protocol as p

REPO = Path(__file__).resolve().parents[2]

finite = st.floats(allow_nan=False, allow_infinity=False)
extra_values = st.floats(min_value=-p.EXTRA_LIMIT, max_value=p.EXTRA_LIMIT)


def bounded(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


@st.composite
def samples(draw: st.DrawFn) -> p.Sample:
    has_fix = draw(st.booleans())
    return p.Sample(
        seq=draw(st.integers(0, 2**63 - 1)),
        t_ms=draw(st.integers(p.MIN_T_MS, p.MAX_T_MS)),
        lat_deg=draw(bounded(-90, 90)) if has_fix else None,
        lon_deg=draw(bounded(-180, 180)) if has_fix else None,
        speed_kph=draw(st.none() | bounded(0, 500)),
        heading_deg=draw(st.none() | bounded(0, 360)),
        ignition=draw(st.none() | st.booleans()),
        rpm=draw(st.none() | bounded(0, 20000)),
        coolant_c=draw(st.none() | bounded(-60, 250)),
        fuel_pct=draw(st.none() | bounded(0, 100)),
        odometer_km=draw(st.none() | bounded(0, 1e8)),
        battery_v=draw(st.none() | bounded(0, 60)),
        gps_fix=draw(st.none() | st.integers(0, 8)),
        dtcs=draw(st.none() | st.lists(st.from_regex(r"\A[PCBU][0-3][0-9A-F]{3}\Z"), max_size=5)),
        extra=draw(st.none() | st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"),
                                               extra_values, max_size=4)),
    )


@st.composite
def telemetry(draw: st.DrawFn) -> p.Telemetry:
    return p.Telemetry(
        source=draw(st.sampled_from(list(p.Source))),
        samples=draw(st.lists(samples(), min_size=1, max_size=5)),
        device=draw(st.none() | st.from_regex(r"\A[a-z0-9]{1,12}\Z")),
    )


@given(telemetry())
@settings(max_examples=200, deadline=None)
def test_telemetry_round_trips(msg: p.Telemetry) -> None:
    wire = p.encode(msg)
    assert json.loads(wire)["v"] == 1
    assert p.decode(wire, p.Telemetry) == msg


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_decoding_arbitrary_bytes_never_raises(data: bytes) -> None:
    for kind in (p.Telemetry, p.Status, p.Command, p.CommandAck, p.DeviceEvent):
        result = p.decode(data, kind)
        assert isinstance(result, p.Reject | kind)


@given(telemetry(), st.integers(min_value=1))
@settings(max_examples=100, deadline=None)
def test_every_truncation_is_rejected(msg: p.Telemetry, cut: int) -> None:
    wire = p.encode(msg)
    truncated = wire[: max(0, len(wire) - 1 - cut % len(wire))]
    result = p.decode(truncated, p.Telemetry)
    assert isinstance(result, p.Reject)
    assert result.reason in {p.RejectReason.MALFORMED, p.RejectReason.INVALID}


def _msg(**sample: object) -> bytes:
    base = {"seq": 1, "t_ms": 1_700_000_000_000, **sample}
    return json.dumps({"v": 1, "source": "gateway", "samples": [base]}).encode()


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"", p.RejectReason.MALFORMED, "truncated"),
        (b'{"v":1,"source":"gateway","samples":[{"seq":1', p.RejectReason.MALFORMED, "truncated"),
        (b"\xff\xfe", p.RejectReason.MALFORMED, "malformed"),
        (b"[1,2,3]", p.RejectReason.INVALID, "object"),
        (b'{"v":2,"source":"gateway","samples":[]}', p.RejectReason.UNKNOWN_VERSION, "2"),
        (b'{"v":"1","source":"gateway","samples":[]}', p.RejectReason.UNKNOWN_VERSION, "'1'"),
        (b'{"v":1,"source":"gateway","samples":[]}', p.RejectReason.INVALID, "samples"),
        (b'{"v":1,"source":"toaster","samples":[{"seq":1,"t_ms":1700000000000}]}',
         p.RejectReason.INVALID, "source"),
        (_msg(seq="1"), p.RejectReason.INVALID, "seq"),
        (_msg(seq=-1), p.RejectReason.INVALID, "seq"),
        (_msg(seq=1.5), p.RejectReason.INVALID, "seq"),
        (_msg(t_ms=12), p.RejectReason.INVALID, "t_ms"),
        (_msg(speed_kph="fast"), p.RejectReason.INVALID, "speed_kph"),
        (_msg(lat_deg=91, lon_deg=0), p.RejectReason.INVALID, "lat_deg"),
        (_msg(lat_deg=10), p.RejectReason.INVALID, "together"),
        (_msg(speed_mph=10), p.RejectReason.INVALID, "speed_mph"),
        (_msg(dtcs=["P03011"]), p.RejectReason.INVALID, "dtcs"),
        (_msg(extra={"BadName": 1}), p.RejectReason.INVALID, "extra"),
        (b'{"v":1,"source":"gateway","samples":[{"seq":1,"t_ms":1700000000000,"rpm":NaN}]}',
         p.RejectReason.MALFORMED, "malformed"),
        (b'{"v":1,"source":"gateway","samples":[{"seq":1,"t_ms":1700000000000,"rpm":Infinity}]}',
         p.RejectReason.MALFORMED, "malformed"),
        (b'{"v":1,"source":"gateway","samples":[{"seq":1,"t_ms":1700000000000,"rpm":1e999}]}',
         p.RejectReason.INVALID, "rpm"),
        (b'{"v":1,"source":"gateway","samples":[{"seq":1,"t_ms":1700000000000,'
         b'"extra":{"x":-1e999}}]}', p.RejectReason.INVALID, "extra"),
        (b"[" * 100_000, p.RejectReason.INVALID, ""),
        (b'{"v":1,"source":"gateway","samples":[' + b"[" * 100_000, p.RejectReason.INVALID, ""),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, reason: p.RejectReason,
                                                 detail: str) -> None:
    result = p.decode(payload, p.Telemetry)
    assert isinstance(result, p.Reject), result
    assert result.reason == reason, result
    assert detail.lower() in result.detail.lower()


def test_oversized_payload_is_rejected_before_parsing() -> None:
    many = [{"seq": i, "t_ms": 1_700_000_000_000 + i, "extra": {f"s{j}": 1.0 for j in range(60)}}
            for i in range(p.MAX_SAMPLES_PER_MESSAGE)]
    payload = json.dumps({"v": 1, "source": "gateway", "samples": many}).encode()
    assert len(payload) > p.MAX_PAYLOAD_BYTES
    result = p.decode(payload, p.Telemetry)
    assert isinstance(result, p.Reject)
    assert result.reason == p.RejectReason.TOO_LARGE


def test_too_many_samples_is_rejected() -> None:
    many = [{"seq": i, "t_ms": 1_700_000_000_000} for i in range(p.MAX_SAMPLES_PER_MESSAGE + 1)]
    result = p.decode(json.dumps({"v": 1, "source": "gateway", "samples": many}).encode(),
                      p.Telemetry)
    assert isinstance(result, p.Reject)
    assert result.reason == p.RejectReason.INVALID


def test_non_finite_values_never_reach_the_wire_as_numbers() -> None:
    # msgspec writes NaN as null, which the decoder then refuses for a required number.
    wire = p.encode(p.Telemetry(source=p.Source.GATEWAY,
                                samples=[p.Sample(seq=1, t_ms=p.MIN_T_MS, rpm=math.nan)]))
    assert b"NaN" not in wire
    result = p.decode(wire, p.Telemetry)
    assert isinstance(result, p.Telemetry)
    assert result.samples[0].rpm is None


def test_commands_and_acks_round_trip() -> None:
    cmd = p.Command(id="c-1", name="set_rate", args={"pid": "rpm", "hz": 2.0})
    assert p.decode(p.encode(cmd), p.Command) == cmd
    bad = p.decode(b'{"v":1,"id":"c-2","name":"self_destruct"}', p.Command)
    assert isinstance(bad, p.Reject)
    assert "name" in bad.detail
    ack = p.CommandAck(id="c-1", ok=False, t_ms=p.MIN_T_MS, reason="unknown pid")
    assert p.decode(p.encode(ack), p.CommandAck) == ack
    status = p.Status(state="online", t_ms=p.MIN_T_MS, spool_samples=3, dropped_samples=0)
    assert p.decode_for_channel(p.Channel.STATUS, p.encode(status)) == status


def test_topics_build_and_parse() -> None:
    topic = p.topic_for("acme", "truck-7", p.Channel.CMD_ACK)
    assert topic == "fleet/v1/acme/truck-7/cmd/ack"
    assert p.parse_topic(topic) == p.Topic("acme", "truck-7", p.Channel.CMD_ACK)
    assert p.subscription(p.Channel.TELEMETRY, share_group="stream") == \
        "$share/stream/fleet/v1/+/+/telemetry"
    for bad in ("fleet/v1/acme/telemetry", "other/v1/a/b/telemetry", "fleet/v1/a/b/nope",
                "fleet/v1/a+/b/telemetry", "fleet/v1/$a/b/telemetry"):
        assert isinstance(p.parse_topic(bad), p.Reject), bad
    version = p.parse_topic("fleet/v9/a/b/telemetry")
    assert isinstance(version, p.Reject)
    assert version.reason == p.RejectReason.UNKNOWN_VERSION
    with pytest.raises(ValueError, match="vehicle id"):
        p.topic_for("acme", "a/b", p.Channel.TELEMETRY)


def test_published_json_schema_is_current() -> None:
    on_disk = json.loads((REPO / "docs" / "protocol.schema.json").read_text())
    assert on_disk == msgspec.json.decode(msgspec.json.encode(p.json_schema())), \
        "regenerate with: python -m core.protocol > docs/protocol.schema.json"


_wide = st.builds(
    lambda seq, n: p.Sample(seq=seq, t_ms=1_767_225_600_000 + seq, speed_kph=50.0,
                            rpm=1500.0, fuel_pct=40.0, odometer_km=12345.678,
                            coolant_c=90.0, battery_v=13.8, lat_deg=52.5, lon_deg=13.4,
                            extra={f"sig{i}": float(i) for i in range(n)}),
    st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=64))


@given(st.lists(_wide, min_size=1, max_size=1500, unique_by=lambda s: s.seq),
       st.integers(min_value=1, max_value=1000), st.integers(min_value=300, max_value=20_000))
@settings(max_examples=60, deadline=None)
def test_telemetry_payloads_keep_every_sample_in_order_within_both_limits(
        samples: list[p.Sample], max_samples: int, max_bytes: int) -> None:
    """The one splitting function (#14): nothing lost or repeated, order kept, every message
    within the count and byte limits unless it holds a single sample, and each decodes to
    exactly the samples it says it holds."""
    out = list(p.telemetry_payloads(samples, source=p.Source.SAMSARA, max_samples=max_samples,
                                    max_bytes=max_bytes))
    assert [s for chunk, _ in out for s in chunk] == samples
    for chunk, payload in out:
        assert len(chunk) <= max_samples
        assert len(payload) <= max_bytes or len(chunk) == 1
        message = p.decode(payload, p.Telemetry) if len(payload) <= p.MAX_PAYLOAD_BYTES else None
        if message is not None:
            assert list(message.samples) == chunk


def test_a_thousand_wide_vendor_samples_are_cut_to_the_byte_limit() -> None:
    """What the Samsara and Smartcar pullers publish: a full 1,000-sample batch of a vendor
    with 64 extra signals each is over 256 KiB as one message, so it is cut."""
    samples = [p.Sample(seq=i, t_ms=1_767_225_600_000 + i, speed_kph=50.0, lat_deg=52.5,
                        lon_deg=13.4, extra={f"signal_{k}": 1234.5678 + k for k in range(64)})
               for i in range(1, 1001)]
    whole = p.encode(p.Telemetry(source=p.Source.SAMSARA, samples=samples))
    assert len(whole) > p.MAX_PAYLOAD_BYTES
    out = list(p.telemetry_payloads(samples, source=p.Source.SAMSARA))
    assert len(out) > 1
    assert all(len(payload) <= p.MAX_PAYLOAD_BYTES for _, payload in out)
    assert sum(len(chunk) for chunk, _ in out) == 1000
