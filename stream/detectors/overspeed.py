"""Overspeed: one episode per stretch above the limit (global, or the geofence's own limit).

Like Traccar's overspeed handler, a geofence's `speed_limit_kph` replaces the global limit
while the vehicle is inside it (the geo index decides between overlapping fences), and an
episode must last a minimum time. Unlike an event per point, the episode is reported once,
when it ends, with its start, end, duration, maximum speed and the limit that applied;
stretches separated by less than `overspeed_merge_s` (slowing for a corner) are one episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from uuid import UUID

from stream.detectors.base import fold
from stream.detectors.common import vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading, snapshot_state


class SpeedLimits(Protocol):
    """What overspeed needs from the geo index: the limit that applies inside some fences."""

    def speed_limit_kph(self, fence_ids: frozenset[UUID]) -> float | None:
        """The speed limit, km/h, applying inside these fences, or None when none has one."""


IndexProvider = Callable[[], SpeedLimits | None]
"""Returns the current geo index (it is swapped when fences change, so ask on every use), or
None while no index is loaded (then only the global limit applies)."""


@snapshot_state
@dataclass(frozen=True, slots=True)
class OverspeedEpisode:
    """An open stretch above the limit."""

    started_ms: int
    last_over_ms: int
    max_speed_kph: float
    limit_kph: float
    geofence_id: UUID | None
    lat_deg: float | None
    lon_deg: float | None
    ended_ms: int | None = None
    """Set once the speed fell below the limit: the episode waits `overspeed_merge_s` for
    the vehicle to speed again before it is reported."""
    stretches: int = 1


@snapshot_state
@dataclass(frozen=True, slots=True)
class OverspeedState:
    """Per-vehicle overspeed state."""

    last_ms: int | None = None
    """Event time of the last reading with a speed."""
    episode: OverspeedEpisode | None = None


class OverspeedDetector:
    """Emits one `overspeed` event per episode of at least `overspeed_min_duration_s`."""

    name = "overspeed"
    ticks = False

    def __init__(self, settings: DetectorSettings, index_provider: IndexProvider) -> None:
        self._s = settings
        self._index = index_provider

    def initial_state(self) -> OverspeedState:
        """No episode open."""
        return OverspeedState()

    def limit_for(self, reading: Reading) -> tuple[float | None, UUID | None]:
        """The limit applying to a reading, km/h, and the fence that set it (None: global)."""
        index = self._index() if reading.fences else None
        if index is not None:
            limit = index.speed_limit_kph(reading.fences)
            if limit is not None:
                fence = next((f for f in sorted(reading.fences)
                              if index.speed_limit_kph(frozenset((f,))) == limit), None)
                return limit, fence
        global_limit = self._s.overspeed_limit_kph
        return (global_limit if global_limit > 0 else None), None

    def on_reading(self, state: OverspeedState,
                   reading: Reading) -> tuple[OverspeedState, Sequence[Event]]:
        """Open, extend or close an episode with the reading's speed."""
        speed = reading.sample.speed_kph
        if speed is None:
            return state, ()
        t = reading.t_ms
        s = self._s
        events: list[Event] = []
        episode = state.episode
        if (episode is not None and episode.ended_ms is None and state.last_ms is not None
                and t - state.last_ms > s.overspeed_max_gap_s * 1000):
            # Nobody knows the speed during the gap: end at the last reading above the limit.
            episode = replace(episode, ended_ms=episode.last_over_ms)
        if (episode is not None and episode.ended_ms is not None
                and t - episode.ended_ms > s.overspeed_merge_s * 1000):
            events.extend(self._report(episode, reading))
            episode = None
        limit, fence = self.limit_for(reading)
        if episode is not None and episode.ended_ms is None:
            if limit is not None and speed > limit - s.overspeed_hysteresis_kph:
                episode = replace(
                    episode, last_over_ms=t, max_speed_kph=max(episode.max_speed_kph, speed),
                    limit_kph=min(episode.limit_kph, limit))
            else:
                episode = replace(episode, ended_ms=t)
        elif limit is not None and speed > limit:
            if episode is not None:  # speeding again soon after: the same episode
                episode = replace(
                    episode, last_over_ms=t, max_speed_kph=max(episode.max_speed_kph, speed),
                    limit_kph=min(episode.limit_kph, limit), ended_ms=None,
                    stretches=episode.stretches + 1)
            else:
                episode = OverspeedEpisode(t, t, speed, limit, fence,
                                           reading.sample.lat_deg, reading.sample.lon_deg)
        return OverspeedState(last_ms=t, episode=episode), events

    def on_readings(self, state: OverspeedState,
                    readings: Sequence[Reading]) -> tuple[OverspeedState, Sequence[Event]]:
        """A batch. With no episode open, no fence (whose limit could apply) and every speed
        at or below the global limit, nothing opens: only the time of the last speed moves."""
        if state.episode is not None:
            return fold(self, state, readings)
        limit = self._s.overspeed_limit_kph
        last_ms = None
        for reading in readings:
            speed = reading.sample.speed_kph
            if speed is None:
                continue
            if reading.fences or (limit > 0 and speed > limit):
                return fold(self, state, readings)
            last_ms = reading.t_ms
        if last_ms is None:
            return state, ()
        return OverspeedState(last_ms=last_ms, episode=None), ()

    def _report(self, episode: OverspeedEpisode, reading: Reading) -> Sequence[Event]:
        ended_ms = episode.ended_ms if episode.ended_ms is not None else episode.last_over_ms
        duration_s = (ended_ms - episode.started_ms) / 1000
        if duration_s < self._s.overspeed_min_duration_s:
            return ()
        return (vehicle_event(
            reading, "overspeed", t_ms=episode.started_ms, severity="warning",
            started_ms=episode.started_ms, ended_ms=ended_ms, duration_s=duration_s,
            value=episode.max_speed_kph, threshold=episode.limit_kph,
            geofence_id=episode.geofence_id, lat_deg=episode.lat_deg, lon_deg=episode.lon_deg,
            details={"limit_source": "global" if episode.geofence_id is None else "geofence",
                     "stretches": episode.stretches}),)

    def on_tick(self, state: OverspeedState, now_ms: int) -> tuple[OverspeedState, Sequence[Event]]:
        """Episodes end on event time only (the next reading), never on processing time."""
        return state, ()
