"""The sink: TimescaleDB through batched binary COPY, vehicle_state, rollups, Redis live feed.

Each Bytewax worker writes its own batches in one transaction per batch, so a batch is either
wholly committed or not at all. Writes are idempotent, because after a crash Bytewax replays
from its last snapshot and re-emits rows already committed:

- each batch is first written with a direct binary COPY inside a savepoint; only a batch that
  collides with a unique key (a replay) goes again through a temporary staging table
  (unlogged, no indexes) and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Hypertables
  carry no row-level security (migration 0012); should a table have it for a role subject to
  it, PostgreSQL refuses the COPY and every batch is staged. Both paths store late rows in
  compressed chunks too. `fleet bench ingest` measures the path in use against raw COPY;
- ``vehicle_state`` is upserted, never moving backwards in time;
- Redis messages are published after the commit; the live feed is best effort (a subscriber
  may see a repeat after a replay) because the database is the record.

Nothing a sender controls can stop the sink. Every text column is made storable (`pg_text`:
PostgreSQL text cannot hold NUL or unpaired surrogates) and raw payloads stay bytes. If the
database refuses a batch for its data (a row breaking a constraint, a value it cannot store),
the batch is written again with the refused rows found by bisection, each in a savepoint: the
rest is committed and each refused row becomes a dead letter (`refused_by_database`) carrying
the database's reason, so one row never fails the batch or the epoch. Errors that are not about
the data (no privilege, a missing table, a read-only database) still stop the sink: turning
every row into a dead letter would hide an operator's mistake.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from core.live import LiveEvent, LivePosition, encode_live, live_channel
from core.protocol import RejectReason
from stream.database import RetryingConnection
from stream.envelopes import (
    EmittedEvent,
    RejectRow,
    SinkInput,
    SinkItem,
    StoredSample,
    VehicleOutput,
    VehicleStateRow,
)
from stream.errors import SinkError, first_line
from stream.model import AnomalyRecord, GeofenceEvent, Reading, VehicleEvent

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Ewkb(bytes):
    """A point as PostGIS extended WKB, dumped as `geography` in binary COPY.

    COPY picks dumpers by the column types given to `set_types`, so plain `bytes` from
    `ewkb_point` work there too (and are much cheaper to make than a bytes subclass).
    """


_EWKB_POINT = struct.Struct("<BIIdd")


def ewkb_point(lon: float, lat: float) -> bytes:
    """Little-endian EWKB of a WGS84 point (type 1 with the SRID flag, SRID 4326)."""
    return _EWKB_POINT.pack(1, 0x20000001, 4326, lon, lat)


def ts(t_ms: int) -> datetime:
    """Unix milliseconds to an aware datetime (exact: the microsecond rounding of
    `fromtimestamp` absorbs the float error of t_ms / 1000 at millisecond resolution)."""
    return datetime.fromtimestamp(t_ms / 1000.0, tz=UTC)


def register_geography(conn: psycopg.Connection[Any]) -> int:
    """Teach this connection to dump `Ewkb` as geography; returns the type's oid."""
    row = conn.execute("SELECT 'geography'::regtype::oid").fetchone()
    if row is None:
        raise SinkError("PostGIS geography type is missing")
    oid = int(row[0])
    conn.commit()

    class GeographyDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> Any:
            return obj

    GeographyDumper.oid = oid
    conn.adapters.register_dumper(Ewkb, GeographyDumper)
    return oid


