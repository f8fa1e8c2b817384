"""The job runner: exactly one leader across API replicas, by a PostgreSQL advisory lock.

Every replica runs a `JobRunner`. Each holds one dedicated connection and tries
``pg_try_advisory_lock(key)`` on it; the winner is the leader until that connection ends (the
server releases a session lock when its session dies, so a crashed or partitioned leader
loses the lock without any timeout of ours). The leader checks its connection every tick
(the "renewal": a failed heartbeat means the lock may be gone, so it stops its jobs at once
and tries again). Scheduled jobs are idempotent, so the short overlap possible when a leader's
connection dies in the middle of a job does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from api.jobs.schedule import Schedule

log = logging.getLogger(__name__)


class Job(Protocol):
    """A scheduled job: `run` does one idempotent pass and returns details for job_runs."""

    name: str

    async def run(self) -> dict[str, Any]:
        """Do the work once."""


@dataclass(frozen=True)
class ScheduledJob:
    """A job and when it is due."""

    job: Job
    schedule: Schedule


Service = Callable[[], Awaitable[None]]
"""A long-running task (a puller) that runs on the leader until cancelled."""


def runner_identity() -> str:
    """host:pid:random, recorded with every job run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    """Runs due jobs and long-running services while it holds the lock."""

    def __init__(self, db_url: str, jobs: Sequence[ScheduledJob], *, lock_key: int,
                 tick_s: float = 5.0, services: Sequence[tuple[str, Service]] = (),
                 runner_id: str | None = None) -> None:
        self._db_url = db_url
        self._jobs = list(jobs)
        self._lock_key = lock_key
        self._tick_s = tick_s
        self._services = list(services)
        self.runner_id = runner_id or runner_identity()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._service_tasks: list[asyncio.Task[None]] = []
        self.is_leader = False
        self.leadership_changes = 0
        self.step_downs = 0
        self._unrecorded: dict[int, tuple[str, str, str | None, str | None]] = {}
        """job_runs id -> (job, status, error, details JSON) of a run that ended while the
        database could not take its record (a restart mid-job): written on the next
        connection, so the run does not read 'abandoned' without its cause or its outcome."""

    async def __aenter__(self) -> JobRunner:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the runner loop in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"job-runner {self.runner_id}")

    async def stop(self) -> None:
        """Stop jobs and services and release the lock (by closing its connection)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down()

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the runner must outlive any failure
                # Whatever broke (lost session, a driver error after a cut connection), the
                # lock may be gone: stop leading now and compete again on the next tick.
                log.warning("job runner %s: %s: stepping down", self.runner_id, exc)
                await self._step_down()
            await asyncio.sleep(self._tick_s)

    async def _tick(self) -> None:
        if self._conn is None or self._conn.is_closed():
            if self.is_leader:
                # The session that held the lock is gone, and the lock with it.
                await self._step_down()
            self._conn = await asyncpg.connect(self._db_url)
        conn = self._conn
        await self._record_unrecorded(conn)
        if not self.is_leader:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                return
            self.is_leader = True
            self.leadership_changes += 1
            log.info("job runner %s is now the leader", self.runner_id)
            await conn.execute(
                "INSERT INTO job_leader (runner, acquired_at, heartbeat_at)"
                " VALUES ($1, now(), now())"
                " ON CONFLICT (singleton) DO UPDATE SET runner = EXCLUDED.runner,"
                " acquired_at = now(), heartbeat_at = now()", self.runner_id)
            # Runs still "running" belong to a leader that is gone (only the leader runs jobs).
            await conn.execute(
                "UPDATE job_runs SET status = 'failed', finished_at = now(),"
                " error = 'abandoned: its runner lost the lock (its own record of the cause, if"
                " any, follows when it reconnects)' WHERE status = 'running'")
            self._service_tasks = [asyncio.create_task(self._supervise(name, svc), name=name)
                                   for name, svc in self._services]
        else:
            # The heartbeat doubles as the liveness check of the lock-holding session.
            await conn.execute("UPDATE job_leader SET heartbeat_at = now() WHERE runner = $1",
                               self.runner_id)
        await self._run_due(conn)

    async def _supervise(self, name: str, service: Service) -> None:
        while True:
            try:
                await service()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A puller must never take the runner down; it restarts after a pause.
                log.exception("service %s failed; restarting in 30 s", name)
                await asyncio.sleep(30)
            else:
                return

    async def _step_down(self) -> None:
        for task in self._service_tasks:
            task.cancel()
        for task in self._service_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._service_tasks = []
        if self.is_leader:
            log.info("job runner %s is no longer the leader", self.runner_id)
            self.step_downs += 1
        self.is_leader = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _run_due(self, conn: asyncpg.Connection) -> None:
        now = datetime.now(UTC)
        for sj in self._jobs:
            due = await conn.fetchval("SELECT next_due_at FROM job_state WHERE job = $1",
                                      sj.job.name)
            if due is None:
                # First sight of this job: interval jobs run now, daily jobs at their time.
                due = now if sj.schedule.every_s is not None else sj.schedule.next_after(now)
                await conn.execute(
                    "INSERT INTO job_state (job, next_due_at) VALUES ($1, $2)"
                    " ON CONFLICT (job) DO UPDATE SET next_due_at = EXCLUDED.next_due_at",
                    sj.job.name, due)
            if due > now:
                continue
            await self.run_job(sj, conn)
            if not self.is_leader:
                return

    async def run_job(self, sj: ScheduledJob, conn: asyncpg.Connection | None = None) -> int:
        """Run one job now and record it in job_runs; returns the job_runs id."""
        own = conn is None
        c = conn or await asyncpg.connect(self._db_url)
        try:
            run_id: int = await c.fetchval(
                "INSERT INTO job_runs (job, runner) VALUES ($1, $2) RETURNING id",
                sj.job.name, self.runner_id)
            await c.execute("INSERT INTO job_state (job, last_started_at) VALUES ($1, now())"
                            " ON CONFLICT (job) DO UPDATE SET last_started_at = now()",
                            sj.job.name)
            error: str | None
            body: str | None
            try:
                details = await sj.job.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("job %s failed", sj.job.name)
                status, error, body = "failed", f"{type(exc).__name__}: {exc}"[:2000], None
            else:
                # A job that finished but lists failures (a tenant-day not archived) is not a
                # success: 'partial', its first failure as the error, last_success_at kept.
                failures = details.get("failures") or []
                status = "partial" if failures else "succeeded"
                count = details.get("failure_count", len(failures))  # `failures` may be cut
                error = f"{count} failed: {failures[0]}"[:2000] if failures else None
                body = json.dumps(details, default=str)
                if failures:
                    log.warning("job %s finished partially: %d failures, first: %s",
                                sj.job.name, count, failures[0])
            try:
                await self._record(c, run_id, status, error, body)
            except asyncpg.PostgresError as exc:
                if not exc.sqlstate.startswith(_REFUSED_DATA):
                    self._unrecorded[run_id] = (sj.job.name, status, error, body)
                    raise
                # The server refuses this outcome as data (say a NUL in a failure text), and
                # would every time: record that instead of keeping it for ever.
                status, error = "failed", f"outcome not recordable: {exc}"[:2000]
                await self._record(c, run_id, status, error, None)
            except Exception:
                # Whatever the driver raised (a cut session can surface as a client-side
                # protocol error, not only as a connection error), the outcome is kept.
                self._unrecorded[run_id] = (sj.job.name, status, error, body)
                raise
            status_ok = status == "succeeded"
            next_due = sj.schedule.next_after(datetime.now(UTC))
            await c.execute(
                "UPDATE job_state SET next_due_at = $2, updated_at = now(),"
                " last_success_at = CASE WHEN $3 THEN now() ELSE last_success_at END"
                " WHERE job = $1", sj.job.name, next_due, status_ok)
            return run_id
        finally:
            if own:
                await c.close()


    @staticmethod
    async def _record(conn: asyncpg.Connection, run_id: int, status: str, error: str | None,
                      details: str | None) -> None:
        """Write how a run ended. A leader that took over meanwhile may have marked it
        abandoned; the real outcome replaces that."""
        await conn.execute(
            "UPDATE job_runs SET status = $2, finished_at = coalesce(finished_at, now()),"
            " error = $3, details = coalesce($4::jsonb, details) WHERE id = $1"
            " AND (status = 'running' OR error LIKE 'abandoned:%')",
            run_id, status, error, details)

    async def _record_unrecorded(self, conn: asyncpg.Connection) -> None:
        """Write the outcomes of runs that ended while the database was away; a success
        counts as the job's last one (what staleness alerts read)."""
        for run_id, (job, status, error, details) in list(self._unrecorded.items()):
            async with conn.transaction():
                await self._record(conn, run_id, status, error, details)
                if status == "succeeded":
                    await conn.execute(
                        "UPDATE job_state SET last_success_at = greatest(last_success_at,"
                        " (SELECT finished_at FROM job_runs WHERE id = $2)) WHERE job = $1",
                        job, run_id)
            del self._unrecorded[run_id]


_REFUSED_DATA = ("22", "23")
"""SQLSTATE classes of a value the server refuses (data exception, integrity violation), as
against a lost session or a server shutting down, after which the same write may succeed."""
