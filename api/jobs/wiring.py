"""Builds the job runner of one API process from its settings (scheduled jobs, the vendor
pullers as services) and starts it with the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api.config import SETTINGS_KEY
from api.integrations.config import IntegrationsSettings, integrations_settings
from api.integrations.services import puller_services
from api.jobs.config import JobsSettings, jobs_settings
from api.jobs.maintenance import MaintenanceJob
from api.jobs.retention import RetentionJob, RollupsJob
from api.jobs.runner import JobRunner, ScheduledJob, Service
from api.jobs.schedule import parse_schedule
from core.settings import DatabaseSettings, MqttSettings, RedisSettings


def build_runner(database: DatabaseSettings, mqtt: MqttSettings, redis: RedisSettings,
                 jobs: JobsSettings, integ: IntegrationsSettings) -> JobRunner:
    """The runner with every scheduled job and, when configured, the pullers."""
    owner = database.owner_url
    scheduled = [
        ScheduledJob(MaintenanceJob(owner, jobs), parse_schedule(jobs.maintenance_schedule)),
        ScheduledJob(RetentionJob(owner, jobs), parse_schedule(jobs.retention_schedule)),
        ScheduledJob(RollupsJob(owner, jobs), parse_schedule(jobs.rollups_schedule)),
    ]
    services: list[tuple[str, Service]] = []
    services.extend(puller_services(database, mqtt, redis, jobs, integ))
    return JobRunner(owner, scheduled, lock_key=jobs.lock_key, tick_s=jobs.tick_s,
                     services=services)


RUNNER_KEY: web.AppKey[JobRunner] = web.AppKey("job_runner", JobRunner)
"""This replica's job runner, in the app."""


def setup(app: web.Application) -> None:
    """Start this replica's job runner with the app (called by api.app.create_app)."""
    settings = app[SETTINGS_KEY]
    jobs = jobs_settings(settings.jobs)
    if not jobs.enabled:
        return
    runner = build_runner(settings.database, settings.mqtt, settings.redis, jobs,
                          integrations_settings(settings.integrations))
    app[RUNNER_KEY] = runner

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await runner.stop()

    app.cleanup_ctx.append(lifecycle)
