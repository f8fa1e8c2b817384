"""Settings of the `fleet stream` process: one typed root, validated at start-up.

Every threshold carries its unit in its name. Sections: ``database``, ``mqtt``, ``redis``
(shared, from core.settings), ``source`` (the MQTT source and its inbox), ``stream`` (the
dataflow: scaling, recovery, reordering, sinks), ``filters`` (GPS sanity filters, like
Traccar's ``filter.*`` keys), and the ``detectors``, ``anomaly`` and ``geofence`` sections of
the detector packages.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from core.protocol import MAX_PAYLOAD_BYTES, whole
from core.settings import DatabaseSettings, MqttSettings, RedisSettings
from geo.config import GeofenceSettings
from stream.detectors.anomaly import AnomalySettings
from stream.detectors.config import DetectorSettings

DB_RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0)
"""Back-off between attempts while the database is unreachable, s, of every connection the
stream holds (`stream.database.RetryingConnection`); the last repeats forever
(the source holds its acknowledgements and the sink stalls the dataflow: back-pressure,
nothing lost). Capped at 1 s: a refused connection costs nothing, and the former 5 s cap
left up to 5 s of every database restart unused (`fleet bench faults`, db_restart)."""
DB_RETRY_LOG_EVERY = 10
"""While the database stays unreachable, one warning per this many attempts (the first
included); the others are DEBUG."""

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegFloat = Annotated[float, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The MQTT source: shared subscription, persistent sessions and the durable inbox."""

    share_group: Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9_-]{1,64}"))] = "fleet-stream"
    """MQTT v5 shared-subscription group; every stream process of one deployment uses the same."""
    tenant: Annotated[str, Meta(pattern=whole(r"(\+|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"))] = "+"
    """Tenant level of the subscription: ``+`` for every tenant, or one tenant id to dedicate
    a stream deployment to a single tenant (a large customer, or a test)."""
    client_id_prefix: Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9_-]{1,48}"))] = "fleet-stream"
    """Partition i connects as ``{prefix}-p{i}``: a stable id, so its broker session survives."""
    partitions: PositiveInt = 2
    """MQTT client sessions (Bytewax source partitions) across the whole cluster. Fixed for
    the life of a recovery directory: the resume state is kept per partition."""
    session_expiry_s: PositiveInt = 86_400
    """How long the broker keeps a disconnected partition's session and queued messages."""
    receive_maximum: Annotated[int, Meta(ge=1, le=65_535)] = 1000
    """Unacknowledged QoS 1 messages the broker may have in flight to one partition."""
    poll_interval_ms: PositiveInt = 5
    """How long an idle partition waits before looking for new messages again."""
    max_batch_messages: PositiveInt = 2000
    """Messages committed to the inbox (and handed on) per poll, at most."""
    linger_ms: Annotated[int, Meta(ge=0)] = 50
    """How long a partition lets arriving messages gather before it commits them as one
    batch (unless a full batch is there first: `max_batch_messages`, or `receive_maximum`
    if smaller, as the broker sends no more unacknowledged). Every batch costs an inbox commit
    and a sink transaction whatever its size, so under load a short wait buys a lot of
    throughput; it adds at most this much latency. 0 hands on whatever has arrived."""
    max_ahead_messages: PositiveInt = 4000
    """Messages committed to the inbox ahead of the dataflow that a partition also keeps in
    memory, to hand on without reading them back; a backlog beyond this waits in the inbox
    only (on disk) and is read back from there."""
    inbox_retention_s: PositiveInt = 600
    """Inbox rows are deleted once a snapshot at least this old covers them."""
    connect_timeout_s: PositiveFloat = 10.0
    reconnect_max_delay_s: Annotated[int, Meta(ge=1, le=300)] = 2
    """Longest wait between attempts to reach the broker again (paho doubles from 1 s up to
    this). A stream holds a few sessions, not thousands, so it retries often: with 10, a
    broker that was away 15 s was found again up to 10 s after it was back, and the backlog
    it held (150,000 samples at 10,000/s) waited that long too."""


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fairness: how much telemetry one device, and one tenant, may send (0 disables a limit).

    Enforced by each source partition as messages arrive, before the inbox, so a message over
    a limit costs neither an inbox row nor the dataflow: a flooding device cannot slow other
    tenants' data down. Each partition holds its share (1.5/`source.partitions`: the broker
    hands a shared subscription's messages round-robin, not exactly evenly). A bucket holds
    `burst_s` seconds of its rate, so a device that was quiet may catch up at once. A message
    over a limit becomes an `over_limit` dead letter with its payload, up to
    `over_limit_kept_per_s` per device; beyond that (a flood) it is dropped unread, and one
    dead letter per device and `summary_interval_s` counts what was dropped. The project's
    broker holds device logins to the same rate before this (`services.
    mosquitto_device_messages_per_s`). The defaults leave `fleet gateway` (one message a
    second live, at most `gateway.replay_messages_per_s` replaying its spool) far below."""

    device_messages_per_s: NonNegFloat = 50.0
    device_kib_per_s: NonNegFloat = 2048.0
    tenant_messages_per_s: NonNegFloat = 5000.0
    tenant_kib_per_s: NonNegFloat = 102_400.0
    burst_s: Annotated[float, Meta(ge=1)] = 10.0
    over_limit_kept_per_s: NonNegFloat = 10.0
    """Over-limit messages per device and second kept in full as dead letters."""
    summary_interval_s: PositiveFloat = 10.0

    def __post_init__(self) -> None:
        # A bucket smaller than the largest message would refuse that message forever.
        for name in ("device_kib_per_s", "tenant_kib_per_s"):
            kib = getattr(self, name)
            if kib and kib * self.burst_s < MAX_PAYLOAD_BYTES / 1024:
                raise ValueError(f"limits.{name} x limits.burst_s must hold one message of "
                                 f"{MAX_PAYLOAD_BYTES // 1024} KiB")


class FilterSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """GPS sanity filters (Traccar ``filter.*``); 0 disables a numeric filter.

    Policy: a sample failing a *position* filter keeps its other signals but loses its
    position (and speed/heading); a sample failing a *time* or *duplicate* filter is dropped.
    Either way an ``ingest_rejects`` row with reason ``gps_filtered`` records what was removed.
    """

    invalid_fix: bool = True
    """Drop positions whose gps_fix is 0 (no fix)."""
    zero_position: bool = True
    """Drop positions at exactly 0,0 (a receiver's default, not a place)."""
    max_hdop: NonNegFloat = 20.0
    """Drop positions with a larger horizontal dilution of precision."""
    min_satellites: Annotated[int, Meta(ge=0)] = 0
    """Drop positions computed from fewer satellites."""
    max_future_s: NonNegFloat = 300.0
    """Drop samples stamped this far after the time the stream received them."""
    max_past_s: NonNegFloat = 30 * 86_400.0
    """Drop samples stamped this far before the time the stream received them."""
    max_implied_speed_kph: NonNegFloat = 300.0
    """Drop positions whose distance from the last accepted fix implies a faster speed."""
    duplicate: bool = True
    """Drop a sample with the same time and position as the previous one (new seq, same fix)."""


class RollupSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What each sample accounts for in the rollups (telemetry.interval_s, distance_m,
    over_speed, over_rpm; migration 0013). A threshold applies to samples written while it is
    in force: changing it does not rewrite history."""

    overspeed_kph: PositiveFloat = 90.0
    """Speed above which a sample's seconds count as over_speed_s, km/h."""
    high_rpm: PositiveFloat = 3000.0
    """Engine speed above which a sample's seconds count as over_rpm_s, rev/min."""
    max_gap_s: PositiveFloat = 60.0
    """A longer gap to the previous sample is not counted as time (nor as GPS distance): the
    vehicle was not observed. Odometer distance still counts, it is measured."""


class DataflowSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Scaling, recovery and per-vehicle processing of the dataflow."""

    workers_per_process: PositiveInt = 1
    processes: PositiveInt = 1
    process_base_port: Annotated[int, Meta(ge=1024, le=65_000)] = 2101
    """Process i of a local cluster listens on base + i for Bytewax's exchange."""
    recovery_dir: str = ".fleet/stream-recovery"
    """Bytewax recovery partitions (SQLite); created on first start. Empty disables recovery."""
    recovery_partitions: PositiveInt = 1
    snapshot_interval_s: PositiveInt = 10
    """Bytewax epoch length: state is snapshotted this often, and replay after a crash
    starts at most this far back (Bytewax's own default). Every vehicle with data or a tick
    in the epoch is pickled and stored at its end: at 5 s that was ~6 % of the stream's CPU
    in `fleet bench e2e`, halved at 10 s; replay is deduplicated either way."""
    reorder_window_ms: Annotated[int, Meta(ge=0)] = 10_000
    """Event-time watermark lag: a sample whose predecessor (by seq) is missing may be
    released once samples this much newer have arrived (and it was held `min_hold_ms`)."""
    min_hold_ms: Annotated[int, Meta(ge=0)] = 500
    """Processing time a sample after a gap waits at least, so the message holding the gap
    can still come in through another source partition (shared subscriptions do not keep a
    vehicle's messages in order across partitions)."""
    max_hold_ms: Annotated[int, Meta(ge=0)] = 5_000
    """Processing-time bound on the wait, so a quiet vehicle's samples are not held forever."""
    dedupe_window_samples: PositiveInt = 4096
    """Sequence numbers remembered per vehicle for duplicate detection."""
    tick_interval_s: PositiveFloat = 5.0
    """Processing-time tick for detector time-outs (device offline) and held samples."""
    moving_speed_kph: NonNegFloat = 3.0
    """A vehicle moves when its speed is at least this."""
    directory_refresh_s: PositiveFloat = 30.0
    """Vehicle/tenant cache refresh period; an unknown vehicle forces an earlier refresh."""
    directory_miss_refresh_s: PositiveFloat = 2.0
    """Minimum time between refreshes forced by unknown vehicles."""
    rollup_interval_s: PositiveFloat = 10.0
    """How often closed minutes written are rolled up (fleet_refresh_rollups()); each round
    takes the vehicles whose minute has just closed (see `stream.sink.closed_before`)."""
    disabled_detectors: list[str] = msgspec.field(default_factory=list)
    """Names of detectors (from `stream.detectors.DETECTORS`) not to run, e.g. ["anomaly"]."""
    live_enabled: bool = True
    """Publish live positions and events on Redis."""
    reject_payload_max_bytes: PositiveInt = 65_536


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Root settings object of `fleet stream`."""

    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    source: SourceSettings = msgspec.field(default_factory=SourceSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    stream: DataflowSettings = msgspec.field(default_factory=DataflowSettings)
    filters: FilterSettings = msgspec.field(default_factory=FilterSettings)
    rollups: RollupSettings = msgspec.field(default_factory=RollupSettings)
    detectors: DetectorSettings = msgspec.field(default_factory=DetectorSettings)
    anomaly: AnomalySettings = msgspec.field(default_factory=AnomalySettings)
    geofence: GeofenceSettings = msgspec.field(default_factory=GeofenceSettings)
