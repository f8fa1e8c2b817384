"""Health checks that log in: to the broker (and read its version) and to Redis."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from core.mqtt_url import parse_mqtt_url
from deploy.errors import ServiceError


def mqtt_ping(url: str, timeout_s: float = 10.0, *, read_version: bool = True) -> str:
    """Log in to the broker and read its version from $SYS; raises ServiceError on failure.

    With `read_version` false it only checks the login (a device may not read $SYS).
    """
    target = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if target.username:
        client.username_pw_set(target.username, target.password)
    connack: list[Any] = []
    version: list[str] = []
    connected, got_version = threading.Event(), threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        connack.append(reason)
        connected.set()
        if not reason.is_failure and read_version:
            c.subscribe("$SYS/broker/version")

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        version.append(msg.payload.decode(errors="replace"))
        got_version.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(target.host, target.port, keepalive=10)
    except OSError as exc:
        raise ServiceError(f"MQTT connect failed: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise ServiceError(f"MQTT broker did not answer the login within {timeout_s:.0f} s")
        if connack[0].is_failure:
            raise ServiceError(f"MQTT login refused: {connack[0]}")
        if not read_version:
            return "login ok"
        if not got_version.wait(timeout_s):
            raise ServiceError("MQTT broker accepted the login but sent no $SYS version")
    finally:
        client.disconnect()
        client.loop_stop()
    return version[0]


def redis_ping(url: str) -> str:
    """PING Redis and return its version; raises ServiceError on failure."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.ping()
        info = client.info("server")
        client.close()
    except redis.RedisError as exc:
        raise ServiceError(f"Redis: {exc}") from exc
    return str(info.get("redis_version", "?"))