@dataclass(frozen=True)
class Table:
    """How one table is written: its columns, their types for binary COPY, and the function
    that makes a row of them from a sink item."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str | int, ...]
    row: Callable[[Any], tuple[Any, ...]]


def _point(lat: float | None, lon: float | None) -> bytes | None:
    if lat is None or lon is None:
        return None
    return _EWKB_POINT.pack(1, 0x20000001, 4326, lon, lat)


def _e7(lat: float | None, lon: float | None) -> tuple[int | None, int | None]:
    """A position as `telemetry` stores it: degrees x 10^7 (migration 0016), both or neither."""
    if lat is None or lon is None:
        return None, None
    return round(lat * 1e7), round(lon * 1e7)


def telemetry_row(r: Reading) -> tuple[Any, ...]:
    """One `telemetry` row from a stored reading."""
    s = r.sample
    return (
        ts(s.t_ms), r.vehicle.tenant_id, r.vehicle.vehicle_id, s.seq,
        *_e7(s.lat_deg, s.lon_deg), s.alt_m, s.speed_kph, s.heading_deg, s.rpm,
        s.coolant_c, s.fuel_pct, s.odometer_km, s.engine_hours_h, s.battery_v,
        s.throttle_pct, s.engine_load_pct, s.ignition, s.gps_fix, s.hdop, s.sats,
        s.dtcs, Jsonb(s.extra) if s.extra else None, r.source.value,
        *(_NO_DERIVED if (d := r.derived) is None else
          (d.interval_s, d.distance_m, d.fuel_used_pct, d.over_speed, d.over_rpm)),
    )


_NO_DERIVED = (None, None, None, None, None)


def vehicle_event_row(e: VehicleEvent) -> tuple[Any, ...]:
    """One `vehicle_events` row."""
    return (
        ts(e.t_ms), e.tenant_id, e.vehicle_id, e.event_type, e.severity,
        ts(e.started_ms) if e.started_ms is not None else None,
        ts(e.ended_ms) if e.ended_ms is not None else None,
        e.duration_s, e.value, e.threshold, _point(e.lat_deg, e.lon_deg), e.geofence_id,
        Jsonb(e.details),
    )


def geofence_event_row(e: GeofenceEvent) -> tuple[Any, ...]:
    """One `geofence_events` row."""
    return (ts(e.t_ms), e.tenant_id, e.vehicle_id, e.geofence_id, e.event_type,
            _point(e.lat_deg, e.lon_deg), e.speed_kph, e.dwell_s, e.seq, Jsonb(e.details))


def anomaly_row(a: AnomalyRecord) -> tuple[Any, ...]:
    """One `anomalies` row."""
    return (ts(a.t_ms), a.tenant_id, a.vehicle_id, a.signal, a.kind, a.value, a.score,
            a.threshold, a.is_event, Jsonb(a.details))


def pg_text(value: str) -> str:
    """`value` as PostgreSQL text can hold it: NUL is written as the four characters `\\x00`,
    an unpaired surrogate as its `\\udXXX` escape; anything else is kept as it is."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def reject_row(r: RejectRow) -> tuple[Any, ...]:
    """One `ingest_rejects` row; its texts came from a sender, so each is made storable."""
    return (ts(r.time_ms), r.tenant_id,
            pg_text(r.vehicle_code) if r.vehicle_code is not None else None,
            pg_text(r.reason), pg_text(r.detail), pg_text(r.topic), r.payload, r.partition,
            r.offset, r.sample_seq)


GEOGRAPHY = -1  # placeholder replaced by the connection's geography oid

TELEMETRY = Table("telemetry", (
    "time", "tenant_id", "vehicle_id", "seq", "lat_e7", "lon_e7", "altitude_m", "speed_kph",
    "heading_deg", "rpm", "coolant_temp_c", "fuel_level_pct", "odometer_km", "engine_hours_h",
    "battery_voltage_v", "throttle_pct", "engine_load_pct", "ignition", "gps_fix_quality",
    "gps_hdop", "gps_satellites", "dtc_codes", "extra", "source",
    "interval_s", "distance_m", "fuel_used_pct", "over_speed", "over_rpm",
), ("timestamptz", "uuid", "uuid", "int8", "int4", "int4", "float4", "float4", "float4", "float4",
    "float4", "float4", "float8", "float8", "float4", "float4", "float4", "bool", "int2",
    "float4", "int2", "varchar[]", "jsonb", "text", "float4", "float4", "float4", "bool",
    "bool"), telemetry_row)

VEHICLE_EVENTS = Table("vehicle_events", (
    "time", "tenant_id", "vehicle_id", "event_type", "severity", "started_at", "ended_at",
    "duration_s", "value", "threshold", "location", "geofence_id", "details",
), ("timestamptz", "uuid", "uuid", "text", "text", "timestamptz", "timestamptz", "float8",
    "float8", "float8", GEOGRAPHY, "uuid", "jsonb"), vehicle_event_row)

