"""Parse `mqtt://user:password@host:port` URLs, shared by every MQTT client in the project."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from core.errors import SettingsError

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class MqttTarget:
    """Where and as whom to connect to a broker."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def parse_mqtt_url(url: str) -> MqttTarget:
    """Split an MQTT URL; raises SettingsError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise SettingsError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise SettingsError(f"MQTT URL {url!r}: no host")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise SettingsError(f"MQTT URL {url!r}: bad port") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "mqtts",
    )
