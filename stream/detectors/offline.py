"""Device offline: no data for `offline_after_s` of processing time; online when data resumes.

Silence is measured on the stream's own clock, not on sample times: a device replaying its
spool after a dead zone is late, not offline, and a clock-skewed device must not look silent.
The clock is read when a reading is processed and ticks bring `now_ms`. If the ticks
themselves stopped for longer than `offline_stream_gap_s` (the stream was down or restarting
from a snapshot), the silence was ours: time-outs restart from that tick, so a restart does
not mark the whole fleet offline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID

from stream.detectors.common import vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading, VehicleEvent, snapshot_state


def wall_clock_ms() -> int:
    """Processing time, Unix milliseconds."""
    return time.time_ns() // 1_000_000


@snapshot_state
@dataclass(frozen=True, slots=True)
class OfflineState:
    """Per-vehicle liveness, in processing time (ms)."""

    last_seen_ms: int | None = None
    """When the last reading was processed."""
    last_sample_ms: int | None = None
    """Event time of that reading."""
    offline_since_ms: int | None = None
    """Processing time of the last reading before the device went offline; None when online."""
    last_tick_ms: int | None = None
    tenant_id: UUID | None = None
    vehicle_id: UUID | None = None
    """Kept so that a tick, which carries no reading, can address its event."""


class OfflineDetector:
    """Emits `device_offline` from ticks and `device_online` when a reading arrives again."""

    name = "device_offline"

    def __init__(self, settings: DetectorSettings,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self._s = settings
        self._clock = clock

    def initial_state(self) -> OfflineState:
        """Never seen."""
        return OfflineState()

    def on_reading(self, state: OfflineState,
                   reading: Reading) -> tuple[OfflineState, Sequence[Event]]:
        """Note the processing time; report `device_online` if the device was offline."""
        now = self._clock()
        events: tuple[Event, ...] = ()
        if state.offline_since_ms is not None:
            events = (vehicle_event(
                reading, "device_online", t_ms=now, started_ms=state.offline_since_ms,
                ended_ms=now, duration_s=(now - state.offline_since_ms) / 1000,
                details={"first_sample_ms": reading.t_ms}),)
        # The constructor, not dataclasses.replace: this runs for every reading.
        return OfflineState(last_seen_ms=now, last_sample_ms=reading.t_ms,
                            offline_since_ms=None, last_tick_ms=state.last_tick_ms,
                            tenant_id=reading.vehicle.tenant_id,
                            vehicle_id=reading.vehicle.vehicle_id), events

    def on_readings(self, state: OfflineState,
                    readings: Sequence[Reading]) -> tuple[OfflineState, Sequence[Event]]:
        """A batch: only its first reading can bring the device back online, and the state
        is the last reading's, seen now (processed together, the readings share one clock
        read)."""
        if not readings:
            return state, ()
        state, events = self.on_reading(state, readings[0])
        if len(readings) == 1:
            return state, events
        last = readings[-1]
        return OfflineState(last_seen_ms=self._clock(), last_sample_ms=last.t_ms,
                            offline_since_ms=None, last_tick_ms=state.last_tick_ms,
                            tenant_id=last.vehicle.tenant_id,
                            vehicle_id=last.vehicle.vehicle_id), events

    def on_tick(self, state: OfflineState, now_ms: int) -> tuple[OfflineState, Sequence[Event]]:
        """Report `device_offline` once the silence reaches `offline_after_s`."""
        last_seen, tenant, vehicle = state.last_seen_ms, state.tenant_id, state.vehicle_id
        if last_seen is None or tenant is None or vehicle is None:
            return state, ()
        last_tick = state.last_tick_ms
        state = replace(state, last_tick_ms=now_ms)
        if state.offline_since_ms is not None:
            return state, ()
        if last_tick is not None and now_ms - last_tick > self._s.offline_stream_gap_s * 1000:
            # We were not watching: restart the time-out instead of blaming the device.
            return replace(state, last_seen_ms=max(last_seen, now_ms)), ()
        silence_s = (now_ms - last_seen) / 1000
        if silence_s < self._s.offline_after_s:
            return state, ()
        event = VehicleEvent(
            t_ms=now_ms, tenant_id=tenant, vehicle_id=vehicle, event_type="device_offline",
            severity="warning", started_ms=last_seen, duration_s=silence_s, value=silence_s,
            threshold=self._s.offline_after_s, details={"last_sample_ms": state.last_sample_ms})
        return replace(state, offline_since_ms=last_seen), (event,)
