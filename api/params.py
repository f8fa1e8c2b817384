"""Request parsing helpers: every failure is a ValidationError naming the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from aiohttp import web

from api.errors import NotFound, ValidationError

T = TypeVar("T")
_FIELD_RE = re.compile(r"at `\$\.?([^`]*)`")


def query_int(request: web.Request, name: str, default: int, *, lo: int | None = None,
              hi: int | None = None) -> int:
    """An integer query parameter within [lo, hi]."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be an integer", field=name) from exc
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value


def query_float(request: web.Request, name: str) -> float | None:
    """An optional float query parameter."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be a number", field=name) from exc


def query_time(request: web.Request, name: str, default: datetime | None = None
               ) -> datetime | None:
    """An ISO 8601 time (naive means UTC)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"{name} must be an ISO 8601 time", field=name) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def query_uuid(request: web.Request, name: str) -> UUID | None:
    """An optional UUID query parameter."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return UUID(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be a UUID", field=name) from exc


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    """An optional parameter restricted to `choices`."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ValidationError(f"{name} must be one of {', '.join(choices)}", field=name)
    return raw


def query_bool(request: web.Request, name: str) -> bool | None:
    """An optional boolean (true/false/1/0)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError(f"{name} must be true or false", field=name)


def path_uuid(request: web.Request, name: str = "id") -> UUID:
    """A UUID path parameter; anything else cannot exist (404)."""
    try:
        return UUID(request.match_info[name])
    except ValueError as exc:
        raise NotFound(f"no such {name}") from exc


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


async def read_json(request: web.Request, kind: type[T]) -> T:
    """Decode and validate the JSON body as `kind` (a msgspec Struct)."""
    raw = await request.read()
    if not raw:
        raise ValidationError("a JSON body is required", field="body")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise convert_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", field="body") from exc


def to_builtins(value: Any) -> Any:
    """JSON-ready values (UUID, datetime to strings)."""
    return msgspec.to_builtins(value)
