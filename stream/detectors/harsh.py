"""Harsh acceleration and braking from speed deltas, one event per manoeuvre.

The acceleration is the change of speed over at least `harsh_min_dt_s` (so at 10 Hz the
noise of single samples is not divided by 0.1 s) and at most `harsh_max_dt_s` (across a
longer gap the speed curve is unknown and a delta would be fiction). Consecutive samples
beyond the threshold form one manoeuvre, reported when it ends with its peak in m/s^2.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from stream.detectors.common import vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading, snapshot_state

KPH_TO_MPS = 1 / 3.6


@snapshot_state
@dataclass(frozen=True, slots=True)
class Manoeuvre:
    """An open stretch of harsh acceleration or braking."""

    kind: Literal["harsh_acceleration", "harsh_braking"]
    started_ms: int
    last_ms: int
    peak_mps2: float
    """Largest magnitude seen, m/s^2 (positive for braking too)."""
    lat_deg: float | None
    lon_deg: float | None


@snapshot_state
@dataclass(frozen=True, slots=True)
class HarshState:
    """Recent (time ms, speed m/s) pairs within `harsh_max_dt_s`, and the open manoeuvre."""

    recent: tuple[tuple[int, float], ...] = ()
    manoeuvre: Manoeuvre | None = None


class HarshDrivingDetector:
    """Emits `harsh_acceleration` and `harsh_braking` events."""

    name = "harsh_driving"
    ticks = False

    def __init__(self, settings: DetectorSettings) -> None:
        self._s = settings

    def initial_state(self) -> HarshState:
        """No history."""
        return HarshState()

    def on_reading(self, state: HarshState,
                   reading: Reading) -> tuple[HarshState, Sequence[Event]]:
        """Estimate the acceleration ending at this reading and track manoeuvres."""
        return self.on_readings(state, (reading,))

    def on_readings(self, state: HarshState,
                    readings: Sequence[Reading]) -> tuple[HarshState, Sequence[Event]]:
        """A run of readings, on plain lists; one state at the end.

        Times and speeds are kept in two lists in time order (readings come in event-time
        order), so both ends of the useful stretch are found by bisection without a key
        function, and a reading appends instead of copying the window: at 10 Hz and more the
        per-reading scan and copy were this detector's whole cost.
        """
        s = self._s
        max_dt_ms = s.harsh_max_dt_s * 1000
        min_dt_ms = s.harsh_min_dt_s * 1000
        times = [p[0] for p in state.recent]
        speeds = [p[1] for p in state.recent]
        manoeuvre = state.manoeuvre
        events: list[Event] = []
        for reading in readings:
            speed_kph = reading.sample.speed_kph
            if speed_kph is None:
                continue
            t = reading.t_ms
            v = speed_kph * KPH_TO_MPS
            hi = bisect.bisect_left(times, t)  # a repeated time is not "earlier"
            del times[hi:], speeds[hi:]
            lo = bisect.bisect_left(times, t - max_dt_ms)
            del times[:lo], speeds[:lo]
            if manoeuvre is not None and not times:
                # Gap: the manoeuvre ended somewhere in it; report it as seen so far.
                events.extend(self._close(manoeuvre, manoeuvre.last_ms, reading))
                manoeuvre = None
            # The newest earlier sample at least min_dt before this one; older ones than it
            # are never the reference again (later readings only move the bound forward).
            k = bisect.bisect_right(times, t - min_dt_ms)
            if k:
                ref_ms, ref_v = times[k - 1], speeds[k - 1]
                del times[:k - 1], speeds[:k - 1]
                accel = (v - ref_v) / ((t - ref_ms) / 1000)
                kind: Literal["harsh_acceleration", "harsh_braking"] | None = None
                if accel >= s.harsh_accel_mps2:
                    kind = "harsh_acceleration"
                elif -accel >= s.harsh_brake_mps2:
                    kind = "harsh_braking"
                if manoeuvre is not None and manoeuvre.kind != kind:
                    events.extend(self._close(manoeuvre, t, reading))
                    manoeuvre = None
                if kind is not None:
                    if manoeuvre is None:
                        manoeuvre = Manoeuvre(kind, ref_ms, t, abs(accel),
                                              reading.sample.lat_deg, reading.sample.lon_deg)
                    else:
                        manoeuvre = Manoeuvre(kind, manoeuvre.started_ms, t,
                                              max(manoeuvre.peak_mps2, abs(accel)),
                                              manoeuvre.lat_deg, manoeuvre.lon_deg)
            times.append(t)
            speeds.append(v)
        return HarshState(recent=tuple(zip(times, speeds, strict=True)),
                          manoeuvre=manoeuvre), events

    def _close(self, m: Manoeuvre, ended_ms: int, reading: Reading) -> Sequence[Event]:
        threshold = (self._s.harsh_accel_mps2 if m.kind == "harsh_acceleration"
                     else self._s.harsh_brake_mps2)
        return (vehicle_event(
            reading, m.kind, t_ms=m.started_ms, severity="warning", started_ms=m.started_ms,
            ended_ms=ended_ms, duration_s=(ended_ms - m.started_ms) / 1000,
            value=round(m.peak_mps2, 3), threshold=threshold,
            lat_deg=m.lat_deg, lon_deg=m.lon_deg),)

    def on_tick(self, state: HarshState, now_ms: int) -> tuple[HarshState, Sequence[Event]]:
        """Manoeuvres end on event time only."""
        return state, ()
