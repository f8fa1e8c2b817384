"""Geofence detector: enter, exit, dwell and crossing events per vehicle and fence.

The dataflow fills `Reading.fences` (the fences whose zone covers the fix) with
`FenceIndex.containing` for a whole batch; this detector turns that raw membership into
debounced events, one vehicle at a time, in event time:

- A fence's *confirmed* state (inside/outside) changes only when the opposite state has been
  observed on `GeofenceSettings.min_fixes` consecutive fixes AND has lasted the fence's
  `debounce_s` (measured from the first fix of the new state). A fix that falls back to the
  confirmed state cancels the pending change, so GPS jitter on a boundary never flaps.
- `enter`/`exit` are stamped with the fix that confirmed the change; `details.first_fix_ms`
  is when the new state was first seen; `exit.dwell_s` is the whole stay (first inside fix to
  first outside fix).
- `dwell` fires once per stay, at the first fix inside at least the fence's `dwell_s` after
  the first inside fix of the stay (not after the `enter`, which debounce delays; not on a
  fix outside whose exit is still pending: the stay may be ending short).
- `crossing` fires when the great-circle segment between two consecutive fixes touches a
  fence that neither fix is in and that the vehicle was not confirmed inside at the earlier
  fix, e.g. a sparse reporter skipping a small fence.
- Every threshold is compared in whole milliseconds and is inclusive: a fix exactly
  `debounce_s` / `dwell_s` after, or exactly `crossing_max_gap_s` after the previous fix,
  counts.

The per-vehicle state is a small frozen value (a dict of tracks for fences the vehicle is in
or about to change, plus the last fix), picklable for Bytewax recovery: after a restart the
confirmed states come back, so there is no spurious `enter` and no lost `exit`.
docs/geofencing.md has the details.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from uuid import UUID

from geo.config import GeofenceSettings
from geo.fence import Fence
from geo.index import FenceIndex
from stream.detectors.base import fold
from stream.model import Event, GeofenceEvent, GeofenceEventType, Reading, snapshot_state


def _ms(seconds: float) -> int:
    """A threshold in whole milliseconds, the resolution of event time.

    Compared as a float, `seconds * 1000` lands a hair above or below the integer for many
    values (1.001 s is 1000.9999999999999 ms, 2.007 s is 2007.0000000000002 ms), and a fix
    exactly at the threshold would count or not depending on that rounding.
    """
    return round(seconds * 1000)


@snapshot_state
@dataclass(frozen=True, slots=True)
class FenceTrack:
    """What the detector knows about one vehicle and one fence it is in or changing for."""

    inside: bool
    """Confirmed state."""
    since_ms: int
    """First fix of the confirmed state (entry time when inside)."""
    pending_since_ms: int | None = None
    """First fix of the opposite, not yet confirmed, state; None when none is pending."""
    pending_fixes: int = 0
    """Consecutive fixes seen in the pending state."""
    dwell_fired: bool = False
    """The dwell event of this stay has been emitted."""


@snapshot_state
@dataclass(frozen=True, slots=True)
class GeofenceState:
    """Per-vehicle geofence state; fences absent from `tracks` are confirmed outside."""

    tracks: dict[UUID, FenceTrack] = field(default_factory=dict)
    last_fix: tuple[int, float, float] | None = None
    """(t_ms, lon_deg, lat_deg) of the previous fix, for crossings."""
    last_fences: frozenset[UUID] = frozenset()
    """Fences that covered the previous fix (raw, not debounced)."""


class GeofenceDetector:
    """The `Detector` for geofences; reads fences through `index_provider` (hot-reloadable)."""

    name = "geofence"
    ticks = False

    def __init__(self, index_provider: Callable[[], FenceIndex],
                 settings: GeofenceSettings | None = None) -> None:
        """`index_provider` returns the index in force now (e.g. `FenceWatcher.current`)."""
        self._index = index_provider
        self._settings = settings or GeofenceSettings()

    def initial_state(self) -> GeofenceState:
        """A vehicle never seen: outside every fence."""
        return GeofenceState()

    def on_tick(self, state: GeofenceState, now_ms: int) -> tuple[GeofenceState, Sequence[Event]]:
        """No processing-time rules: every geofence decision is made in event time."""
        return state, ()

    def on_reading(self, state: GeofenceState,
                   reading: Reading) -> tuple[GeofenceState, Sequence[Event]]:
        """Update the fence tracks with one fix and return the events it confirms."""
        lon, lat = reading.sample.lon_deg, reading.sample.lat_deg
        if lon is None or lat is None:
            return state, ()
        index = self._index()
        s = self._settings
        t = reading.t_ms
        observed = reading.fences
        events: list[Event] = []
        tracks = dict(state.tracks)
        for fid in observed | tracks.keys():
            fence = index.get(fid)
            track = tracks.get(fid)
            if fence is None:
                # The fence was deleted or deactivated: close an open stay rather than lose it.
                if track is not None and track.inside:
                    events.append(self._event(reading, fid, "exit",
                                              dwell_s=(t - track.since_ms) / 1000,
                                              details={"reason": "fence_removed"}))
                tracks.pop(fid, None)
                continue
            new = self._step(fence, track, fid in observed, reading, events)
            if new is None:
                tracks.pop(fid, None)
            else:
                tracks[fid] = new
        if s.crossing_events and state.last_fix is not None:
            events.extend(self._crossings(index, state, reading, (lon, lat)))
        return GeofenceState(tracks, (t, lon, lat), observed), events

    def on_readings(self, state: GeofenceState,
                    readings: Sequence[Reading]) -> tuple[GeofenceState, Sequence[Event]]:
        """A batch. A vehicle inside no fence and tracking none, of a tenant without fences
        (so nothing can be crossed), only moves its last fix; anything else goes reading by
        reading."""
        if state.tracks:
            return fold(self, state, readings)
        last_fix: tuple[int, float, float] | None = None
        for reading in readings:
            lon, lat = reading.sample.lon_deg, reading.sample.lat_deg
            if lon is None or lat is None:
                continue
            if reading.fences:
                return fold(self, state, readings)
            last_fix = (reading.t_ms, lon, lat)
        if last_fix is None:
            return state, ()
        if self._settings.crossing_events and \
                self._index().has_fences(readings[0].vehicle.tenant_id):
            return fold(self, state, readings)
        return GeofenceState({}, last_fix, frozenset()), ()

    def _step(self, fence: Fence, track: FenceTrack | None, now_in: bool, reading: Reading,
              events: list[Event]) -> FenceTrack | None:
        """One fence, one fix: the new track (None = confirmed outside, nothing pending)."""
        t = reading.t_ms
        if track is None:
            track = FenceTrack(inside=False, since_ms=t)
        if now_in == track.inside:
            new: FenceTrack | None = track if track.pending_since_ms is None else replace(
                track, pending_since_ms=None, pending_fixes=0)
        else:
            first = track.pending_since_ms if track.pending_since_ms is not None else t
            fixes = track.pending_fixes + 1
            debounce_s = (self._settings.debounce_s if fence.debounce_s is None
                          else fence.debounce_s)
            if fixes >= self._settings.min_fixes and t - first >= _ms(debounce_s):
                if now_in:
                    events.append(self._event(reading, fence.id, "enter", details={
                        "first_fix_ms": first, "alert": fence.alert_on_entry}))
                    new = FenceTrack(inside=True, since_ms=first)
                else:
                    events.append(self._event(
                        reading, fence.id, "exit", dwell_s=(first - track.since_ms) / 1000,
                        details={"first_fix_ms": first, "alert": fence.alert_on_exit}))
                    new = None
            else:
                new = replace(track, pending_since_ms=first, pending_fixes=fixes)
        # Only on a fix that is itself inside: a vehicle that left just before the threshold
        # (exit still pending) did not dwell; if it was jitter, the next inside fix fires it.
        if (now_in and new is not None and new.inside and not new.dwell_fired
                and fence.dwell_s is not None and t - new.since_ms >= _ms(fence.dwell_s)):
            events.append(self._event(reading, fence.id, "dwell", dwell_s=fence.dwell_s,
                                      details={"entered_ms": new.since_ms}))
            new = replace(new, dwell_fired=True)
        if new is not None and not new.inside and new.pending_since_ms is None:
            return None
        return new

    def _crossings(self, index: FenceIndex, state: GeofenceState, reading: Reading,
                   fix: tuple[float, float]) -> list[Event]:
        """Fences the segment from the previous fix to this one touches without either fix
        being in them, judged against `state` as it was at the previous fix (before this fix
        updated it): a segment that starts during a stay belongs to that stay, even when this
        fix confirms its exit. (A fence this fix confirms an entry to holds this fix, so it is
        left out anyway.)"""
        if state.last_fix is None:
            return []
        t0, lon0, lat0 = state.last_fix
        # Inclusive: a gap of exactly crossing_max_gap_s still counts.
        if reading.t_ms - t0 > _ms(self._settings.crossing_max_gap_s):
            return []
        lon, lat = fix
        crossed = index.crossed(reading.vehicle.tenant_id, lon0, lat0, lon, lat,
                                endpoint_fences=reading.fences | state.last_fences)
        out: list[Event] = []
        for fid in sorted(crossed):
            track = state.tracks.get(fid)
            if track is not None and track.inside:
                continue
            out.append(self._event(reading, fid, "crossing", details={
                "from_ms": t0, "from_lon_deg": lon0, "from_lat_deg": lat0}))
        return out

    @staticmethod
    def _event(reading: Reading, fence_id: UUID, kind: GeofenceEventType, *,
               dwell_s: float | None = None, details: dict[str, object] | None = None,
               ) -> GeofenceEvent:
        sample = reading.sample
        return GeofenceEvent(
            t_ms=reading.t_ms, tenant_id=reading.vehicle.tenant_id,
            vehicle_id=reading.vehicle.vehicle_id, geofence_id=fence_id, event_type=kind,
            lat_deg=sample.lat_deg, lon_deg=sample.lon_deg, speed_kph=sample.speed_kph,
            dwell_s=dwell_s, seq=sample.seq, details=dict(details or {}))
