"""The wire contract: MQTT topics and payloads, defined once for every part of the project.

Gateways, API pullers and simulators encode with it; the stream decodes with it. Topics are
``fleet/v1/{tenant}/{vehicle}/{channel}``; payloads are JSON objects carrying ``"v": 1``.
A telemetry message carries a batch of samples, each with a per-vehicle sequence number
that increases monotonically across gateway restarts: ``(vehicle, seq)`` is the idempotency
key. Units are in the field names. See docs/protocol.md and docs/protocol.schema.json.

Decoding never raises: bad input comes back as a `Reject` with a reason, so a pipeline can
turn it into a dead letter.
"""

from __future__ import annotations

import enum
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "fleet"
TOPIC_VERSION: Final = "v1"
MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Larger messages are rejected before parsing (the broker's limit is 1 MiB)."""
MAX_SAMPLES_PER_MESSAGE: Final = 1000
MAX_EXTRA_SIGNALS: Final = 64
MAX_DTCS: Final = 64
# Year 2000 .. 2200 in Unix milliseconds: anything outside is a broken clock, not data.
MIN_T_MS: Final = 946_684_800_000
MAX_T_MS: Final = 7_258_118_400_000

NO_MATCHING_SUBSCRIBERS: Final = 0x10
"""MQTT v5 PUBACK reason "no matching subscribers": the broker took the message and nobody got
it. For telemetry that is not delivery (the stream was not subscribed, as after a broker
restart): a device keeps the samples and sends them again (docs/protocol.md, "Delivery")."""



def whole(body: str) -> str:
    """A pattern that matches `body` as the whole string, in Python and in JSON Schema alike.

    JSON Schema patterns are ECMA-262, where `$` is the end of the string; Python's `$` also
    matches before a final newline, so `^P0301$` would let "P0301\\n" through msgspec's check
    while the published schema refuses it. The lookahead rules that newline out in both.
    """
    return f"^{body}(?!\\n)$"


ID_PATTERN: Final = whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Tenant and vehicle ids in topics: no '/', '+', '#' or '$', so ACL patterns stay safe."""
_ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, Meta(pattern=ID_PATTERN, description="tenant slug or vehicle code")]
DtcCode = Annotated[str, Meta(pattern=whole(r"[PCBU][0-3][0-9A-F]{3}"),
                               description="SAE J2012 DTC")]
SignalName = Annotated[str, Meta(pattern=whole(r"[a-z][a-z0-9_]{0,63}"))]
EXTRA_LIMIT: Final = 1e15
ExtraValue = Annotated[float, Meta(ge=-EXTRA_LIMIT, le=EXTRA_LIMIT,
                                   description="a further signal's value, in its name's unit")]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1, description="per-vehicle sequence number")]
TimeMs = Annotated[int, Meta(ge=MIN_T_MS, le=MAX_T_MS, description="Unix time, milliseconds, UTC")]


# Every signal is bounded: out-of-range values (and the non-finite ones, which fail any bound)
# are refused at decode time rather than stored.
LatDeg = Annotated[float, Meta(ge=-90, le=90, description="WGS84 latitude, degrees")]
LonDeg = Annotated[float, Meta(ge=-180, le=180, description="WGS84 longitude, degrees")]
AltM = Annotated[float, Meta(ge=-1000, le=20000, description="altitude above MSL, metres")]
SpeedKph = Annotated[float, Meta(ge=0, le=500, description="ground speed, km/h")]
HeadingDeg = Annotated[float, Meta(ge=0, le=360, description="course, degrees from true north")]
Hdop = Annotated[float, Meta(ge=0, le=100, description="horizontal dilution of precision")]
Rpm = Annotated[float, Meta(ge=0, le=20000, description="engine speed, rev/min")]
TempC = Annotated[float, Meta(ge=-60, le=250, description="temperature, degC")]
Percent = Annotated[float, Meta(ge=0, le=100, description="percent")]
OdometerKm = Annotated[float, Meta(ge=0, le=1e8, description="odometer, km")]
Hours = Annotated[float, Meta(ge=0, le=1e6, description="engine hours, h")]
Volts = Annotated[float, Meta(ge=0, le=60, description="battery / adapter voltage, V")]


class Channel(enum.StrEnum):
    """The last topic level(s): what kind of message travels on the topic."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    EVENTS = "events"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"


class Source(enum.StrEnum):
    """Where the samples of a telemetry message came from."""

    GATEWAY = "gateway"
    OBD = "obd"
    CAN = "can"
    GPS = "gps"
    SAMSARA = "samsara"
    SMARTCAR = "smartcar"
    SIMULATOR = "simulator"


class RejectReason(enum.StrEnum):
    """Why a message became a dead letter (stored in ingest_rejects.reason)."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    INVALID = "invalid"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_VEHICLE = "unknown_vehicle"
    INACTIVE_VEHICLE = "inactive_vehicle"
    VEHICLE_NOT_IN_TENANT = "vehicle_not_in_tenant"
    GPS_FILTERED = "gps_filtered"
    REFUSED_BY_DATABASE = "refused_by_database"
    """The message decoded, but the database refused a row made from it (the stream's sink)."""
    OVER_LIMIT = "over_limit"
    """The device or its tenant sent more than its limit (the stream's `[limits]`): the
    message was not processed."""


class Reject(msgspec.Struct, frozen=True):
    """A message that cannot be used, with a machine-readable reason and a human detail."""

    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic."""

    tenant: str
    vehicle: str
    channel: Channel

    def __str__(self) -> str:
        return topic_for(self.tenant, self.vehicle, self.channel)


def topic_for(tenant: str, vehicle: str, channel: Channel) -> str:
    """Build a topic; raises ValueError for an id that topics cannot carry."""
    for kind, value in (("tenant", tenant), ("vehicle", vehicle)):
        if not _ID_RE.match(value):
            raise ValueError(f"{kind} id {value!r} does not match {ID_PATTERN}")
    return f"{TOPIC_ROOT}/{TOPIC_VERSION}/{tenant}/{vehicle}/{channel.value}"


DEVICE_PUBLISHES: Final = (Channel.TELEMETRY, Channel.STATUS, Channel.EVENTS, Channel.CMD_ACK)
"""The channels a device login may publish on, each on its own vehicle's topic only."""
DEVICE_SUBSCRIBES: Final = (Channel.CMD,)
"""The channels a device login may subscribe to: its own vehicle's commands, as a literal
filter (no wildcard, no ``$share`` group)."""


def device_login(tenant: str, vehicle: str) -> str:
    """A device's broker login, which is also the only client id it may connect with:
    ``{tenant}/{vehicle}``. Unambiguous because ids carry no '/', unlike the old
    ``gw-{tenant}-{vehicle}`` client id ("a" + "b-c" and "a-b" + "c" met there)."""
    for kind, value in (("tenant", tenant), ("vehicle", vehicle)):
        if not _ID_RE.match(value):
            raise ValueError(f"{kind} id {value!r} does not match {ID_PATTERN}")
    return f"{tenant}/{vehicle}"


def subscription(channel: Channel, *, tenant: str = "+", vehicle: str = "+",
                 share_group: str | None = None) -> str:
    """A subscription filter; with `share_group`, an MQTT v5 shared subscription."""
    filt = f"{TOPIC_ROOT}/{TOPIC_VERSION}/{tenant}/{vehicle}/{channel.value}"
    return f"$share/{share_group}/{filt}" if share_group else filt


def parse_topic(topic: str) -> Topic | Reject:
    """Split a topic into tenant, vehicle and channel, or say why it is not ours."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != TOPIC_ROOT:
        return Reject(RejectReason.BAD_TOPIC, f"topic {topic!r} is not fleet/v1/...")
    if parts[1] != TOPIC_VERSION:
        return Reject(RejectReason.UNKNOWN_VERSION, f"topic version {parts[1]!r} is not v1")
    tenant, vehicle = parts[2], parts[3]
    if not _ID_RE.match(tenant) or not _ID_RE.match(vehicle):
        return Reject(RejectReason.BAD_TOPIC, f"topic {topic!r} has an invalid tenant or vehicle")
    try:
        channel = Channel("/".join(parts[4:]))
    except ValueError:
        return Reject(RejectReason.BAD_TOPIC, f"topic {topic!r} has an unknown channel")
    return Topic(tenant, vehicle, channel)


class Sample(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
             omit_defaults=True):
    """One timestamped reading of a vehicle. Every signal but `seq` and `t_ms` is optional."""

    seq: Seq
    t_ms: TimeMs
    lat_deg: LatDeg | None = None
    lon_deg: LonDeg | None = None
    alt_m: AltM | None = None
    speed_kph: SpeedKph | None = None
    heading_deg: HeadingDeg | None = None
    hdop: Hdop | None = None
    sats: Annotated[int, Meta(ge=0, le=128)] | None = None
    gps_fix: Annotated[int, Meta(ge=0, le=8)] | None = None
    """NMEA GGA fix quality: 0 no fix, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 estimated."""
    ignition: bool | None = None
    rpm: Rpm | None = None
    coolant_c: TempC | None = None
    fuel_pct: Percent | None = None
    odometer_km: OdometerKm | None = None
    engine_hours_h: Hours | None = None
    battery_v: Volts | None = None
    throttle_pct: Percent | None = None
    engine_load_pct: Percent | None = None
    dtcs: Annotated[list[DtcCode], Meta(max_length=MAX_DTCS)] | None = None
    """Stored and pending diagnostic trouble codes currently reported."""
    extra: Annotated[dict[SignalName, ExtraValue], Meta(max_length=MAX_EXTRA_SIGNALS)] | None = None
    """Further signals by name; the name carries the unit (for example `intake_temp_c`)."""

    def __post_init__(self) -> None:
        # The one rule that bounds cannot say; json_schema() states it too (if/then).
        if (self.lat_deg is None) != (self.lon_deg is None):
            raise ValueError("lat_deg and lon_deg must be given together")
        # Decoding checks the bounds; this catches a publisher's own non-finite value when it
        # builds the sample (msgspec would encode it as null).
        if self.extra:
            for name, value in self.extra.items():
                if not math.isfinite(value):
                    raise ValueError(f"extra signal {name!r} is not a finite number")


class Telemetry(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
                omit_defaults=True, tag_field="v", tag=PROTOCOL_VERSION):
    """A batch of samples of one vehicle (topic channel `telemetry`)."""

    source: Source
    samples: Annotated[list[Sample], Meta(min_length=1, max_length=MAX_SAMPLES_PER_MESSAGE)]
    device: Id | None = None
    sent_ms: TimeMs | None = None
    """When the publisher sent the message (for latency measurement)."""


class Status(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
             omit_defaults=True, tag_field="v", tag=PROTOCOL_VERSION):
    """Gateway health (channel `status`); the retained Last Will says `offline`."""

    state: Literal["online", "offline", "sleeping"]
    t_ms: TimeMs
    software: Annotated[str, Meta(max_length=64)] | None = None
    spool_samples: Annotated[int, Meta(ge=0)] | None = None
    dropped_samples: Annotated[int, Meta(ge=0)] | None = None
    unknown_frames: Annotated[int, Meta(ge=0)] | None = None
    battery_v: Volts | None = None
    sources: dict[Annotated[str, Meta(max_length=32)],
                  Annotated[str, Meta(max_length=200)]] | None = None
    """State of each source, for example {"obd": "connected", "can": "no frames"}."""


class DeviceEvent(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
                  omit_defaults=True, tag_field="v", tag=PROTOCOL_VERSION):
    """Something the device itself noticed (channel `events`), such as a power-saving switch."""

    t_ms: TimeMs
    kind: SignalName
    detail: dict[SignalName, str | float | bool] | None = None


CommandName = Literal["set_rate", "read_dtcs", "report_status"]


class Command(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
              omit_defaults=True, tag_field="v", tag=PROTOCOL_VERSION):
    """A downlink command (channel `cmd`), answered with a CommandAck of the same id."""

    id: Id
    name: CommandName
    args: dict[SignalName, str | float | bool] | None = None
    expires_ms: TimeMs | None = None


class CommandAck(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
                 omit_defaults=True, tag_field="v", tag=PROTOCOL_VERSION):
    """The answer to a command (channel `cmd/ack`); `reason` says why when `ok` is false."""

    id: Id
    ok: bool
    t_ms: TimeMs
    reason: Annotated[str, Meta(max_length=500)] | None = None
    result: dict[SignalName, Any] | None = None


Message = Telemetry | Status | DeviceEvent | Command | CommandAck
M = TypeVar("M", Telemetry, Status, DeviceEvent, Command, CommandAck)

MESSAGE_TYPES: Final[dict[Channel, type[Message]]] = {
    Channel.TELEMETRY: Telemetry,
    Channel.STATUS: Status,
    Channel.EVENTS: DeviceEvent,
    Channel.CMD: Command,
    Channel.CMD_ACK: CommandAck,
}


class _Versioned(msgspec.Struct):
    v: Any = None


class _NoVersion(msgspec.Struct, tag_field="v", tag=0):
    """Never sent: decoding into a union makes msgspec require the tag (`v`), which it leaves
    optional for a lone tagged struct. Version 0 is refused like any other unknown version."""


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    tp: msgspec.json.Decoder(tp | _NoVersion) for tp in MESSAGE_TYPES.values()
}
_version_decoder = msgspec.json.Decoder(_Versioned)
_encoder = msgspec.json.Encoder()


def decode(payload: bytes | bytearray | memoryview, kind: type[M]) -> M | Reject:
    """Decode and validate one payload; never raises on bad input."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.TOO_LARGE,
                      f"{len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        message = _decoders[kind].decode(payload)
    except msgspec.ValidationError as exc:
        return _classify(payload, exc)
    except msgspec.DecodeError as exc:
        return Reject(RejectReason.MALFORMED, str(exc))
    except RecursionError:
        return Reject(RejectReason.MALFORMED, "nesting too deep")
    if isinstance(message, _NoVersion):
        return Reject(RejectReason.UNKNOWN_VERSION, "protocol version 0 is not 1")
    return message  # type: ignore[no-any-return]


def _classify(payload: bytes | bytearray | memoryview, exc: msgspec.ValidationError) -> Reject:
    """Tell an unknown protocol version apart from an invalid v1 message."""
    try:
        probe = _version_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return Reject(RejectReason.INVALID, str(exc))
    if probe.v is not None and probe.v != PROTOCOL_VERSION:
        return Reject(RejectReason.UNKNOWN_VERSION, f"protocol version {probe.v!r} is not 1")
    return Reject(RejectReason.INVALID, str(exc))


def decode_for_channel(channel: Channel, payload: bytes) -> Message | Reject:
    """Decode a payload by the channel of the topic it came on."""
    return decode(payload, MESSAGE_TYPES[channel])  # type: ignore[type-var]


def encode(message: Message) -> bytes:
    """Encode a message as compact JSON."""
    return _encoder.encode(message)


def telemetry_payloads(samples: Sequence[Sample], *, source: Source, device: str | None = None,
                       sent_ms: int | None = None, max_samples: int = MAX_SAMPLES_PER_MESSAGE,
                       max_bytes: int = MAX_PAYLOAD_BYTES) -> Iterator[tuple[list[Sample], bytes]]:
    """Encoded Telemetry messages for `samples`, in their order, each with the samples it
    holds: at most `max_samples` a message, and a message over `max_bytes` split in halves
    until it fits; `sent_ms` is each message's encoding time unless given. The one place a
    batch is cut to the limits the stream enforces (the gateway, the pullers and the load
    generator all use it). A single sample too large on its own is yielded as it is: the
    stream dead-letters it with its reason."""
    for start in range(0, len(samples), max_samples):
        todo = [list(samples[start:start + max_samples])]
        while todo:
            chunk = todo.pop()
            stamp = sent_ms if sent_ms is not None else int(time.time() * 1000)
            payload = encode(Telemetry(source=source, samples=chunk, device=device,
                                       sent_ms=stamp))
            if len(payload) <= max_bytes or len(chunk) == 1:
                yield chunk, payload
                continue
            half = len(chunk) // 2
            todo += [chunk[half:], chunk[:half]]  # the first half next: order is kept


def json_schema() -> dict[str, Any]:
    """JSON Schema of every payload, for device makers (docs/protocol.schema.json)."""
    schemas, components = msgspec.json.schema_components(
        list(MESSAGE_TYPES.values()), ref_template="#/$defs/{name}")
    # What Sample.__post_init__ checks beyond the bounds: a position has both coordinates.
    components["Sample"]["allOf"] = [
        {"if": {"properties": {a: {"type": "number"}}, "required": [a]},
         "then": {"properties": {b: {"type": "number"}}, "required": [b]}}
        for a, b in (("lat_deg", "lon_deg"), ("lon_deg", "lat_deg"))]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fleet-telemetry.dev/schema/protocol-v1.json",
        "title": "fleet-telemetry wire contract v1",
        "description": "Payloads of fleet/v1/{tenant}/{vehicle}/{channel}; see docs/protocol.md.",
        "oneOf": list(schemas),
        "$defs": components,
    }


if __name__ == "__main__":  # python -m core.protocol > docs/protocol.schema.json
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(json_schema())).decode() + "\n")
