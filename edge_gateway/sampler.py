"""From decoded signal values to samples: a latest-value board and a period-aligned builder.

Sources write into the `Board` from their own threads; the board keeps only the latest value
of each signal (overflow policy: overwrite, so memory is bounded by the number of signals
and a slow publisher never backs up a CAN bus). The `SampleBuilder` runs on the event loop
and, at each tick, emits one sample holding every signal whose period boundary has passed
and whose value changed since it was last emitted. Periods are aligned to the Unix epoch,
so signals of the same rate land in the same sample.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import msgspec

from core.protocol import MAX_DTCS, MAX_EXTRA_SIGNALS, Sample
from edge_gateway.signals import (
    DEFAULT_RAW_RATE_HZ,
    SAMPLE_FIELDS,
    SIGNALS,
    SIGNALS_BY_NAME,
    SignalSpec,
    Value,
    period_ms,
)


@dataclass(slots=True)
class _Entry:
    value: Value
    t_ms: int
    version: int


class Board:
    """Thread-safe latest value of every signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._version = 0

    def put(self, name: str, value: Value, t_ms: int) -> None:
        """Record a new value of one signal."""
        with self._lock:
            self._version += 1
            self._entries[name] = _Entry(value, t_ms, self._version)

    def put_many(self, values: dict[str, Value], t_ms: int) -> None:
        """Record several values read at the same moment."""
        with self._lock:
            for name, value in values.items():
                self._version += 1
                self._entries[name] = _Entry(value, t_ms, self._version)

    def get(self, name: str) -> tuple[Value, int] | None:
        """The latest (value, t_ms) of a signal, or None when it was never read."""
        with self._lock:
            entry = self._entries.get(name)
            return None if entry is None else (entry.value, entry.t_ms)

    def snapshot(self) -> dict[str, tuple[Value, int, int]]:
        """Every signal as name -> (value, t_ms, version)."""
        with self._lock:
            return {k: (e.value, e.t_ms, e.version) for k, e in self._entries.items()}


class Rates:
    """Current rate of every signal: the table, then config, then `set_rate` commands."""

    def __init__(self, overrides: dict[str, float] | None = None) -> None:
        self._rates = {s.name: s.rate_hz for s in SIGNALS}
        for name, rate in (overrides or {}).items():
            self.set(name, rate)
        self.floor_period_ms = 0
        """Power-saving floor on every period (the heartbeat), 0 = none."""

    def set(self, name: str, rate_hz: float) -> None:
        """Change one signal's rate; raises KeyError for an unknown signal."""
        if name not in self._rates:
            raise KeyError(name)
        if not (0 <= rate_hz <= 100) or not math.isfinite(rate_hz):
            raise ValueError(f"rate {rate_hz} Hz is outside 0..100")
        self._rates[name] = rate_hz

    def set_raw(self, name: str, rate_hz: float) -> None:
        """Register the rate of a signal outside the table (a raw unknown PID or frame)."""
        self._rates[name] = rate_hz

    def rate_hz(self, name: str) -> float:
        """The configured rate of a signal (raw signals use the default raw rate)."""
        return self._rates.get(name, DEFAULT_RAW_RATE_HZ)

    def period_ms(self, name: str) -> int:
        """The effective period, including the power-saving floor."""
        return max(period_ms(self.rate_hz(name)), self.floor_period_ms)

    def as_dict(self) -> dict[str, float]:
        """Every configured rate, for status reports."""
        return dict(self._rates)


_FIELD_RE = re.compile(r"at `\$\.(\w+)")


class SampleBuilder:
    """Turns board contents into sample field dicts, one per tick at most."""

    def __init__(self, board: Board, rates: Rates) -> None:
        self.board = board
        self.rates = rates
        self._emitted_version: dict[str, int] = {}
        self._slot: dict[str, int] = {}
        self.rejected_values = 0
        """Values dropped because the contract refuses them (out of range)."""

    def build(self, now_ms: int) -> dict[str, Any] | None:
        """Fields of the sample due at `now_ms` (without seq), or None when nothing is due."""
        fields: dict[str, Any] = {}
        extra: dict[str, float] = {}
        for name, (value, _t, version) in self.board.snapshot().items():
            if version == self._emitted_version.get(name):
                continue
            if self.rates.rate_hz(name) <= 0:
                continue  # switched off (config or set_rate)
            period = self.rates.period_ms(name)
            slot = now_ms // period
            if slot == self._slot.get(name):
                continue
            self._slot[name] = slot
            self._emitted_version[name] = version
            spec = SIGNALS_BY_NAME.get(name)
            target = spec.field if spec is not None else name
            taken = target in fields or target in extra
            if taken and not _prefer(spec, fields.get("_src_" + target)):
                continue
            _place(target, spec, value, fields, extra)
        for key in [k for k in fields if k.startswith("_src_")]:
            del fields[key]
        if extra:
            fields["extra"] = dict(list(extra.items())[:MAX_EXTRA_SIGNALS])
        return fields or None

    def make_sample(self, seq: int, t_ms: int, fields: dict[str, Any]) -> Sample:
        """Validate fields against the contract; values it refuses are dropped and counted."""
        data = dict(fields)
        data["seq"] = seq
        data["t_ms"] = t_ms
        for _ in range(len(data) + 1):
            try:
                return msgspec.convert(data, Sample)
            except msgspec.ValidationError as exc:
                match = _FIELD_RE.search(str(exc))
                bad = match.group(1) if match else None
                if bad is None or bad in ("seq", "t_ms") or bad not in data:
                    raise
                self.rejected_values += 1
                del data[bad]
                if bad == "lat_deg":
                    data.pop("lon_deg", None)
                elif bad == "lon_deg":
                    data.pop("lat_deg", None)
        return msgspec.convert(data, Sample)


def _prefer(spec: SignalSpec | None, current: SignalSpec | None) -> bool:
    """True when `spec` comes earlier in the table than the row that filled the field."""
    if spec is None or current is None:
        return False
    return SIGNALS.index(spec) < SIGNALS.index(current)


def _place(target: str, spec: SignalSpec | None, value: Value, fields: dict[str, Any],
           extra: dict[str, float]) -> None:
    if target in SAMPLE_FIELDS:
        if target == "lat_deg" and isinstance(value, tuple):
            fields["lat_deg"], fields["lon_deg"] = value
        elif target == "dtcs" and isinstance(value, list):
            fields["dtcs"] = sorted(set(value))[:MAX_DTCS]
        elif target in ("sats", "gps_fix") and isinstance(value, int | float):
            fields[target] = int(value)
        else:
            fields[target] = value
        fields["_src_" + target] = spec
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        extra[target] = float(value)
