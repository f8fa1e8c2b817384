"""Exceptions of the jobs package: one root, library errors wrapped at the boundary."""

from __future__ import annotations

from core.errors import FleetError


class JobError(FleetError):
    """Root of every error raised by api.jobs."""


class ScheduleError(JobError):
    """A schedule setting cannot be parsed."""


class ArchiveError(JobError):
    """The cold archive (Azure Blob) failed: upload, read-back or verification."""


class VerificationError(ArchiveError):
    """An archived object does not match what was exported (row count or checksum)."""


class NotifyError(JobError):
    """An e-mail could not be sent."""