GEOFENCE_EVENTS = Table("geofence_events", (
    "time", "tenant_id", "vehicle_id", "geofence_id", "event_type", "location", "speed_kph",
    "dwell_s", "seq", "details",
), ("timestamptz", "uuid", "uuid", "uuid", "text", GEOGRAPHY, "float4", "float8", "int8",
    "jsonb"), geofence_event_row)

ANOMALIES = Table("anomalies", (
    "time", "tenant_id", "vehicle_id", "signal", "kind", "value", "score", "threshold",
    "is_event", "details",
), ("timestamptz", "uuid", "uuid", "text", "text", "float8", "float8", "float8", "bool",
    "jsonb"), anomaly_row)

REJECTS = Table("ingest_rejects", (
    "time", "tenant_id", "vehicle_code", "reason", "detail", "topic", "payload",
    "source_partition", "inbox_offset", "sample_seq",
), ("timestamptz", "uuid", "text", "text", "text", "text", "bytea", "text", "int8", "int8"),
    reject_row)



class TableWriter:
    """Idempotent binary COPY of rows into one table, on one connection (see module doc)."""

    def __init__(self, conn: psycopg.Connection[Any], table: Table, geography_oid: int) -> None:
        self.conn = conn
        self.table = table
        self.types = [geography_oid if t == GEOGRAPHY else t for t in table.types]
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
        stage = sql.Identifier(f"_stage_{table.name}")
        self._copy_direct = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table.name), cols)
        self._copy_stage = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)
        self._create_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS").format(stage, sql.Identifier(table.name))
        self._merge = sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table.name), cols, cols, stage)
        self.replays = 0
        """Batches whose direct COPY collided with stored rows (a replay)."""
        self.direct = True
        """Try COPY straight into the table first; false once the role may not (RLS)."""

    def _copy(self, cur: psycopg.Cursor[Any], statement: sql.Composed,
              items: Sequence[Any]) -> None:
        # Rows are made here, while COPY streams: psycopg sends every ~32 kB as it fills, so
        # the server stores the first rows while Python builds the next (on two cores the
        # row building then costs almost nothing; built beforehand, it added ~30 %).
        row = self.table.row
        with cur.copy(statement) as copy:
            copy.set_types(self.types)
            for item in items:
                copy.write_row(row(item))

    def write(self, items: Sequence[Any], *, force_merge: bool = False) -> None:
        """Write the rows of `items` (what `Table.row` takes) inside the caller's transaction;
        duplicates of stored rows are skipped."""
        if not items:
            return
        cur = self.conn.cursor()
        if self.direct and not force_merge:
            try:
                with self.conn.transaction():  # a savepoint inside the batch transaction
                    self._copy(cur, self._copy_direct, items)
                return  # noqa: TRY300 - the fallback below is for the except branches only
            except psycopg.errors.UniqueViolation:
                self.replays += 1
            except psycopg.errors.FeatureNotSupported:
                # PostgreSQL refuses COPY into a table with row-level security for a role
                # that is subject to it (the ingest role is): stage from now on.
                log.info("COPY into %s is not allowed for this role; staging every batch",
                         self.table.name)
                self.direct = False
        cur.execute(self._create_stage)
        self._copy(cur, self._copy_stage, items)
        cur.execute(self._merge)


