"""Helpers shared by the gateway tests: NMEA sentences, MQTT collection, a private broker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import aiomqtt

from core.mqtt_url import parse_mqtt_url
from core.ports import free_port
from edge_gateway.testing import PrivateBroker

__all__ = ["ModelDriver", "PrivateBroker", "free_port", "mqtt_client", "nmea", "wait_for"]


def nmea(body: str) -> bytes:
    """A sentence with its checksum."""
    checksum = 0
    for ch in body.encode():
        checksum ^= ch
    return f"${body}*{checksum:02X}\r\n".encode()


@contextlib.asynccontextmanager
async def mqtt_client(url: str, **kwargs: object) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT v5 client for a test."""
    t = parse_mqtt_url(url)
    async with aiomqtt.Client(t.host, t.port, username=t.username, password=t.password,
                              protocol=aiomqtt.ProtocolVersion.V5, **kwargs) as client:
        yield client


async def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    """Poll an async-agnostic predicate until it is true or fail with `what`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class ModelDriver:
    """Steps a simulator VehicleModel in (scaled) real time on a thread, recording its states.

    History is kept by wall-clock ms so published samples (timestamped by the gateway) can be
    compared with what the model really did around that moment.
    """

    def __init__(self, model: object, speed: float = 1.0, step_s: float = 0.05) -> None:
        self.model = model
        self.speed = speed
        self.step_s = step_s
        self.history: list[tuple[int, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(self.step_s)
            now = time.monotonic()
            state = self.model.step((now - last) * self.speed)  # type: ignore[attr-defined]
            last = now
            self.history.append((time.time_ns() // 1_000_000, state))

    def __enter__(self) -> ModelDriver:
        self.history.append((time.time_ns() // 1_000_000, self.model.state))  # type: ignore[attr-defined]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def envelope(self, attr: str, t0_ms: int, t1_ms: int) -> tuple[float, float] | None:
        """(min, max) of a state attribute over wall-clock [t0, t1], None without states."""
        values = [float(getattr(s, attr)) for t, s in self.history if t0_ms <= t <= t1_ms]
        return (min(values), max(values)) if values else None
