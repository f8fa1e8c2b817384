"""Fuel drop (theft, leak) versus refuel, from smoothed fuel levels.

Raw fuel-level samples slosh by several percent when the vehicle moves or tilts, so single
samples are never compared. Samples are grouped into buckets of `fuel_smoothing_s` and each
bucket is reduced to its median (robust to slosh spikes; of at most `BUCKET_POINTS` values
spread over the bucket, so the cost does not grow with the sample rate). Each new bucket
level is compared with the highest and lowest bucket levels of the preceding
`fuel_drop_window_s` (and across a data gap with the last level before it, so fuel taken while
the device was off counts).
A change beyond `fuel_drop_pct` / `refuel_pct` opens an episode; it ends when the level
settles (changes by less than `fuel_settle_pct` between buckets) and is reported once, with
the whole change as `value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Literal

from stream.detectors.base import fold
from stream.detectors.common import vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading, snapshot_state


@snapshot_state
@dataclass(frozen=True, slots=True)
class FuelEpisode:
    """An open drop or refuel."""

    kind: Literal["fuel_drop", "refuel"]
    started_ms: int
    level_before_pct: float
    last_level_pct: float
    lat_deg: float | None
    lon_deg: float | None


@snapshot_state
@dataclass(frozen=True, slots=True)
class FuelState:
    """Per-vehicle fuel state: the open bucket, recent bucket levels and an open episode."""

    bucket_start_ms: int | None = None
    bucket_last_ms: int | None = None
    bucket_values: tuple[float, ...] = ()
    levels: tuple[tuple[int, float], ...] = ()
    """(time ms, median level %) of closed buckets within the window, oldest first."""
    episode: FuelEpisode | None = None
    bucket_taken_ms: int = 0
    """Time of the newest value kept in `bucket_values`."""


BUCKET_POINTS = 32
"""At most about this many values make a bucket's median: at 1 Hz every sample counts, at
10 Hz every third or so. Without the bound the bucket (and the per-vehicle snapshot) grew with
the sample rate, and copying it cost more per sample than all other detectors together."""


class FuelDetector:
    """Emits `fuel_drop` (warning) and `refuel` (info) episodes."""

    name = "fuel"
    ticks = False

    def __init__(self, settings: DetectorSettings) -> None:
        self._s = settings
        self._bucket_ms = settings.fuel_smoothing_s * 1000
        self._spacing_ms = self._bucket_ms / BUCKET_POINTS
        """Closer samples than this are not kept in a bucket (see `BUCKET_POINTS`)."""

    def initial_state(self) -> FuelState:
        """No fuel data yet."""
        return FuelState()

    def on_reading(self, state: FuelState, reading: Reading) -> tuple[FuelState, Sequence[Event]]:
        """Add the reading to its bucket; a finished bucket is compared with the window."""
        fuel = reading.sample.fuel_pct
        if fuel is None:
            return state, ()
        t = reading.t_ms
        events: Sequence[Event] = ()
        if (state.bucket_start_ms is not None and state.bucket_last_ms is not None
                and t - state.bucket_start_ms >= self._bucket_ms):
            state, events = self._close_bucket(state, state.bucket_last_ms, reading)
        if state.bucket_start_ms is None:
            return FuelState(t, t, (fuel,), state.levels, state.episode, t), events
        if t - state.bucket_taken_ms < self._spacing_ms:
            # Denser than the bucket needs for its median: the sample is not kept.
            return FuelState(state.bucket_start_ms, t, state.bucket_values, state.levels,
                             state.episode, state.bucket_taken_ms), events
        return FuelState(state.bucket_start_ms, t, (*state.bucket_values, fuel),
                         state.levels, state.episode, t), events

    def on_readings(self, state: FuelState,
                    readings: Sequence[Reading]) -> tuple[FuelState, Sequence[Event]]:
        """A batch that stays inside the open bucket only adds to it (no level is compared
        until the bucket closes): one state for the batch instead of one per reading."""
        start = state.bucket_start_ms
        if start is None:
            return fold(self, state, readings)
        bucket_ms, spacing_ms = self._bucket_ms, self._spacing_ms
        values = list(state.bucket_values)
        last_ms, taken_ms = state.bucket_last_ms, state.bucket_taken_ms
        for reading in readings:
            fuel = reading.sample.fuel_pct
            if fuel is None:
                continue
            t = reading.t_ms
            if t - start >= bucket_ms:
                return fold(self, state, readings)
            last_ms = t
            if t - taken_ms >= spacing_ms:
                values.append(fuel)
                taken_ms = t
        return FuelState(start, last_ms, tuple(values), state.levels, state.episode,
                         taken_ms), ()

    def _close_bucket(self, state: FuelState, t: int,
                      reading: Reading) -> tuple[FuelState, Sequence[Event]]:
        """Reduce the open bucket (last sample at `t`) to its median and compare it."""
        level = float(median(state.bucket_values))
        episode = state.episode
        settle = self._s.fuel_settle_pct
        if episode is not None:
            change = level - episode.last_level_pct
            going_on = change <= -settle if episode.kind == "fuel_drop" else change >= settle
            if going_on:
                episode = FuelEpisode(episode.kind, episode.started_ms, episode.level_before_pct,
                                      level, episode.lat_deg, episode.lon_deg)
                return FuelState(levels=((t, level),), episode=episode), ()
            amount = abs(level - episode.level_before_pct)
            event = vehicle_event(
                reading, episode.kind, t_ms=episode.started_ms,
                severity="warning" if episode.kind == "fuel_drop" else "info",
                started_ms=episode.started_ms, ended_ms=t,
                duration_s=(t - episode.started_ms) / 1000, value=round(amount, 2),
                threshold=(self._s.fuel_drop_pct if episode.kind == "fuel_drop"
                           else self._s.refuel_pct),
                lat_deg=episode.lat_deg, lon_deg=episode.lon_deg,
                details={"level_before_pct": round(episode.level_before_pct, 2),
                         "level_after_pct": round(level, 2)})
            # The settled level is the new baseline: the episode cannot fire twice.
            return FuelState(levels=((t, level),)), (event,)
        window_ms = self._s.fuel_drop_window_s * 1000
        earlier = tuple(p for p in state.levels if t - p[0] <= window_ms) or state.levels[-1:]
        levels = (*earlier, (t, level))
        if earlier:
            high = max(p[1] for p in earlier)
            low = min(p[1] for p in earlier)
            # The episode starts at the last bucket still at the old level (within the
            # settle tolerance), not at the noisiest extreme of the window.
            if high - level >= self._s.fuel_drop_pct:
                start = [p for p in earlier if p[1] >= high - settle][-1]
                episode = FuelEpisode("fuel_drop", start[0], start[1], level,
                                      reading.sample.lat_deg, reading.sample.lon_deg)
            elif level - low >= self._s.refuel_pct:
                start = [p for p in earlier if p[1] <= low + settle][-1]
                episode = FuelEpisode("refuel", start[0], start[1], level,
                                      reading.sample.lat_deg, reading.sample.lon_deg)
            if episode is not None:
                levels = ((t, level),)
        return FuelState(levels=levels, episode=episode), ()

    def on_tick(self, state: FuelState, now_ms: int) -> tuple[FuelState, Sequence[Event]]:
        """Buckets close on event time only."""
        return state, ()