_STATE_UPSERT = """
INSERT INTO vehicle_state AS s (vehicle_id, tenant_id, time, last_seq, location, speed_kph,
  heading_deg, ignition, moving, rpm, coolant_temp_c, fuel_level_pct, odometer_km,
  engine_hours_h, battery_voltage_v, dtc_codes, inside_geofences, updated_at)
VALUES (%s, %s, %s, %s,
  CASE WHEN %s::float8 IS NULL THEN NULL
       ELSE ST_SetSRID(ST_MakePoint(%s::float8, %s::float8), 4326)::geography END,
  %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s::varchar(10)[], '{}'), %s::uuid[], now())
ON CONFLICT (vehicle_id) DO UPDATE SET
  time = EXCLUDED.time, last_seq = EXCLUDED.last_seq,
  location = coalesce(EXCLUDED.location, s.location),
  speed_kph = coalesce(EXCLUDED.speed_kph, s.speed_kph),
  heading_deg = coalesce(EXCLUDED.heading_deg, s.heading_deg),
  ignition = coalesce(EXCLUDED.ignition, s.ignition),
  moving = coalesce(EXCLUDED.moving, s.moving),
  rpm = coalesce(EXCLUDED.rpm, s.rpm),
  coolant_temp_c = coalesce(EXCLUDED.coolant_temp_c, s.coolant_temp_c),
  fuel_level_pct = coalesce(EXCLUDED.fuel_level_pct, s.fuel_level_pct),
  odometer_km = coalesce(EXCLUDED.odometer_km, s.odometer_km),
  engine_hours_h = coalesce(EXCLUDED.engine_hours_h, s.engine_hours_h),
  battery_voltage_v = coalesce(EXCLUDED.battery_voltage_v, s.battery_voltage_v),
  dtc_codes = EXCLUDED.dtc_codes, inside_geofences = EXCLUDED.inside_geofences,
  updated_at = now()
WHERE s.time <= EXCLUDED.time
"""


def _state_params(row: VehicleStateRow) -> tuple[Any, ...]:
    s = row.sample
    return (row.ref.vehicle_id, row.ref.tenant_id, ts(s.t_ms), s.seq, s.lon_deg, s.lon_deg,
            s.lat_deg, s.speed_kph, s.heading_deg, row.ignition, row.moving, s.rpm, s.coolant_c,
            s.fuel_pct, s.odometer_km, s.engine_hours_h, s.battery_v, s.dtcs,
            sorted(row.inside, key=str))


@dataclass
class Batch:
    """A sink batch sorted by destination."""

    telemetry: list[Reading]
    vehicle_events: list[VehicleEvent]
    geofence_events: list[GeofenceEvent]
    anomalies: list[AnomalyRecord]
    rejects: list[RejectRow]
    """Items, not rows: `TableWriter` makes the rows while it copies."""
    states: dict[UUID, VehicleStateRow]
    live: list[EmittedEvent]
    min_t_ms: int | None = None
    max_t_ms: int | None = None

    @classmethod
    def of(cls, items: Iterable[SinkInput]) -> Batch:
        """Sort items (and the items of bundles) by the table they go to."""
        b = cls([], [], [], [], [], {}, [])
        for entry in items:
            b._add_all(entry.items if isinstance(entry, VehicleOutput) else (entry,))
        return b

    def _add_all(self, items: Iterable[SinkItem]) -> None:
        b = self
        for item in items:
            if isinstance(item, StoredSample):
                b.telemetry.append(item.reading)
                t = item.reading.sample.t_ms
                b.min_t_ms = t if b.min_t_ms is None else min(b.min_t_ms, t)
                b.max_t_ms = t if b.max_t_ms is None else max(b.max_t_ms, t)
            elif isinstance(item, EmittedEvent):
                ev = item.event
                if isinstance(ev, VehicleEvent):
                    b.vehicle_events.append(ev)
                elif isinstance(ev, GeofenceEvent):
                    b.geofence_events.append(ev)
                else:
                    b.anomalies.append(ev)
                if not isinstance(ev, AnomalyRecord) or ev.is_event:
                    b.live.append(item)
            elif isinstance(item, RejectRow):
                b.rejects.append(item)
            else:
                old = b.states.get(item.ref.vehicle_id)
                if old is None or old.sample.t_ms <= item.sample.t_ms:
                    b.states[item.ref.vehicle_id] = item


class LivePublisher:
    """Publishes live messages on Redis (best effort: failures are logged, not raised)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=2.0)

    def publish(self, states: Iterable[VehicleStateRow], events: Iterable[EmittedEvent]) -> None:
        """Send one position per vehicle and every event, on their tenants' channels."""
        now_ms = time.time_ns() // 1_000_000
        pipe = self._client.pipeline(transaction=False)
        n = 0
        for st in states:
            s = st.sample
            msg = LivePosition(
                vehicle_id=str(st.ref.vehicle_id), code=st.ref.vehicle_code, t_ms=s.t_ms,
                lat=s.lat_deg, lon=s.lon_deg, speed_kph=s.speed_kph, heading_deg=s.heading_deg,
                ignition=st.ignition, moving=st.moving, fuel_pct=s.fuel_pct,
                coolant_c=s.coolant_c, battery_v=s.battery_v, sent_ms=now_ms)
            pipe.publish(live_channel(st.ref.tenant_id), encode_live(msg))
            n += 1
        for item in events:
            pipe.publish(live_channel(item.ref.tenant_id), encode_live(live_event(item)))
            n += 1
        if not n:
            return
        try:
            pipe.execute()
        except Exception:
            log.warning("live publish of %d messages failed", n, exc_info=True)

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()


