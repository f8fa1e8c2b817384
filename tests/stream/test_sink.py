"""The sink against the real TimescaleDB: COPY fast path, replay path, vehicle_state."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from core.protocol import Sample, Source
from stream.envelopes import EmittedEvent, RejectRow, StoredSample, VehicleStateRow
from stream.model import Reading, VehicleEvent, VehicleRef
from stream.sink import (
    MINUTE_MS,
    ROLLUP_GRACE_MS,
    Batch,
    DatabaseWriter,
    RollupRefresher,
    closed_before,
)
from tests.conftest import TestDatabase
from tests.stream.conftest import Fleet

T0 = 1_780_000_000_000


def items(fleet: Fleet, seqs: range) -> list:
    ref = VehicleRef(fleet.tenant_id, fleet.vehicles["v1"], fleet.slug, "v1")
    out: list = []
    for seq in seqs:
        s = Sample(seq=seq, t_ms=T0 + seq * 1000, lat_deg=52.5, lon_deg=13.4, speed_kph=50.0,
                   dtcs=["P0300"], extra={"intake_temp_c": 30.0}, ignition=True)
        out.append(StoredSample(Reading(ref, s, Source.SIMULATOR)))
    out.append(EmittedEvent(ref, VehicleEvent(t_ms=T0, tenant_id=fleet.tenant_id,
                                              vehicle_id=ref.vehicle_id, event_type="overspeed",
                                              lat_deg=52.5, lon_deg=13.4, value=99.0)))
    out.append(RejectRow(time_ms=T0, reason="malformed", detail="x", topic="t", payload=b"{",
                         tenant_id=fleet.tenant_id, partition="p0", offset=7))
    last = out[len(seqs) - 1].reading.sample
    out.append(VehicleStateRow(ref, last, True, True, frozenset()))
    return out


def test_replayed_batches_leave_no_duplicates(database: TestDatabase, fleet: Fleet) -> None:
    writer = DatabaseWriter(database.ingest_url)
    writer.write(Batch.of(items(fleet, range(1, 101))))
    # The ingest role has BYPASSRLS (it checks tenancy itself), so the writer COPYs directly.
    assert writer.writers["telemetry"].direct
    # A replay overlapping the stored rows adds only the new rows.
    writer.write(Batch.of(items(fleet, range(50, 151))))
    writer.close()
    refresher = RollupRefresher(database.ingest_url, 3600.0, 10.0)
    assert refresher.refresh(T0, T0 + 200_000)  # every vehicle (no list)
    refresher.close()
    with psycopg.connect(database.owner_url) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM telemetry").fetchone() or (0, 0)
        assert (n, distinct) == (150, 150)
        assert conn.execute("SELECT count(*) FROM vehicle_events").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone() == (1,)
        state = conn.execute("SELECT last_seq, moving, ST_Y(location::geometry), dtc_codes "
                             "FROM vehicle_state").fetchone()
        assert state == (150, True, 52.5, ["P0300"])
        row = conn.execute("SELECT extra, lon_e7 / 1e7::float8 FROM telemetry "
                           "WHERE seq = 1").fetchone()
        assert row == ({"intake_temp_c": 30.0}, 13.4)
        assert conn.execute("SELECT sum(samples) FROM telemetry_1m").fetchone() == (150,)


def test_direct_copy_falls_back_to_staging_on_a_replay(database: TestDatabase,
                                                       fleet: Fleet) -> None:
    # The table owner is not subject to RLS, so it may COPY straight into the hypertable.
    writer = DatabaseWriter(database.owner_url)
    writer.write(Batch.of(items(fleet, range(1, 11))))
    assert writer.writers["telemetry"].direct
    assert writer.writers["telemetry"].replays == 0
    writer.write(Batch.of(items(fleet, range(5, 21))))
    assert writer.writers["telemetry"].replays == 1
    writer.close()
    with psycopg.connect(database.owner_url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM telemetry").fetchone() \
            == (20, 20)


def _samples_of(fleet: Fleet, code: str, n: int) -> list:
    ref = VehicleRef(fleet.tenant_id, fleet.vehicles[code], fleet.slug, code)
    return [StoredSample(Reading(ref, Sample(seq=i, t_ms=T0 + i * 1000, speed_kph=40.0),
                                 Source.SIMULATOR)) for i in range(n)]


@pytest.mark.editions
def test_rollups_cover_closed_minutes_of_the_vehicles_written(database: TestDatabase,
                                                              fleet: Fleet) -> None:
    """Apache edition: a round refreshes the minutes that have closed (plus the grace) of the
    vehicles this worker wrote; the open minute and other workers' vehicles are left; close()
    does the rest. Timescale edition: the rollups are continuous aggregates with real-time
    aggregation, so every committed row counts at once and the refresher, which may not
    refresh them (only their owner may), stops keeping marks. Same totals on both."""
    writer = DatabaseWriter(database.ingest_url)
    writer.write(Batch.of([*_samples_of(fleet, "v1", 150), *_samples_of(fleet, "v2", 150)]))
    writer.close()
    now = [T0 + 150_000]
    refresher = RollupRefresher(database.ingest_url, 3600.0, 10.0, clock_ms=lambda: now[0])

    def minutes() -> dict[str, tuple[int, int]]:
        with psycopg.connect(database.owner_url) as conn:
            rows = conn.execute(
                "SELECT vehicle_id, sum(samples), "
                "(extract(epoch FROM max(bucket)) * 1000)::bigint FROM telemetry_1m "
                "GROUP BY 1").fetchall()
        codes = {v: k for k, v in fleet.vehicles.items()}
        return {codes[v]: (int(n), int(last)) for v, n, last in rows}

    try:
        refresher.touch(T0, T0 + 149_000, [fleet.vehicles["v1"]])
        refresher.flush()
        done = minutes()
        if database.edition == "timescale":
            assert {code: n for code, (n, _last) in done.items()} == {"v1": 150, "v2": 150}
            assert refresher.continuous_aggregates is True
            refresher.touch(T0, T0 + 149_000, [fleet.vehicles["v2"]])
            assert refresher._touched == {}  # no marks kept where nothing is refreshed by hand
        else:
            cutoff = closed_before(fleet.vehicles["v1"], now[0])
            assert set(done) == {"v1"}  # v2 is another worker's
            assert done["v1"] == ((cutoff - T0 + 999) // 1000, cutoff - MINUTE_MS)
            now[0] = T0 + 600_000  # every minute closed: the rest of v1 goes too
            refresher.flush()
            assert minutes()["v1"][0] == 150
            refresher.touch(T0, T0 + 149_000, [fleet.vehicles["v2"]])
    finally:
        refresher.close()  # everything still marked, whether closed or not
    assert minutes() == {"v1": (150, minutes()["v1"][1]), "v2": (150, minutes()["v1"][1])}
    with psycopg.connect(database.owner_url) as conn:
        hours = conn.execute("SELECT sum(samples), avg(avg_speed_kph) FROM telemetry_1h"
                             ).fetchone()
    assert hours == (300, 40.0)


@pytest.mark.editions
def test_a_failed_rollup_round_is_retried(database: TestDatabase, fleet: Fleet) -> None:
    """Each closed minute is refreshed once, so a round that fails keeps its marks (on the
    Timescale edition the later round finds nothing to do by hand, and the rows count by
    real-time aggregation)."""
    writer = DatabaseWriter(database.ingest_url)
    writer.write(Batch.of(_samples_of(fleet, "v1", 90)))
    writer.close()
    now = [T0 + 600_000]
    refresher = RollupRefresher(database.ingest_url, 3600.0, 10.0, clock_ms=lambda: now[0])
    try:
        refresher.db.url = "postgresql://nobody@127.0.0.1:9/none"
        refresher.touch(T0, T0 + 89_000, [fleet.vehicles["v1"]])
        refresher.flush()  # the database is unreachable: logged, kept
        assert refresher._touched
        refresher.db.url = database.ingest_url
        refresher.flush()
    finally:
        refresher.close()
    with psycopg.connect(database.owner_url) as conn:
        assert conn.execute("SELECT sum(samples) FROM telemetry_1m").fetchone() == (90,)


def test_minutes_close_staggered_by_vehicle() -> None:
    """Each round takes a slice of the fleet: when a minute counts as closed depends on the
    vehicle (0-60 s after the grace), and never before the grace has passed."""
    early, late = uuid.UUID(int=0), uuid.UUID(int=30_000)
    now = 10 * MINUTE_MS + ROLLUP_GRACE_MS + 15_000
    assert closed_before(early, now) == 10 * MINUTE_MS
    assert closed_before(late, now) == 9 * MINUTE_MS
    assert closed_before(late, now + 15_000) == 10 * MINUTE_MS
    assert closed_before(early, 10 * MINUTE_MS + ROLLUP_GRACE_MS - 1) == 9 * MINUTE_MS
