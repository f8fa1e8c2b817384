"""Schedules as settings: ``daily HH:MM`` (UTC) or ``every N`` (seconds)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from api.jobs.errors import ScheduleError

_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})$")
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Schedule:
    """When a job is due: at a time of day, or at a fixed interval."""

    at: time | None = None
    every_s: float | None = None

    def next_after(self, now: datetime) -> datetime:
        """The first due time strictly after `now` (an aware datetime)."""
        if self.every_s is not None:
            return now + timedelta(seconds=self.every_s)
        if self.at is None:
            raise ScheduleError("a schedule needs a time of day or an interval")
        candidate = now.replace(hour=self.at.hour, minute=self.at.minute, second=0,
                                microsecond=0)
        return candidate if candidate > now else candidate + timedelta(days=1)


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule setting; raises ScheduleError naming the accepted forms."""
    value = text.strip().lower()
    if m := _DAILY.match(value):
        hour, minute = int(m[1]), int(m[2])
        if hour > 23 or minute > 59:
            raise ScheduleError(f"schedule {text!r}: no such time of day")
        return Schedule(at=time(hour, minute))
    if m := _EVERY.match(value):
        seconds = float(m[1])
        if seconds <= 0:
            raise ScheduleError(f"schedule {text!r}: interval must be positive")
        return Schedule(every_s=seconds)
    raise ScheduleError(f"schedule {text!r}: expected 'daily HH:MM' or 'every SECONDS'")