def live_event(item: EmittedEvent) -> LiveEvent:
    """The compact live form of a detector event."""
    ev, code = item.event, item.ref.vehicle_code
    if isinstance(ev, GeofenceEvent):
        return LiveEvent(vehicle_id=str(ev.vehicle_id), code=code, t_ms=ev.t_ms, kind="geofence",
                         event_type=ev.event_type, lat=ev.lat_deg, lon=ev.lon_deg,
                         geofence_id=str(ev.geofence_id), value=ev.dwell_s)
    if isinstance(ev, VehicleEvent):
        return LiveEvent(vehicle_id=str(ev.vehicle_id), code=code, t_ms=ev.t_ms, kind="vehicle",
                         event_type=ev.event_type, severity=ev.severity, lat=ev.lat_deg,
                         lon=ev.lon_deg, value=ev.value,
                         geofence_id=str(ev.geofence_id) if ev.geofence_id else None)
    return LiveEvent(vehicle_id=str(ev.vehicle_id), code=code, t_ms=ev.t_ms, kind="anomaly",
                     event_type=ev.signal, severity="warning", value=ev.value,
                     details={"score": ev.score, "threshold": ev.threshold, "kind": ev.kind})


# Errors about the database or the role, not about a row: no row-by-row retry can help, and
# dead-lettering every row would hide the fault, so the sink stops (and is restarted).
_SYSTEMIC = (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable,
             psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction,
             psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InternalError_,
             psycopg.errors.DiskFull, psycopg.errors.OutOfMemory, psycopg.InterfaceError)


