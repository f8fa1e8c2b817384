"""Settings of the event detectors: every threshold typed, with its unit in its name and a default.

The defaults suit a light-duty fleet sampled at about 1 Hz. The stream process embeds this
struct in its root settings (section `detectors`), so every key can be set in TOML or as
``FLEET_DETECTORS_<KEY>``. docs/detectors.md explains each rule.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class DetectorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of every detector in `stream.detectors` (units in the names)."""

    # -- overspeed ---------------------------------------------------------------------------
    overspeed_limit_kph: NonNegative = 120.0
    """Global speed limit, km/h; a geofence's `speed_limit_kph` overrides it inside the fence.
    0 disables the global limit (only geofence limits apply)."""
    overspeed_min_duration_s: NonNegative = 10.0
    """An episode must last at least this long to be reported (GPS spikes are shorter)."""
    overspeed_hysteresis_kph: NonNegative = 3.0
    """An episode ends only when speed falls to the limit minus this, so it does not flap."""
    overspeed_max_gap_s: Positive = 60.0
    """A gap between readings longer than this ends an episode at the last reading before it."""
    overspeed_merge_s: NonNegative = 30.0
    """Stretches above the limit separated by less than this (a slowdown for a corner) are
    one episode; the event is therefore emitted this long after the episode ends."""

    # -- harsh acceleration and braking --------------------------------------------------------
    harsh_accel_mps2: Positive = 3.5
    """Acceleration, m/s^2, from speed deltas, above which a harsh acceleration counts."""
    harsh_brake_mps2: Positive = 4.5
    """Deceleration magnitude, m/s^2, above which a harsh braking counts."""
    harsh_min_dt_s: Positive = 0.9
    """Speed deltas are taken over at least this time, so 10 Hz speed noise is not amplified."""
    harsh_max_dt_s: Positive = 3.0
    """Speed deltas over longer gaps are ignored: the speed curve between them is unknown."""

    # -- idling --------------------------------------------------------------------------------
    idle_speed_kph: NonNegative = 3.0
    """At or below this speed, with the engine on, the vehicle idles."""
    idle_min_s: Positive = 300.0
    """An idling episode is reported when it lasts at least this long."""
    idle_max_gap_s: Positive = 120.0
    """A gap between readings longer than this ends an idling episode."""

    # -- ignition / engine state -----------------------------------------------------------------
    engine_on_rpm: Positive = 300.0
    """Without an `ignition` signal, engine speed at or above this (rev/min) means engine on."""

    # -- low battery -----------------------------------------------------------------------------
    low_battery_v: Positive = 11.8
    """Battery voltage, V, below which the battery counts as low (cranking dips are brief)."""
    low_battery_min_s: NonNegative = 60.0
    """The voltage must stay low this long before an event fires."""
    low_battery_recover_v: NonNegative = 0.4
    """Hysteresis, V: a new episode may start only after the voltage rose above threshold + this."""

    # -- coolant overheat --------------------------------------------------------------------------
    coolant_overheat_c: float = 110.0
    """Coolant temperature, degC, at or above which the engine overheats."""
    coolant_overheat_min_s: NonNegative = 20.0
    """The temperature must stay at or above the threshold this long before an event fires."""
    coolant_recover_c: NonNegative = 5.0
    """Hysteresis, degC: a new episode may start only after cooling below threshold - this."""

    sustain_max_gap_s: Positive = 120.0
    """For sustained conditions (battery, coolant): a longer gap restarts the duration count."""

    # -- fuel drop / refuel ------------------------------------------------------------------------
    fuel_drop_pct: Positive = 8.0
    """A fall of the smoothed fuel level by this much (% of tank) within the window is a drop."""
    refuel_pct: Positive = 10.0
    """A rise of the smoothed fuel level by this much (% of tank) within the window is a refuel."""
    fuel_drop_window_s: Positive = 300.0
    """Smoothed levels are compared across this window (also across a data gap)."""
    fuel_smoothing_s: Positive = 30.0
    """Fuel samples are smoothed by the median of each bucket of this length (sloshing, noise)."""
    fuel_settle_pct: Positive = 1.0
    """A drop or refuel episode ends when the smoothed level changed by less than this between
    two buckets; the event then reports the whole change."""

    # -- device offline ----------------------------------------------------------------------------
    offline_after_s: Positive = 300.0
    """No data for this long, in processing time, makes the device offline."""
    offline_stream_gap_s: Positive = 30.0
    """When processing-time ticks stop for longer than this, the stream itself was down: the
    silence is not the device's fault, so offline time-outs restart from the next tick."""
