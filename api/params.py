"""Request parsing helpers: every failure is a ValidationError naming the field.

Two rules hold for every parameter (docs/api.md, "Parameters"):

* text that PostgreSQL cannot store (NUL, lone UTF-16 surrogates) is refused with a 400 that
  names the field, wherever it comes from: query, path (`api.middleware.pipeline`
  calls `check_text`) or JSON body (`read_json` walks the decoded value);
* an empty value (``?vehicle_id=``) is a value, not an absent parameter: the helpers below
  refuse it like any other value of the wrong form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from aiohttp import web

from api.errors import NotFound, Unprocessable, ValidationError
from core.protocol import whole

T = TypeVar("T")
_FIELD_RE = re.compile(r"at `\$\.?([^`]*)`")
# PostgreSQL text (UTF-8) has no NUL, and UTF-8 has no encoding of a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")
_FULL_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
BBOX_PATTERN = whole(f"{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}")
"""What the document says a `bbox` query value looks like (four JSON numbers)."""
_HEX = "[0-9A-Fa-f]"
UUID_PATTERN = whole(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
"""The one spelling of a UUID the API reads (RFC 9562's hex-and-hyphens form).

Python's `UUID()` also takes braces, a `urn:uuid:` prefix and missing hyphens; the document
states a pattern (a `format` alone is not checked by JSON Schema validators), so the parser
holds to the same pattern and a value the document calls invalid is refused."""
UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
"""The schema of every UUID parameter."""


def unstorable(text: str) -> str | None:
    """The first character PostgreSQL text cannot hold (NUL, lone surrogate), or None."""
    match = _UNSTORABLE.search(text)
    return match.group() if match else None


def check_text(value: str, field: str) -> str:
    """`value` unchanged, or a 400 naming `field` when PostgreSQL could not store it."""
    bad = unstorable(value)
    if bad is not None:
        raise ValidationError(f"{field} contains U+{ord(bad):04X}, which text cannot hold",
                              field=storable(field))
    return value


def check_tree(value: Any, path: str = "") -> None:
    """`check_text` on every string and key of a decoded JSON value; fields are dotted paths."""
    if isinstance(value, str):
        check_text(value, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            check_text(str(key), sub)
            check_tree(item, sub)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_tree(item, f"{path}[{i}]")


def storable(text: str) -> str:
    """`text` with what PostgreSQL cannot store replaced by U+FFFD (for audit rows and logs)."""
    return _UNSTORABLE.sub("\ufffd", text)


def storable_tree(value: Any) -> Any:
    """`storable` applied to every string and key of a JSON-like value."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_tree(v) for v in value]
    return value


def like_pattern(text: str) -> str:
    """`text` as a LIKE pattern that matches it literally (PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _raw(request: web.Request, name: str) -> str | None:
    """The raw value (None when absent); empty is a value, refused by the typed helpers."""
    return request.query.get(name)


def query_text(request: web.Request, name: str) -> str | None:
    """An optional free-text filter; empty is refused (the document says minLength 1)."""
    raw = _raw(request, name)
    if raw is None:
        return None
    if raw == "":
        raise ValidationError(f"{name} must not be empty (leave it out for no filter)",
                              field=name)
    return check_text(raw, name)


_INTEGER_RE = re.compile(r"[+-]?[0-9]{1,18}")


def query_int(request: web.Request, name: str, default: int, *, lo: int | None = None,
              hi: int | None = None) -> int:
    """An integer query parameter within [lo, hi]."""
    raw = _raw(request, name)
    if raw is None:
        return default
    if not _INTEGER_RE.fullmatch(raw):
        raise ValidationError(f"{name} must be an integer", field=name)
    value = int(raw)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value


def query_float(request: web.Request, name: str) -> float | None:
    """An optional finite float query parameter."""
    raw = _raw(request, name)
    if raw is None:
        return None
    return _finite(raw, name)


def _finite(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be a number", field=name) from exc
    if not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number", field=name)
    return value


def parse_time(raw: str, name: str) -> datetime:
    """An RFC 3339 date-time (the document's `format: date-time`); no offset means UTC.

    Written out rather than `datetime.fromisoformat`, which accepts forms RFC 3339 does not
    (week dates, no separators) and refuses some it does (leap second, > 6 digits).
    """
    match = _RFC3339.fullmatch(raw)
    if match is None:
        raise ValidationError(f"{name} must be an RFC 3339 date-time", field=name)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    tz = UTC
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValidationError(f"{name} has an invalid UTC offset", field=name)
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        # A leap second (:60) is the last instant of its minute here.
        leap = second == 60
        value = datetime(year, month, day, hour, minute, 59 if leap else second,
                         999999 if leap else micro, tzinfo=tz)
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationError(f"{name} is not a valid date-time: {exc}", field=name) from exc


def query_time(request: web.Request, name: str, default: datetime | None = None
               ) -> datetime | None:
    """An optional RFC 3339 date-time query parameter (see `parse_time`)."""
    raw = _raw(request, name)
    return default if raw is None else parse_time(raw, name)


def query_date(request: web.Request, name: str) -> date | None:
    """An optional RFC 3339 full-date (YYYY-MM-DD)."""
    raw = _raw(request, name)
    if raw is None:
        return None
    match = _FULL_DATE.fullmatch(raw)
    if match is None:
        raise ValidationError(f"{name} must be a date (YYYY-MM-DD)", field=name)
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError as exc:
        raise ValidationError(f"{name} must be a date (YYYY-MM-DD)", field=name) from exc


def query_uuid(request: web.Request, name: str) -> UUID | None:
    """An optional UUID query parameter."""
    raw = _raw(request, name)
    if raw is None:
        return None
    if re.fullmatch(UUID_PATTERN, raw) is None:
        raise ValidationError(f"{name} must be a UUID", field=name)
    return UUID(raw)


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    """An optional parameter restricted to `choices`."""
    raw = _raw(request, name)
    if raw is None:
        return None
    if raw not in choices:
        raise ValidationError(f"{name} must be one of {', '.join(choices)}", field=name)
    return raw


def query_bool(request: web.Request, name: str) -> bool | None:
    """An optional boolean: true/false (also 1/0, yes/no)."""
    raw = _raw(request, name)
    if raw is None:
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError(f"{name} must be true or false", field=name)


@dataclass(frozen=True, slots=True)
class BBox:
    """A longitude/latitude box in degrees (RFC 7946 5.2): edges are meridians and parallels.

    `west` > `east` means the box crosses the antimeridian; -180..180 is the whole world.
    """

    west: float
    south: float
    east: float
    north: float

    def contains(self, lon: float, lat: float) -> bool:
        """Whether a position lies in the box (edges included)."""
        if not self.south <= lat <= self.north:
            return False
        if self.west <= self.east:
            return self.west <= lon <= self.east
        return lon >= self.west or lon <= self.east

    def as_list(self) -> list[float]:
        """[west, south, east, north], as the request spelled it."""
        return [self.west, self.south, self.east, self.north]


def parse_bbox(values: Sequence[float], field: str = "bbox") -> BBox:
    """Four finite numbers west,south,east,north (RFC 7946 order).

    Numbers that are not a box on Earth (out of range, south >= north, west == east) are a
    422: the document can say so only in words.
    """
    if len(values) != 4:
        raise ValidationError("bbox must be four numbers west,south,east,north", field=field)
    w, s, e, n = values
    # NaN and infinities fail these comparisons, so they are out of range too.
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise Unprocessable("bbox must be west,south,east,north in degrees (longitudes "
                              "-180..180, latitudes -90..90)", field=field)
    if s >= n:
        raise Unprocessable("bbox south must be below north", field=field)
    if w == e:
        raise Unprocessable("bbox west and east are equal (west > east crosses the "
                            "antimeridian; -180,...,180 is the whole world)", field=field)
    return BBox(w, s, e, n)


def query_bbox(request: web.Request, name: str = "bbox") -> BBox | None:
    """An optional bbox query parameter ``west,south,east,north``."""
    raw = _raw(request, name)
    if raw is None:
        return None
    if re.fullmatch(BBOX_PATTERN, raw) is None:
        raise ValidationError("bbox must be four numbers west,south,east,north", field=name)
    return parse_bbox([float(p) for p in raw.split(",")], name)


def path_uuid(request: web.Request, name: str = "id") -> UUID:
    """A UUID path parameter; anything else cannot exist (404)."""
    raw = request.match_info[name]
    if re.fullmatch(UUID_PATTERN, raw) is None:
        raise NotFound(f"no such {name}")
    return UUID(raw)


def page_params(request: web.Request) -> tuple[int, int, int]:
    """(page, limit, offset) with limit <= 100 as in the seed."""
    page = query_int(request, "page", 1, lo=1, hi=1_000_000)
    limit = query_int(request, "limit", 50, lo=1, hi=100)
    return page, limit, (page - 1) * limit


def convert_error(exc: msgspec.ValidationError) -> ValidationError:
    """msgspec's message names the path (``at `$.year```); keep it as the field."""
    text = str(exc)
    match = _FIELD_RE.search(text)
    field = match.group(1) if match else None
    message = _FIELD_RE.sub("", text).strip(" -") or "invalid body"
    if field is None:
        missing = re.search(r"missing required field `([^`]+)`", text)
        field = missing.group(1) if missing else None
    return ValidationError(message, field=field or None)


def _integral(value: Any) -> Any:
    """JSON Schema's `integer` includes 2.0; msgspec's int does not, so such floats become
    ints (a float field takes an int just as well)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


async def read_json(request: web.Request, kind: type[T]) -> T:
    """Decode and validate the JSON body as `kind` (a msgspec Struct)."""
    raw = await request.read()
    if not raw:
        raise ValidationError("a JSON body is required", field="body")
    try:
        value = msgspec.convert(_integral(msgspec.json.decode(raw)), type=kind)
    except msgspec.ValidationError as exc:
        raise convert_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", field="body") from exc
    # msgspec already refuses lone surrogates (invalid UTF-8 / JSON); NUL it lets through.
    check_tree(msgspec.to_builtins(value))
    return value


def to_builtins(value: Any) -> Any:
    """JSON-ready values (UUID, datetime to strings)."""
    return msgspec.to_builtins(value)