def _stable_key(*parts: object) -> int:
    """A 63-bit number that names the same thing on every run (a replay's dead letter must
    collide with the first one's in the idempotency key)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _as_json(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, UnicodeError):
        return repr(value).encode("utf-8", "backslashreplace")


def refused_row(table: str, item: Any, exc: Exception) -> RejectRow:
    """The dead letter for a reading or event whose row `table` refused (a refused dead letter
    itself is stored bare by `_write_isolating`)."""
    detail = f"{table}: {first_line(exc)}"[:2000]
    reason = RejectReason.REFUSED_BY_DATABASE.value
    if isinstance(item, Reading):
        return RejectRow(time_ms=item.sample.t_ms, reason=reason, detail=detail,
                         topic="", payload=_as_json(item.sample),
                         tenant_id=item.vehicle.tenant_id, vehicle_code=item.vehicle.vehicle_code,
                         partition=f"sink/{table}", offset=_stable_key(item.vehicle.vehicle_id),
                         sample_seq=item.sample.seq)
    return RejectRow(time_ms=item.t_ms, reason=reason, detail=detail, topic="",
                     payload=_as_json(item), tenant_id=item.tenant_id,
                     partition=f"sink/{table}", offset=_stable_key(type(item).__name__, item),
                     sample_seq=-1)


class DatabaseWriter:
    """Writes whole batches in one transaction each; reconnects and retries while the database
    is unreachable (`stream.database`)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.db = RetryingConnection(url, name="database", error=SinkError,
                                     connect_timeout_s=connect_timeout_s, prepare=self._prepare)
        self.writers: dict[str, TableWriter] = {}

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        oid = register_geography(conn)
        self.writers = {t.name: TableWriter(conn, t, oid) for t in
                        (TELEMETRY, VEHICLE_EVENTS, GEOFENCE_EVENTS, ANOMALIES, REJECTS)}

    def write(self, batch: Batch) -> None:
        """Commit a batch, retrying while the database is unreachable; rows it refuses become
        dead letters (module doc)."""
        what = f"cannot write a batch of {len(batch.telemetry)} samples"
        isolate = False  # once the database has refused the batch, every attempt isolates

        def attempt(conn: psycopg.Connection[Any]) -> None:
            nonlocal isolate
            if not isolate:
                try:
                    with conn.transaction():
                        self._write(conn, batch)
                except psycopg.OperationalError:
                    raise
                except (psycopg.Error, ValueError, TypeError) as exc:
                    if isinstance(exc, _SYSTEMIC):
                        raise SinkError(f"{what}: {first_line(exc)}") from exc
                    log.warning("the database refused a batch of %d samples (%s); writing it "
                                "again with the refused rows set aside as dead letters",
                                len(batch.telemetry), first_line(exc))
                    isolate = True
                else:
                    return
            try:
                self._write_isolating(conn, batch)
            except psycopg.OperationalError:
                raise
            except (psycopg.Error, ValueError, TypeError) as exc:
                raise SinkError(f"{what}: {first_line(exc)}") from exc

        self.db.run("write", attempt)

    def _write_isolating(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Write `batch` with every row the database refuses turned into a dead letter."""
        refused: list[RejectRow] = []
        with conn.transaction():
            for name, items in (("telemetry", batch.telemetry),
                                ("vehicle_events", batch.vehicle_events),
                                ("geofence_events", batch.geofence_events),
                                ("anomalies", batch.anomalies)):
                for item, exc in self._bisect(conn, self.writers[name], items):
                    refused.append(refused_row(name, item, exc))
            for item, exc in self._bisect(conn, self.writers["ingest_rejects"],
                                          [*batch.rejects, *refused]):
                # A dead letter that cannot be stored even with its texts made storable: keep
                # what identifies it and say why in place of the detail.
                bare = RejectRow(time_ms=item.time_ms, reason=item.reason,
                                 detail=f"detail not storable: {first_line(exc)}"[:2000],
                                 topic="", payload=item.payload, tenant_id=item.tenant_id,
                                 partition=item.partition, offset=item.offset,
                                 sample_seq=item.sample_seq)
                with conn.transaction():
                    self.writers["ingest_rejects"].write([bare], force_merge=True)
            with conn.cursor() as cur:
                for state in batch.states.values():
                    try:
                        with conn.transaction():
                            cur.execute(_STATE_UPSERT, _state_params(state))
                    except psycopg.OperationalError:
                        raise
                    except (psycopg.Error, ValueError, TypeError) as exc:
                        if isinstance(exc, _SYSTEMIC):
                            raise
                        log.warning("vehicle_state of %s not updated: %s",
                                    state.ref.vehicle_id, first_line(exc))

    def _bisect(self, conn: psycopg.Connection[Any], writer: TableWriter,
                items: Sequence[Any]) -> list[tuple[Any, Exception]]:
        """Write `items`, halving any part the database refuses; returns the refused ones."""
        if not items:
            return []
        try:
            with conn.transaction():
                writer.write(items)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, ValueError, TypeError) as exc:
            if isinstance(exc, _SYSTEMIC):
                raise
            if len(items) == 1:
                return [(items[0], exc)]
            mid = len(items) // 2
            return self._bisect(conn, writer, items[:mid]) + \
                self._bisect(conn, writer, items[mid:])
        return []

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        w = self.writers
        w["telemetry"].write(batch.telemetry)
        w["vehicle_events"].write(batch.vehicle_events)
        w["geofence_events"].write(batch.geofence_events)
        w["anomalies"].write(batch.anomalies)
        w["ingest_rejects"].write(batch.rejects)
        if batch.states:
            with conn.cursor() as cur:
                cur.executemany(_STATE_UPSERT, [_state_params(s) for s in batch.states.values()])

    def close(self) -> None:
        """Drop the connection (it is reopened on the next write)."""
        self.db.close()


MINUTE_MS = 60_000
CLOSE_WAIT_S = 60.0
ROLLUP_GRACE_MS = 10_000
"""A minute's rollup is computed once processing time is this far past the minute's end, so
the samples still on their way (batched by gateways, held for reordering) are in."""


def closed_before(vehicle: UUID, now_ms: int) -> int:
    """Start of this vehicle's first minute that does not count as closed yet.

    A minute closes `ROLLUP_GRACE_MS` plus a per-vehicle stagger (0-60 s, from the id) after
    its end: with a round every few seconds, each rolls up a slice of the fleet's last
    minute instead of every vehicle's at once (a whole minute of a busy fleet at once was a
    burst of database work and a latency spike in the stream each minute).
    """
    return (now_ms - ROLLUP_GRACE_MS - vehicle.int % MINUTE_MS) // MINUTE_MS * MINUTE_MS


class RollupRefresher:
    """Calls fleet_refresh_rollups() for what this worker wrote, every `interval_s`.

    A thread of its own with its own connection, because the sink is only called when items
    arrive, and the last minutes of a burst must be rolled up too. Per vehicle it remembers
    the span of sample times written. A round refreshes only minutes that have closed
    (`closed_before`), so a minute is aggregated about once rather than on every round
    while it fills, and only this worker's vehicles, so workers split the work instead of
    each recomputing every vehicle of the same minutes. Samples arriving for a minute
    already rolled up (late data, a replay) mark it again for the next round.
    """

    def __init__(self, url: str, interval_s: float, connect_timeout_s: float, *,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.db = RetryingConnection(url, name="rollups", error=SinkError,
                                     connect_timeout_s=connect_timeout_s)
        self.continuous_aggregates: bool | None = None
        """Whether the rollups are continuous aggregates (Timescale edition); None until the
        first round has asked the database."""
        self.interval_s = interval_s
        self.clock_ms = clock_ms
        self._lock = threading.Lock()
        self._touched: dict[UUID, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollups", daemon=True)
        self._thread.start()

    def touch(self, lo_ms: int, hi_ms: int, vehicles: Iterable[UUID]) -> None:
        """Record that rows of these vehicles with sample times in [lo, hi] were committed."""
        if self.continuous_aggregates:
            return  # nothing to refresh by hand: spare the sink's every batch the bookkeeping
        with self._lock:
            touched = self._touched
            for v in vehicles:
                span = touched.get(v)
                touched[v] = (lo_ms, hi_ms) if span is None else (
                    min(lo_ms, span[0]), max(hi_ms, span[1]))

    def flush(self, *, everything: bool = False) -> None:
        """Refresh the closed minutes touched since the last round (all of it when
        `everything`); what is still open stays marked."""
        now_ms = self.clock_ms()
        # Vehicles due, grouped by where their closed minutes end (None: everything).
        groups: dict[int | None, dict[UUID, tuple[int, int]]] = {}
        with self._lock:
            for v, (lo, hi) in list(self._touched.items()):
                cutoff = None if everything else closed_before(v, now_ms)
                if cutoff is not None and lo >= cutoff:
                    continue
                groups.setdefault(cutoff, {})[v] = (lo, hi)
                if cutoff is None or hi < cutoff:
                    del self._touched[v]
                else:
                    self._touched[v] = (cutoff, hi)
        for cutoff, due in groups.items():
            lo = min(span[0] for span in due.values())
            hi = max(span[1] for span in due.values())
            # fleet_refresh_rollups takes whole buckets overlapping [from, to): ending just
            # before the cutoff leaves the open minute out.
            to_ms = hi + 1 if cutoff is None else min(hi + 1, cutoff - 1)
            if not self.refresh(lo, to_ms, sorted(due)):
                # Each closed minute is refreshed once: a failed round must come again.
                for v, (v_lo, v_hi) in due.items():
                    self.touch(v_lo, v_hi, (v,))
        if self.continuous_aggregates:
            with self._lock:
                self._touched.clear()

    def refresh(self, from_ms: int, to_ms: int, vehicles: Sequence[UUID] | None = None) -> bool:
        """Recompute the minute/hour rollups of a time range, of these vehicles or all.
        False when it failed (logged; the caller keeps the range for its next round)."""
        def call(conn: psycopg.Connection[Any]) -> None:
            if self._refresh_themselves(conn):
                return
            with conn.transaction():
                conn.execute("CALL fleet_refresh_rollups(%s, %s, %s)",
                             (ts(from_ms), ts(to_ms), None if vehicles is None else
                              list(vehicles)))

        try:
            # One attempt: the next round is the retry, and a round waiting out an outage
            # would hold up the sink's close.
            self.db.run("refresh", call, retry=False)
        except SinkError:
            log.warning("rollup refresh failed; it is retried in the next round",
                        exc_info=True)
            self.db.close()
            return False
        return True

    def _refresh_themselves(self, conn: psycopg.Connection[Any]) -> bool:
        """True on the Timescale-licence edition: its rollups are continuous aggregates that
        their policies refresh, late rows included (migration 0014), and only their owner may
        refresh them by hand."""
        if self.continuous_aggregates is None:
            row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
            conn.rollback()
            self.continuous_aggregates = row is not None and row[0] == "timescale"
            if self.continuous_aggregates:
                log.info("rollups: continuous aggregates, refreshed by their policies")
        return self.continuous_aggregates

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def close(self) -> None:
        """Stop the thread, then a final refresh of everything touched."""
        self._stop.set()
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            # Still in a refresh on the one connection: a second one now would share it.
            log.warning("rollup refresh still running after %.0f s; the final round is "
                        "left to the rollups job", CLOSE_WAIT_S)
            return
        self.flush(everything=True)
        self.db.close()


class SinkStats:
    """Where a sink worker's time goes, logged every `every_s` (to find the bottleneck)."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._reset()

    def _reset(self) -> None:
        self.started = time.monotonic()
        self.rows = self.batches = 0
        self.build_s = self.db_s = 0.0

    def add(self, rows: int, build_s: float, db_s: float) -> None:
        """Count one batch; log and reset when the period is over."""
        self.rows += rows
        self.batches += 1
        self.build_s += build_s
        self.db_s += db_s
        elapsed = time.monotonic() - self.started
        if elapsed >= self.every_s:
            # Rows are made during the COPY, so "writing" includes building them.
            log.info("sink: %d telemetry rows in %d batches over %.0f s; sorting items %.1f s, "
                     "writing %.1f s", self.rows, self.batches, elapsed, self.build_s, self.db_s)
            self._reset()


