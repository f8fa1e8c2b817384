"""Per-device and per-tenant intake limits of one source partition (`[limits]`, issue #23).

Token buckets on messages and on bytes, per telemetry topic (one device) and per tenant.
The check runs in the MQTT client's thread for every message, so it is a few dictionary
lookups and float operations; a message over a limit never reaches the inbox or the dataflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.protocol import MAX_PAYLOAD_BYTES
from stream.config import LimitSettings

_PRUNE_EVERY_S = 60.0


@dataclass(slots=True)
class _Bucket:
    """Tokens refill at `rate` per second up to `cap`; a bucket first seen is full."""

    rate: float
    cap: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> float:
        self.tokens = min(self.cap, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens


@dataclass(slots=True)
class _Party:
    """The buckets of one device or one tenant (None: that limit is off)."""

    messages: _Bucket | None
    volume: _Bucket | None
    kept: _Bucket | None = None
    dropped: int = 0
    dropped_since: float = 0.0
    last_seen: float = 0.0

    def room(self, size: int, now: float) -> str | None:
        """Which of this party's limits the message would exceed, or None."""
        if self.messages is not None and self.messages.refill(now) < 1:
            return "messages"
        if self.volume is not None and self.volume.refill(now) < size:
            return "volume"
        return None

    def take(self, size: int) -> None:
        if self.messages is not None:
            self.messages.tokens -= 1
        if self.volume is not None:
            self.volume.tokens -= size


@dataclass(frozen=True, slots=True)
class Verdict:
    """A message over a limit: which one, and whether to keep it as a dead letter."""

    limit: str
    """e.g. "device messages: 50/s" (the whole limit, not this partition's share)."""
    keep: bool


@dataclass(frozen=True, slots=True)
class Dropped:
    """Messages of one device dropped unread since `since` (monotonic seconds)."""

    topic: str
    count: int
    since: float


@dataclass
class Limiter:
    """The limits of one partition: `share` of each configured rate (1 / partitions)."""

    cfg: LimitSettings
    share: float
    devices: dict[str, _Party] = field(default_factory=dict)
    tenants: dict[str, _Party] = field(default_factory=dict)
    last_prune: float = 0.0
    last_summary: float = 0.0

    def _bucket(self, per_s: float, now: float, unit: float = 1.0, least: float = 1.0
                ) -> _Bucket | None:
        if not per_s:
            return None
        rate = per_s * unit * self.share
        # A partition's share of a small rate could hold less than one message (or one
        # largest payload) and would then refuse everything.
        cap = max(rate * self.cfg.burst_s, least)
        return _Bucket(rate, cap, cap, now)

    def _party(self, table: dict[str, _Party], key: str, messages_per_s: float,
               kib_per_s: float, now: float) -> _Party:
        party = table.get(key)
        if party is None:
            party = _Party(self._bucket(messages_per_s, now),
                           self._bucket(kib_per_s, now, 1024.0, MAX_PAYLOAD_BYTES),
                           self._bucket(self.cfg.over_limit_kept_per_s, now))
            table[key] = party
        party.last_seen = now
        return party

    def check(self, topic: str, size: int, now: float) -> Verdict | None:
        """None when the message is within every limit (and is counted against them)."""
        cfg = self.cfg
        device = self._party(self.devices, topic, cfg.device_messages_per_s,
                             cfg.device_kib_per_s, now)
        # fleet/v1/{tenant}/...: a topic that is not ours is the decoder's business.
        parts = topic.split("/", 3)
        tenant_key = parts[2] if len(parts) > 2 else ""
        tenant = self._party(self.tenants, tenant_key, cfg.tenant_messages_per_s,
                             cfg.tenant_kib_per_s, now)
        over = device.room(size, now)
        who = "device"
        if over is None:
            over, who = tenant.room(size, now), "tenant"
        if over is None:
            device.take(size)
            tenant.take(size)
            if now - self.last_prune >= _PRUNE_EVERY_S:
                self._prune(now)
            return None
        keep = device.kept is None or device.kept.refill(now) >= 1
        if keep and device.kept is not None:
            device.kept.tokens -= 1
        elif not keep:
            if not device.dropped:
                device.dropped_since = now
            device.dropped += 1
        return Verdict(self._describe(who, over), keep)

    def _describe(self, who: str, over: str) -> str:
        cfg = self.cfg
        if over == "messages":
            rate = cfg.device_messages_per_s if who == "device" else cfg.tenant_messages_per_s
            return f"{who} messages: {rate:g}/s (burst {cfg.burst_s:g} s)"
        kib = cfg.device_kib_per_s if who == "device" else cfg.tenant_kib_per_s
        return f"{who} volume: {kib:g} KiB/s (burst {cfg.burst_s:g} s)"

    def take_dropped(self, now: float) -> list[Dropped]:
        """Every `summary_interval_s`: the devices that had messages dropped unread since the
        last summary (their counters restart)."""
        if now - self.last_summary < self.cfg.summary_interval_s:
            return []
        self.last_summary = now
        out = []
        for topic, party in self.devices.items():
            if party.dropped:
                out.append(Dropped(topic, party.dropped, party.dropped_since))
                party.dropped = 0
        return out

    def _prune(self, now: float) -> None:
        """Forget parties idle for longer than a bucket takes to refill: a new one starts
        full, so nothing changes, and the tables stay as small as the active fleet."""
        self.last_prune = now
        idle = now - self.cfg.burst_s - 1.0
        for table in (self.devices, self.tenants):
            for key in [k for k, p in table.items() if p.last_seen < idle and not p.dropped]:
                del table[key]
