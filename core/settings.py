"""Typed settings: one object per process, from TOML files and ``FLEET_*`` environment variables.

Layering, lowest first: the struct defaults; ``.fleet/local.toml`` written by
``fleet services up`` (connection URLs of the project's own services); the file named by
``--config`` or ``FLEET_CONFIG``; then ``FLEET_<SECTION>_<KEY>`` environment variables
(``FLEET_DATABASE_URL`` sets ``database.url``). Values are validated by msgspec at start-up,
and a wrong value names the key and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from core.errors import SettingsError

ENV_PREFIX = "FLEET_"
LOCAL_SERVICES_FILE = Path(".fleet") / "local.toml"

S = TypeVar("S", bound=msgspec.Struct)


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PostgreSQL (TimescaleDB + PostGIS) connection settings, one URL per role."""

    url: str = "postgresql://fleet_app@127.0.0.1:55432/fleet"
    """Application role: row-level security applies (the API)."""
    owner_url: str = "postgresql://fleet_owner@127.0.0.1:55432/fleet"
    """Schema owner: runs migrations."""
    ingest_url: str = "postgresql://fleet_ingest@127.0.0.1:55432/fleet"
    """Ingest role: writes every tenant's telemetry (the stream)."""
    admin_url: str = ""
    """Superuser, only for provisioning roles, databases and extensions; empty in production."""
    connect_timeout_s: float = 10.0


class MqttSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MQTT broker connection settings."""

    url: str = "mqtt://127.0.0.1:51883"
    """mqtt:// or mqtts:// with optional user:password@."""
    keepalive_s: int = 30
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Redis connection settings."""

    url: str = "redis://127.0.0.1:56379/0"


def env_overrides(root: type[msgspec.Struct], environ: Mapping[str, str]) -> dict[str, Any]:
    """Map ``FLEET_SECTION_KEY`` variables onto the nested field names of ``root``.

    Public for sections that a process keeps as free-form tables and validates later with
    their own struct (the API's ``[integrations]`` and ``[jobs]``).

    The split between section and key is found from the settings' own field names, so
    ``FLEET_DATABASE_OWNER_URL`` means ``database.owner_url`` without a special separator.
    """
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "FLEET_CONFIG":
            continue
        path = _resolve_env_path(root, name[len(ENV_PREFIX):].lower())
        if path is None:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(value)
    return out


def _resolve_env_path(struct: type[msgspec.Struct], rest: str) -> list[str] | None:
    for field in msgspec.structs.fields(struct):
        if rest == field.name:
            return [field.name]
        sub = _struct_type(field.type)
        if sub is not None and rest.startswith(field.name + "_"):
            tail = _resolve_env_path(sub, rest[len(field.name) + 1:])
            if tail is not None:
                return [field.name, *tail]
    return None


def _struct_type(tp: Any) -> type[msgspec.Struct] | None:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    return None


def _parse_env_value(value: str) -> Any:
    """Environment values are strings; lists may be given as JSON (``["a","b"]``)."""
    stripped = value.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            return msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return value
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc


def _filter_known(root: type[msgspec.Struct], data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only sections the process knows: the local services file serves every process."""
    known = {f.name for f in msgspec.structs.fields(root)}
    return {k: v for k, v in data.items() if k in known}


def load_settings(
    root: type[S],
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    local_file: Path | None = LOCAL_SERVICES_FILE,
) -> S:
    """Build and validate the settings object ``root`` for one process.

    Raises SettingsError naming the offending key (``$.database.connect_timeout_s``) and the
    expected type or range.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if local_file is not None and local_file.is_file():
        data = _merge(data, _filter_known(root, _read_toml(local_file)))
    config = config_file if config_file is not None else env.get("FLEET_CONFIG")
    if config:
        data = _merge(data, _read_toml(Path(config)))
    data = _merge(data, env_overrides(root, env))
    try:
        return msgspec.convert(data, type=root, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid settings: {exc}") from exc


def to_toml_lines(section: str, values: Mapping[str, str | int | float | bool]) -> list[str]:
    """Render one flat TOML table; used for the local services file."""
    lines = [f"[{section}]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {msgspec.json.encode(value).decode()}")
    return lines