class _SinkPartition(StatelessSinkPartition[SinkInput]):
    def __init__(self, sink: PostgresSink) -> None:
        self.db = DatabaseWriter(sink.database_url, connect_timeout_s=sink.connect_timeout_s)
        self.publisher = LivePublisher(sink.redis_url) if sink.redis_url else None
        self.stats = SinkStats()
        self.rollups = (RollupRefresher(sink.database_url, sink.rollup_interval_s,
                                        sink.connect_timeout_s)
                        if sink.rollup_interval_s > 0 else None)

    def write_batch(self, items: list[SinkInput]) -> None:
        t0 = time.perf_counter()
        batch = Batch.of(items)
        t1 = time.perf_counter()
        self.db.write(batch)
        self.stats.add(len(batch.telemetry), t1 - t0, time.perf_counter() - t1)
        if self.publisher is not None:
            self.publisher.publish(batch.states.values(), batch.live)
        if self.rollups is not None and batch.min_t_ms is not None \
                and batch.max_t_ms is not None:
            self.rollups.touch(batch.min_t_ms, batch.max_t_ms,
                               {r.vehicle.vehicle_id for r in batch.telemetry})

    def close(self) -> None:
        if self.rollups is not None:
            self.rollups.close()
        self.db.close()
        if self.publisher is not None:
            self.publisher.close()


class PostgresSink(DynamicSink[SinkInput]):
    """Bytewax sink writing every worker's output to TimescaleDB (and Redis, if given)."""

    def __init__(self, database_url: str, *, redis_url: str | None = None,
                 rollup_interval_s: float = 10.0, connect_timeout_s: float = 10.0) -> None:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise SinkError("the sink needs a postgresql:// URL (the ingest role)")
        self.database_url = database_url
        self.redis_url = redis_url
        self.rollup_interval_s = rollup_interval_s
        self.connect_timeout_s = connect_timeout_s

    def build(self, step_id: str, worker_index: int,
              worker_count: int) -> StatelessSinkPartition[SinkInput]:
        """One database connection (and Redis client) per worker."""
        return _SinkPartition(self)
