"""Exactly one job runner across replicas: two runners with their own connections."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.config import ApiSection, ApiSettings
from api.jobs.errors import ScheduleError
from api.jobs.runner import JobRunner, ScheduledJob
from api.jobs.schedule import parse_schedule
from api.jobs.wiring import RUNNER_KEY
from core.settings import DatabaseSettings, MqttSettings, RedisSettings

pytestmark = pytest.mark.services


class CountingJob:
    name = "counting"

    def __init__(self, runs: list[str], who: str) -> None:
        self.runs = runs
        self.who = who

    async def run(self) -> dict[str, Any]:
        self.runs.append(self.who)
        return {"who": self.who}


def test_schedules() -> None:
    daily = parse_schedule("daily 06:00")
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert daily.next_after(now) == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    assert daily.next_after(now.replace(hour=5)) == datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    assert parse_schedule("every 2.5").every_s == 2.5
    for bad in ("daily 25:00", "every 0", "hourly"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)


async def _wait(predicate, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_single_leader_and_failover(database) -> None:
    runs: list[str] = []
    services_running: set[str] = set()

    def make(who: str) -> JobRunner:
        async def service() -> None:
            services_running.add(who)
            try:
                await asyncio.Event().wait()
            finally:
                services_running.discard(who)

        job = ScheduledJob(CountingJob(runs, who), parse_schedule("every 0.2"))
        return JobRunner(database.owner_url, [job], lock_key=4242, tick_s=0.05,
                         services=[("svc", service)], runner_id=who)

    a, b = make("a"), make("b")
    async with a, b:
        await _wait(lambda: len(runs) >= 5, 10, "five runs")
        assert a.is_leader != b.is_leader
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert set(runs) == {leader.runner_id}
        assert services_running == {leader.runner_id}
        # The leader goes away (replica shut down): the other takes over.
        await leader.stop()
        # Its services are stopped; the follower may already have taken over while the
        # leader's stop was still awaiting (its tick is 50 ms): only one runs them at a time.
        assert leader.runner_id not in services_running
        n = len(runs)
        await _wait(lambda: follower.is_leader and len(runs) >= n + 3, 10, "failover")
        assert set(runs[n:]) == {follower.runner_id}
        assert services_running == {follower.runner_id}
    conn = await asyncpg.connect(database.owner_url)
    try:
        rows = await conn.fetch("SELECT runner, status FROM job_runs ORDER BY id")
        assert {r["status"] for r in rows} == {"succeeded"}
        assert [r["runner"] for r in rows] == runs
    finally:
        await conn.close()


async def test_leader_connection_killed(database) -> None:
    runs: list[str] = []
    runners = [JobRunner(database.owner_url,
                         [ScheduledJob(CountingJob(runs, w), parse_schedule("every 0.2"))],
                         lock_key=77, tick_s=0.05, runner_id=w) for w in ("x", "y")]
    async with runners[0], runners[1]:
        await _wait(lambda: any(r.is_leader for r in runners), 10, "a leader")
        leader = next(r for r in runners if r.is_leader)
        other = next(r for r in runners if r is not leader)
        # Kill the leader's session from outside (a network partition, say).
        admin = await asyncpg.connect(database.admin_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid = 77 AND granted")
        finally:
            await admin.close()
        # The old leader notices that its session (and so the lock) is gone and steps down;
        # then either runner may win the lock again, but never both.
        await _wait(lambda: leader.step_downs == 1, 10, "the old leader to step down")
        await _wait(lambda: leader.is_leader or other.is_leader, 10, "a new leader")
        n = len(runs)
        await _wait(lambda: len(runs) >= n + 3, 10, "runs after the failover")
        assert leader.is_leader != other.is_leader


async def test_two_api_apps_run_jobs_once(database, redis_url, mqtt_url) -> None:
    """Two API replicas (independent app objects, own pools and connections): one runner."""
    settings = ApiSettings(
        database=DatabaseSettings(url=database.app_url, owner_url=database.owner_url,
                                  ingest_url=database.ingest_url),
        redis=RedisSettings(url=redis_url), mqtt=MqttSettings(url=mqtt_url),
        api=ApiSection(environment="test"),
        jobs={"tick_s": 0.05, "pullers_enabled": False, "rollups_schedule": "every 0.2",
              "maintenance_schedule": "daily 06:00", "retention_schedule": "daily 03:30"})
    apps = [create_app(settings), create_app(settings)]
    servers = [TestServer(app, host="127.0.0.1") for app in apps]
    for server in servers:
        await server.start_server()
    try:
        runners = [app[RUNNER_KEY] for app in apps]
        conn = await asyncpg.connect(database.owner_url)
        try:
            async def runs() -> list[str]:
                return [r["runner"] for r in await conn.fetch(
                    "SELECT runner FROM job_runs WHERE job = 'rollups' AND status = 'succeeded'")]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(await runs()) < 4:
                assert loop.time() < deadline, "rollups did not run"
                await asyncio.sleep(0.1)
            assert sum(r.is_leader for r in runners) == 1
            leader = next(r for r in runners if r.is_leader)
            assert set(await runs()) == {leader.runner_id}
            assert await conn.fetchval("SELECT runner FROM job_leader") == leader.runner_id
        finally:
            await conn.close()
    finally:
        for server in servers:
            await server.close()


class ReportingJob:
    """Finishes, but lists a part that failed (as retention does for a tenant-day)."""

    name = "reporting"

    async def run(self) -> dict[str, Any]:
        return {"days_archived": 3, "failures": ["t1/telemetry/2026-10-01: upload failed"]}


class CutOffJob:
    """Its database session is cut while it runs (a database restart), and it fails."""

    name = "cut-off"

    def __init__(self) -> None:
        self.runner: JobRunner | None = None
        self.calls = 0

    async def run(self) -> dict[str, Any]:
        # Once: the run that could not be recorded is due again when its runner reconnects
        # (its next due time was not written either), and that one must not be cut off too.
        self.calls += 1
        if self.calls > 1:
            return {}
        assert self.runner is not None
        assert self.runner._conn is not None
        pid = self.runner._conn.get_server_pid()
        other = await asyncpg.connect(self.runner._db_url)
        try:
            await other.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await other.close()
        raise RuntimeError("the database went away mid-job")


async def test_a_run_with_failures_is_partial_and_not_a_success(database) -> None:
    """Issue #24, finding 2: what an operator watches turns red."""
    runner = JobRunner(database.owner_url, [], lock_key=4343, runner_id="p")
    run_id = await runner.run_job(ScheduledJob(ReportingJob(), parse_schedule("every 60")))
    conn = await asyncpg.connect(database.owner_url)
    try:
        row = await conn.fetchrow("SELECT status, error, details FROM job_runs WHERE id = $1",
                                  run_id)
        success = await conn.fetchval(
            "SELECT last_success_at FROM job_state WHERE job = 'reporting'")
    finally:
        await conn.close()
    assert row["status"] == "partial"
    assert row["error"] == "1 failed: t1/telemetry/2026-10-01: upload failed"
    assert '"days_archived": 3' in row["details"]
    assert success is None


async def test_a_run_cut_off_by_the_database_keeps_its_cause(database) -> None:
    """Issue #24, finding 2: a database restart mid-job used to leave only "abandoned"."""
    job = CutOffJob()
    runner = JobRunner(database.owner_url, [ScheduledJob(job, parse_schedule("every 3600"))],
                       lock_key=4344, tick_s=0.05, runner_id="cut")
    job.runner = runner
    conn = await asyncpg.connect(database.owner_url)
    try:
        async with runner:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                row = await conn.fetchrow(
                    "SELECT status, error FROM job_runs WHERE job = 'cut-off' ORDER BY id"
                    " LIMIT 1")
                if row is not None and row["status"] == "failed" and \
                        not row["error"].startswith("abandoned"):
                    break
                assert loop.time() < deadline, f"the cause was not recorded: {row}"
                await asyncio.sleep(0.1)
        assert row["error"] == "RuntimeError: the database went away mid-job"
    finally:
        await conn.close()


class UnrecordableJob:
    """Finishes with a failure text PostgreSQL refuses in jsonb (a NUL)."""

    name = "unrecordable"

    async def run(self) -> dict[str, Any]:
        return {"failures": ["t1/telemetry/2026-10-01: \x00 in a message"]}


async def test_an_outcome_the_server_refuses_is_recorded_as_such_not_kept_for_ever(
        database) -> None:
    """A refusal of the record itself is data, not a lost session: retrying it would keep the
    runner from ever leading again."""
    runner = JobRunner(database.owner_url, [], lock_key=4345, runner_id="u")
    run_id = await runner.run_job(ScheduledJob(UnrecordableJob(), parse_schedule("every 60")))
    assert runner._unrecorded == {}
    conn = await asyncpg.connect(database.owner_url)
    try:
        row = await conn.fetchrow("SELECT status, error FROM job_runs WHERE id = $1", run_id)
    finally:
        await conn.close()
    assert row["status"] == "failed"
    assert row["error"].startswith("outcome not recordable:")
