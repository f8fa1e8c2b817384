"""The vehicle model that drives every simulator front-end (ELM327, CAN, NMEA, MQTT load).

`VehicleModel(seed)` drives legs handed out by a route source (a seeded synthetic city or
GeoJSON lines) with bounded acceleration and braking, stops at lights, stop signs and
deliveries, idles, parks with the ignition off, and keeps an engine model (gear and rpm from
speed, coolant warm-up, fuel burn, odometer, engine hours, battery charging). Everything random
comes from one `random.Random(seed)`, so a seed and a sequence of `step(dt_s)` calls always give
the same states.

Scripted faults (`Fault`) change the physics or the reported data for a window of simulated
time; what really happened is recorded in `model.ground_truth` so tests can check detectors.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from simulators.errors import FaultSpecError
from simulators.roads import RouteSource, SyntheticCity, Waypoint

# Vehicle constants: a 1.5 t car with a 2.0 l petrol engine and a 6-speed automatic.
MASS_KG: Final = 1500.0
DRAG_AREA_M2: Final = 0.7
ROLLING_RESISTANCE: Final = 0.012
MAX_POWER_W: Final = 110_000.0
DISPLACEMENT_L: Final = 2.0
IDLE_RPM: Final = 750.0
GEAR_RATIOS: Final = (4.1, 2.4, 1.6, 1.2, 1.0, 0.8)
FINAL_DRIVE: Final = 3.7
WHEEL_CIRCUMFERENCE_M: Final = 2.0
UPSHIFT_KPH: Final = (18.0, 32.0, 48.0, 62.0, 78.0)
SHIFT_HYSTERESIS_KPH: Final = 5.0
COMFORT_DECEL_MPS2: Final = 1.8
MAX_SERVICE_DECEL_MPS2: Final = 3.0
"""Normal driving never brakes harder than this; only the harsh_brake fault does."""
THERMOSTAT_C: Final = 90.0
FUEL_DENSITY_G_PER_L: Final = 745.0
STOICHIOMETRIC_AFR: Final = 14.7
GPS_NOISE_M: Final = 2.5
"""Standard deviation of the simulated GPS position error at HDOP 1."""
MAX_SUBSTEP_S: Final = 1.0


class FaultKind(enum.StrEnum):
    """What a scripted fault does (see docs/simulators.md for each one's parameters)."""

    OVERHEAT = "overheat"
    MISFIRE = "misfire"
    FUEL_THEFT = "fuel_theft"
    REFUEL = "refuel"
    HARSH_BRAKE = "harsh_brake"
    SPEEDING = "speeding"
    GPS_JUMP = "gps_jump"
    GPS_LOSS = "gps_loss"
    NMEA_CORRUPT = "nmea_corrupt"
    OFFLINE = "offline"
    PARK = "park"
    LOW_BATTERY = "low_battery"


DEFAULT_DURATION_S: Final[Mapping[FaultKind, float]] = {
    FaultKind.OVERHEAT: 300.0,
    FaultKind.MISFIRE: 120.0,
    FaultKind.FUEL_THEFT: 60.0,
    FaultKind.REFUEL: 120.0,
    FaultKind.HARSH_BRAKE: 1800.0,
    FaultKind.SPEEDING: 120.0,
    FaultKind.GPS_JUMP: 5.0,
    FaultKind.GPS_LOSS: 30.0,
    FaultKind.NMEA_CORRUPT: 10.0,
    FaultKind.OFFLINE: 120.0,
    FaultKind.PARK: 300.0,
    FaultKind.LOW_BATTERY: 600.0,
}
"""Used when a fault spec gives no duration. For harsh_brake it is how long the fault may
wait for the vehicle to exceed 30 km/h before it brakes."""

_DRIVING_FAULTS: Final = frozenset({FaultKind.HARSH_BRAKE, FaultKind.SPEEDING})
_MEASURED_FAULTS: Final = _DRIVING_FAULTS | {FaultKind.PARK}
"""Faults whose ground truth spans what really happened, not the scripted window."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted fault: `kind` from `start_s` (simulated seconds after the model's start)
    for `duration_s`, with kind-specific `params` (for example {"pct": 30} for fuel_theft)."""

    kind: FaultKind
    start_s: float
    duration_s: float
    params: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``KIND@START_S[+DURATION_S][:key=value,...]``, e.g. ``overheat@60+300``."""
        head, _, param_text = spec.partition(":")
        kind_text, at, when = head.partition("@")
        try:
            kind = FaultKind(kind_text.strip().lower())
        except ValueError as exc:
            kinds = ", ".join(k.value for k in FaultKind)
            raise FaultSpecError(f"fault {spec!r}: unknown kind (one of {kinds})") from exc
        if not at:
            raise FaultSpecError(f"fault {spec!r}: expected KIND@START_S+DURATION_S")
        start_text, plus, duration_text = when.partition("+")
        params: dict[str, float] = {}
        try:
            start_s = float(start_text)
            duration_s = float(duration_text) if plus else DEFAULT_DURATION_S[kind]
            for item in filter(None, param_text.split(",")):
                key, _, value = item.partition("=")
                params[key.strip()] = float(value)
        except ValueError as exc:
            raise FaultSpecError(f"fault {spec!r}: {exc}") from exc
        if start_s < 0 or duration_s <= 0:
            raise FaultSpecError(f"fault {spec!r}: start must be >= 0 and duration > 0")
        return cls(kind, start_s, duration_s, params)


class GroundTruth(NamedTuple):
    """What a fault really did: kind, start and end (Unix ms) and kind-specific details."""

    kind: str
    start_ms: int
    end_ms: int
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelState:
    """A snapshot of the vehicle at `t_ms`; front-ends read it, never change it."""

    t_ms: int
    lat_deg: float
    lon_deg: float
    alt_m: float
    speed_kph: float
    heading_deg: float
    ignition: bool
    rpm: float
    gear: int
    coolant_c: float
    fuel_pct: float
    odometer_km: float
    engine_hours_h: float
    battery_v: float
    throttle_pct: float
    engine_load_pct: float
    dtcs: list[str]
    """Stored (confirmed) DTCs, SAE J2012 codes such as "P0301" (OBD Mode 03)."""
    gps_fix: int
    """GGA fix quality: 0 none, 1 GPS."""
    hdop: float
    sats: int
    online: bool
    """False during an `offline` fault: every front-end falls silent."""
    pending_dtcs: list[str] = field(default_factory=list)
    """Pending DTCs (OBD Mode 07)."""
    speed_limit_kph: float = 0.0
    """Posted limit of the road the vehicle is on (ground truth for speeding)."""
    accel_mps2: float = 0.0
    intake_temp_c: float = 20.0
    ambient_c: float = 20.0
    oil_temp_c: float = 20.0
    maf_gps: float = 0.0
    fuel_rate_lph: float = 0.0
    map_kpa: float = 101.0
    baro_kpa: float = 101.0
    timing_advance_deg: float = 0.0
    run_time_s: float = 0.0
    """Seconds since the engine started (0 with the ignition off)."""
    distance_since_clear_km: float = 0.0
    distance_mil_km: float = 0.0
    """Distance driven with the malfunction indicator lamp on."""
    nmea_corrupt: bool = False
    """An `nmea_corrupt` fault is active: the NMEA front-end breaks checksums."""

    @property
    def mil(self) -> bool:
        """Malfunction indicator lamp: on while a DTC is stored."""
        return bool(self.dtcs)


@dataclass
class _ActiveFault:
    fault: Fault
    start_ms: int
    details: dict[str, Any]
    done: bool = False
    first_ms: int | None = None
    last_ms: int | None = None


class _Phase(enum.Enum):
    PARKED = "parked"
    WARMUP = "warmup"
    DRIVING = "driving"
    SHUTDOWN = "shutdown"


class VehicleModel:
    """One simulated vehicle; `step(dt_s)` advances simulated time, `state` is the snapshot.

    Thread-safe: front-ends read `state` (replaced atomically each step) and may call
    `clear_dtcs()` from their own threads while another thread steps the model.
    """

    def __init__(  # noqa: PLR0915 - the whole physical state starts in one place
            self, seed: int, route: RouteSource | None = None,
            faults: Sequence[Fault] = (), start_ms: int | None = None, *,
            tank_l: float = 60.0, parking_s: tuple[float, float] = (120.0, 600.0),
            park_between_trips: bool = True, warm_engine: bool = False,
            vin: str | None = None) -> None:
        """`seed` decides everything random; `route` defaults to a `SyntheticCity()`;
        `start_ms` (default: now) is the Unix time of simulated second 0; `parking_s` is the
        (min, max) parking time between trips; `warm_engine` starts at operating temperature."""
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not secrets
        rng = self._rng
        self.route: RouteSource = SyntheticCity() if route is None else route
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.vin = vin or make_vin(rng)
        self.tank_l = tank_l
        self.parking_s = parking_s
        self.park_between_trips = park_between_trips
        self._lock = threading.Lock()
        self._faults = sorted(faults, key=lambda f: f.start_s)
        self._next_fault = 0
        self._active: list[_ActiveFault] = []
        self._truth: list[GroundTruth] = []

        # driver and vehicle character
        self._speed_factor = rng.uniform(0.86, 0.99)
        self._accel_mps2 = rng.uniform(1.3, 2.2)
        self._ambient_c = rng.uniform(4.0, 28.0)
        self._base_alt_m = rng.uniform(20.0, 400.0)
        self._alt_key: tuple[float, float] | None = None
        self._alt_m = 0.0

        # physical state
        self._t_s = 0.0
        self._x, self._y = self.route.start(rng)
        self._v = 0.0
        self._a = 0.0
        self._heading = rng.uniform(0.0, 360.0)
        self._leg: list[Waypoint] = []
        self._seg_len: list[float] = []
        self._k = 0
        self._s = 0.0
        self._served = -1
        self._wait_s = 0.0
        self._legs_driven = 0
        self._phase = _Phase.WARMUP
        self._phase_s = rng.uniform(10.0, 40.0)
        self._ignition = True
        self._run_s = 0.0
        self._gear = 0
        self._rpm = IDLE_RPM
        self._throttle = 12.0
        self._load = 20.0
        self._map_kpa = 30.0
        self._maf = 3.0
        self._fuel_rate = 1.0
        self._coolant = THERMOSTAT_C if warm_engine else self._ambient_c
        self._oil = self._coolant
        self._fuel_l = tank_l * rng.uniform(0.35, 0.9)
        self._odometer_km = rng.uniform(5_000.0, 180_000.0)
        self._engine_h = self._odometer_km / rng.uniform(30.0, 45.0)
        self._battery = 13.9
        self._dtcs: list[str] = []
        self._pending: list[str] = []
        self._since_clear_km = rng.uniform(0.0, 3000.0)
        self._mil_km = 0.0
        self._noise_x = 0.0
        self._noise_y = 0.0
        self._hdop = rng.uniform(0.7, 1.3)
        self._sats = rng.randint(7, 12)
        self._harsh_braking = False
        self._speeding = False
        self._pull_over = False
        self._h = MAX_SUBSTEP_S
        self._new_leg()
        self._state = self._snapshot()

    # ---- public ----------------------------------------------------------------------------

    @property
    def state(self) -> ModelState:
        """The latest snapshot (immutable)."""
        return self._state

    @property
    def t_s(self) -> float:
        """Simulated seconds since the start."""
        return self._t_s

    @property
    def ground_truth(self) -> list[GroundTruth]:
        """Finished faults, then active ones (their end is the planned or current end)."""
        with self._lock:
            now_ms = self._now_ms()
            active = [self._truth_of(af, now_ms) for af in self._active if not af.done]
            return [*self._truth, *active]

    def fault_active(self, kind: FaultKind) -> bool:
        """Whether a fault of this kind is active now."""
        return any(af.fault.kind is kind and not af.done for af in self._active)

    def clear_dtcs(self) -> None:
        """OBD Mode 04: clear stored and pending DTCs (active faults set theirs again)."""
        with self._lock:
            self._dtcs.clear()
            self._pending.clear()
            self._since_clear_km = 0.0
            self._mil_km = 0.0
            self._state = self._snapshot()

    def step(self, dt_s: float) -> ModelState:
        """Advance simulated time by `dt_s` seconds (in sub-steps of at most 1 s)."""
        if dt_s < 0:
            raise ValueError("dt_s must not be negative")
        with self._lock:
            remaining = dt_s
            while remaining > 1e-9:
                h = min(remaining, MAX_SUBSTEP_S)
                self._advance(h)
                remaining -= h
            self._state = self._snapshot()
            return self._state

    # ---- simulation ------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.start_ms + round(self._t_s * 1000.0)

    def _advance(self, h: float) -> None:
        self._h = h
        self._t_s += h
        self._update_faults()
        if self._phase is _Phase.PARKED:
            self._phase_s -= h
            if self._phase_s <= 0:
                self._start_engine()
        elif self._phase is _Phase.WARMUP:
            self._phase_s -= h
            if self._phase_s <= 0:
                self._phase = _Phase.DRIVING
        elif self._phase is _Phase.SHUTDOWN:
            self._phase_s -= h
            if self._phase_s <= 0:
                self._park()
        if self._phase is _Phase.DRIVING:
            self._drive(h)
        else:
            self._a = (0.0 - self._v) / h
            self._v = 0.0
        self._engine(h)
        self._gps(h)

    def _new_leg(self) -> None:
        leg = self.route.next_leg(self._rng, self._x, self._y, self._legs_driven)
        self._legs_driven += 1
        self._leg = leg
        self._seg_len = [math.dist((a.x_m, a.y_m), (b.x_m, b.y_m))
                         for a, b in itertools.pairwise(leg)]
        self._k = 0
        self._s = 0.0
        self._served = 0
        self._x, self._y = leg[0].x_m, leg[0].y_m

    def _cruise_mps(self, limit_kph: float) -> float:
        if self._speeding:
            return max(limit_kph * 1.35, limit_kph + 18.0) / 3.6
        return limit_kph * self._speed_factor / 3.6

    def _allowed_speed(self, v0: float, h: float) -> float:
        """Highest speed at the end of this step that still lets the vehicle meet every
        constraint ahead (stop lines, corners, lower limits) with comfortable braking."""
        leg, k = self._leg, self._k
        allowed = self._cruise_mps(leg[k].limit_kph)
        dist = self._seg_len[k] - self._s if k < len(self._seg_len) else 0.0
        b = COMFORT_DECEL_MPS2
        j = k + 1
        while j < len(leg) and dist < 400.0:
            wp = leg[j]
            target = wp.pass_kph / 3.6
            if wp.stop_s > 0 and j != self._served:
                target = 0.0
            if j < len(leg) - 1:
                target = min(target, self._cruise_mps(wp.limit_kph))
            # v1 must satisfy v1^2 = target^2 + 2 b (dist - (v0 + v1) h / 2): the distance
            # covered during this step already counts against the braking distance.
            c = target * target + 2.0 * b * dist - b * h * v0
            v1 = 0.0 if c <= 0 else (-b * h + math.sqrt(b * b * h * h + 4.0 * c)) / 2.0
            allowed = min(allowed, v1)
            if j < len(self._seg_len):
                dist += self._seg_len[j]
            j += 1
        return allowed

    def _drive(self, h: float) -> None:
        if self._wait_s > 0:
            self._wait_s -= h
            self._a = -self._v / h
            self._v = 0.0
            return
        v0 = self._v
        if self._harsh_braking:
            v1 = max(0.0, v0 - self._harsh_decel() * h)
        elif self._pull_over:
            v1 = max(0.0, v0 - COMFORT_DECEL_MPS2 * h)
        else:
            target = self._allowed_speed(v0, h)
            accel = self._accel_mps2 * max(0.35, 1.0 - v0 / 40.0)
            if self._speeding:
                accel *= 1.3
            v1 = min(v0 + accel * h, target) if target >= v0 else max(
                v0 - MAX_SERVICE_DECEL_MPS2 * h, target)
        dist = (v0 + v1) / 2.0 * h
        self._v = v1
        self._a = (v1 - v0) / h
        self._odometer_km += dist / 1000.0
        self._since_clear_km += dist / 1000.0
        if self._dtcs:
            self._mil_km += dist / 1000.0
        self._move(dist)
        self._a = (self._v - v0) / h  # a stop at a line ends the step at rest

    def _move(self, dist: float) -> None:
        leg = self._leg
        self._s += dist
        while self._k < len(self._seg_len) and self._s >= self._seg_len[self._k]:
            self._s -= self._seg_len[self._k]
            self._k += 1
            wp = leg[self._k]
            if self._k == len(leg) - 1:
                self._end_of_leg()
                return
            if wp.stop_s > 0 and self._served != self._k:
                # stop exactly at the line; the leftover distance is lost to braking
                self._served = self._k
                self._s = 0.0
                self._wait_s = wp.stop_s
                self._v = 0.0
                break
        self._place()

    def _place(self) -> None:
        a = self._leg[self._k]
        if self._k >= len(self._seg_len):
            self._x, self._y = a.x_m, a.y_m
            return
        b = self._leg[self._k + 1]
        f = self._s / self._seg_len[self._k] if self._seg_len[self._k] > 0 else 0.0
        self._x = a.x_m + (b.x_m - a.x_m) * f
        self._y = a.y_m + (b.y_m - a.y_m) * f
        if self._seg_len[self._k] > 0:
            self._heading = math.degrees(math.atan2(b.x_m - a.x_m, b.y_m - a.y_m)) % 360.0

    def _end_of_leg(self) -> None:
        end = self._leg[-1]
        self._x, self._y = end.x_m, end.y_m
        self._v = 0.0
        pending_driving = any(f.kind in _DRIVING_FAULTS for f in self._faults[self._next_fault:]
                              if f.start_s - self._t_s < 600.0)
        active_driving = any(af.fault.kind in _DRIVING_FAULTS and not af.done
                             for af in self._active)
        self._new_leg()
        if self.park_between_trips and not (pending_driving or active_driving):
            self._phase = _Phase.SHUTDOWN
            self._phase_s = self._rng.uniform(5.0, 25.0)
        else:
            self._wait_s = self._rng.uniform(3.0, 15.0)

    def _park(self) -> None:
        self._phase = _Phase.PARKED
        self._phase_s = self._rng.uniform(*self.parking_s)
        self._ignition = False
        if self._fuel_l / self.tank_l < 0.08 and not self.fault_active(FaultKind.REFUEL):
            self._active.append(_ActiveFault(
                Fault(FaultKind.REFUEL, self._t_s, 120.0, {"auto": 1.0}), self._now_ms(),
                {"from_pct": round(self._fuel_pct(), 1), "to_pct": 95.0, "auto": True}))

    def _start_engine(self) -> None:
        self._phase = _Phase.WARMUP
        self._phase_s = self._rng.uniform(10.0, 60.0)
        self._ignition = True
        self._run_s = 0.0
        self._battery = 10.8  # cranking dip, recovers once the alternator charges

    def _harsh_decel(self) -> float:
        for af in self._active:
            if af.fault.kind is FaultKind.HARSH_BRAKE:
                return float(af.fault.params.get("decel_mps2", 6.0))
        return 6.0

    # ---- engine ----------------------------------------------------------------------------

    def _engine(self, h: float) -> None:
        rng = self._rng
        on = self._ignition
        v_kph = self._v * 3.6
        if on:
            self._run_s += h
            self._engine_h += h / 3600.0
            self._shift(v_kph)
            if self._gear == 0:
                rpm = IDLE_RPM + (200.0 if self._coolant < 40.0 else 0.0)
            else:
                wheel_rps = self._v / WHEEL_CIRCUMFERENCE_M
                rpm = max(IDLE_RPM + 50.0,
                          wheel_rps * FINAL_DRIVE * GEAR_RATIOS[self._gear - 1] * 60.0)
            jitter = 80.0 if self.fault_active(FaultKind.MISFIRE) else 12.0
            self._rpm = max(0.0, rpm + rng.gauss(0.0, jitter))
            force = (MASS_KG * self._a + ROLLING_RESISTANCE * MASS_KG * 9.81
                     + 0.5 * 1.2 * DRAG_AREA_M2 * self._v * self._v)
            available = MAX_POWER_W * min(1.0, self._rpm / 4500.0)
            demand = max(0.0, min(100.0, 100.0 * force * self._v / available))
            self._throttle = 12.0 + 0.85 * demand + rng.uniform(-0.3, 0.3)
            self._load = max(0.0, min(100.0, 18.0 + 0.8 * demand + rng.uniform(-0.5, 0.5)))
            baro = self._baro_kpa()
            self._map_kpa = min(baro, 28.0 + 0.72 * self._load)
            self._maf = (self._rpm / 60.0 * DISPLACEMENT_L / 2.0 * 1.18 * 0.85
                         * self._map_kpa / baro)
            self._fuel_rate = (self._maf / STOICHIOMETRIC_AFR / FUEL_DENSITY_G_PER_L * 3600.0)
            self._fuel_l = max(0.0, self._fuel_l - self._fuel_rate * h / 3600.0)
            battery_target, battery_tau = 14.2 - 0.3 * self._load / 100.0, 3.0
            coolant_target = THERMOSTAT_C + rng.uniform(-0.4, 0.4)
            tau = 420.0 / (1.0 + self._load / 40.0)
        else:
            self._gear = 0
            self._rpm = 0.0
            self._throttle = 0.0
            self._load = 0.0
            self._maf = 0.0
            self._fuel_rate = 0.0
            self._map_kpa = self._baro_kpa()
            battery_target, battery_tau = 12.55, 600.0
            coolant_target = self._ambient_c
            tau = 2400.0
        coolant_target, tau = self._fault_physics(h, coolant_target, tau)
        low = self._low_battery_v()
        if low is not None:  # a failing battery or alternator: charging no longer helps
            battery_target, battery_tau = low, 30.0
        self._battery += (battery_target - self._battery) * min(1.0, h / battery_tau)
        self._coolant += (coolant_target - self._coolant) * min(1.0, h / tau)
        oil_target = self._coolant + (8.0 * self._load / 100.0 if on else 0.0)
        self._oil += (oil_target - self._oil) * min(1.0, h / 600.0)
        self._battery += rng.gauss(0.0, 0.01)

    def _fault_physics(self, h: float, coolant_target: float,
                       tau: float) -> tuple[float, float]:
        """Faults that act on the engine and tank; returns the coolant target and its time
        constant."""
        for af in self._active:
            if af.done:
                continue
            kind, params = af.fault.kind, af.fault.params
            if kind is FaultKind.OVERHEAT:
                coolant_target, tau = float(params.get("peak_c", 122.0)), 120.0
            elif kind is FaultKind.FUEL_THEFT:
                litres = self.tank_l * float(params.get("pct", 25.0)) / 100.0
                self._fuel_l = max(0.0, self._fuel_l - litres * h / af.fault.duration_s)
            elif kind is FaultKind.REFUEL:
                target = self.tank_l * float(params.get("to_pct", 95.0)) / 100.0
                step = self.tank_l * 0.8 * h / af.fault.duration_s
                self._fuel_l = min(target, self._fuel_l + step)
        return coolant_target, tau

    def _low_battery_v(self) -> float | None:
        for af in self._active:
            if af.fault.kind is FaultKind.LOW_BATTERY and not af.done:
                return float(af.fault.params.get("v", 11.6))
        return None

    def _shift(self, v_kph: float) -> None:
        if v_kph < 1.0:
            self._gear = 0 if self._v == 0.0 else 1
            return
        gear = max(1, self._gear)
        while gear < len(GEAR_RATIOS) and v_kph > UPSHIFT_KPH[gear - 1]:
            gear += 1
        while gear > 1 and v_kph < UPSHIFT_KPH[gear - 2] - SHIFT_HYSTERESIS_KPH:
            gear -= 1
        self._gear = gear

    def _baro_kpa(self) -> float:
        return 101.325 * math.exp(-self._altitude() / 8434.0)

    def _altitude(self) -> float:
        # cached per position: the engine, the snapshot and the barometer all ask
        key = (self._x, self._y)
        if key != self._alt_key:
            self._alt_key = key
            self._alt_m = (self._base_alt_m + 15.0 * math.sin(self._x / 800.0)
                           + 10.0 * math.cos(self._y / 600.0))
        return self._alt_m

    def _fuel_pct(self) -> float:
        return 100.0 * self._fuel_l / self.tank_l

    # ---- GPS -------------------------------------------------------------------------------

    def _gps(self, h: float) -> None:
        rng = self._rng
        keep = math.exp(-h / 20.0)  # GPS error is correlated over tens of seconds
        spread = GPS_NOISE_M * self._hdop * math.sqrt(1.0 - keep * keep)
        self._noise_x = self._noise_x * keep + rng.gauss(0.0, spread)
        self._noise_y = self._noise_y * keep + rng.gauss(0.0, spread)
        self._hdop = max(0.6, min(2.5, self._hdop + rng.gauss(0.0, 0.02)))
        if rng.random() < 0.02 * h:
            self._sats = max(5, min(14, self._sats + rng.choice((-1, 1))))

    # ---- faults ----------------------------------------------------------------------------

    def _update_faults(self) -> None:
        now_ms = self._now_ms()
        while (self._next_fault < len(self._faults)
               and self._faults[self._next_fault].start_s <= self._t_s):
            fault = self._faults[self._next_fault]
            self._next_fault += 1
            self._active.append(_ActiveFault(fault, now_ms, self._fault_details(fault)))
        for af in self._active:
            if af.done:
                continue
            self._fault_tick(af, now_ms)
            end_s = af.fault.start_s + af.fault.duration_s
            if self._t_s >= end_s and not self._harsh_braking_of(af):
                self._finish(af, now_ms)
        self._active = [af for af in self._active if not af.done]

    def _harsh_braking_of(self, af: _ActiveFault) -> bool:
        return af.fault.kind is FaultKind.HARSH_BRAKE and self._harsh_braking

    def _fault_details(  # noqa: PLR0911 - one return per fault kind
            self, fault: Fault) -> dict[str, Any]:
        p = fault.params
        kind = fault.kind
        if kind is FaultKind.MISFIRE:
            return {"dtc": f"P030{int(p.get('cylinder', 1)) % 10}"}
        if kind is FaultKind.OVERHEAT:
            return {"peak_c": float(p.get("peak_c", 122.0)), "dtc": "P0217"}
        if kind is FaultKind.FUEL_THEFT:
            return {"from_pct": round(self._fuel_pct(), 1), "drop_pct": float(p.get("pct", 25.0))}
        if kind is FaultKind.REFUEL:
            return {"from_pct": round(self._fuel_pct(), 1), "to_pct": float(p.get("to_pct", 95.0))}
        if kind is FaultKind.GPS_JUMP:
            bearing = self._rng.uniform(0.0, 360.0)
            return {"distance_m": float(p.get("distance_m", 3000.0)), "bearing_deg": bearing}
        if kind is FaultKind.HARSH_BRAKE:
            return {"decel_mps2": float(p.get("decel_mps2", 6.0)), "executed": False}
        if kind is FaultKind.PARK:
            return {"parked": False}
        if kind is FaultKind.LOW_BATTERY:
            return {"v": float(p.get("v", 11.6))}
        if kind is FaultKind.SPEEDING:
            return {"executed": False}
        return {}

    def _fault_tick(self, af: _ActiveFault, now_ms: int) -> None:
        kind = af.fault.kind
        d = af.details
        if kind is FaultKind.MISFIRE:
            code = d["dtc"]
            for codes in (self._dtcs, self._pending):
                if code not in codes:
                    codes.append(code)
        elif kind is FaultKind.OVERHEAT and self._coolant >= 112.0 and "P0217" not in self._dtcs:
            self._dtcs.append("P0217")
        elif kind is FaultKind.HARSH_BRAKE:
            if not d["executed"] and not self._harsh_braking and self._v * 3.6 > 30.0:
                self._harsh_braking = True
                af.first_ms = now_ms
                d["from_kph"] = round(self._v * 3.6, 1)
            elif self._harsh_braking and self._v * 3.6 < 5.0:
                self._harsh_braking = False
                af.last_ms = now_ms
                d["to_kph"] = round(self._v * 3.6, 1)
                d["executed"] = True
                self._finish(af, now_ms)
        elif kind is FaultKind.PARK and not d["parked"]:
            self._pull_over = self._phase is _Phase.DRIVING and self._v > 0
            if not self._pull_over:
                # standing still: switch off here until the window ends
                # + this sub-step, which the parked phase is about to count down
                remaining = af.fault.start_s + af.fault.duration_s - self._t_s + self._h
                parked_already = self._phase is _Phase.PARKED
                self._wait_s = 0.0
                self._phase = _Phase.PARKED
                self._phase_s = max(self._phase_s, remaining) if parked_already else remaining
                self._ignition = False
                af.first_ms = now_ms
                d["parked"] = True
        elif kind is FaultKind.SPEEDING:
            self._speeding = True
            limit = self._leg[self._k].limit_kph
            if self._v * 3.6 > limit * 1.1:
                af.first_ms = af.first_ms or now_ms
                af.last_ms = now_ms
                d["executed"] = True
                d["limit_kph"] = limit
                d["max_kph"] = round(max(d.get("max_kph", 0.0), self._v * 3.6), 1)

    def _finish(self, af: _ActiveFault, now_ms: int) -> None:
        if af.done:
            return
        af.done = True
        kind = af.fault.kind
        if kind is FaultKind.SPEEDING:
            self._speeding = False
        if kind is FaultKind.MISFIRE and af.details["dtc"] in self._pending:
            self._pending.remove(af.details["dtc"])
        if kind is FaultKind.OVERHEAT:
            af.details["max_c"] = round(self._coolant, 1)
        if kind in (FaultKind.FUEL_THEFT, FaultKind.REFUEL):
            af.details["to_pct"] = round(self._fuel_pct(), 1)
        self._truth.append(self._truth_of(af, now_ms))

    def _truth_of(self, af: _ActiveFault, now_ms: int) -> GroundTruth:
        if af.fault.kind in _MEASURED_FAULTS and af.first_ms is not None:
            start, end = af.first_ms, af.last_ms or now_ms
        else:
            planned_end = self.start_ms + round(
                (af.fault.start_s + af.fault.duration_s) * 1000.0)
            start, end = af.start_ms, min(planned_end, now_ms) if af.done else planned_end
        return GroundTruth(af.fault.kind.value, start, end, dict(af.details))

    # ---- snapshot --------------------------------------------------------------------------

    def _snapshot(self) -> ModelState:
        rng_free_x, rng_free_y = self._x + self._noise_x, self._y + self._noise_y
        gps_fix, hdop, sats = 1, self._hdop, self._sats
        online, nmea_corrupt = True, False
        for af in self._active:
            if af.done:
                continue
            kind = af.fault.kind
            if kind is FaultKind.GPS_JUMP:
                dist = af.details["distance_m"]
                bearing = math.radians(af.details["bearing_deg"])
                rng_free_x += dist * math.sin(bearing)
                rng_free_y += dist * math.cos(bearing)
            elif kind is FaultKind.GPS_LOSS:
                gps_fix, hdop, sats = 0, 99.9, min(self._sats, 2)
            elif kind is FaultKind.OFFLINE:
                online = False
            elif kind is FaultKind.NMEA_CORRUPT:
                nmea_corrupt = True
        lat, lon = self.route.projection.to_latlon(rng_free_x, rng_free_y)
        on = self._ignition
        speed_kph = self._v * 3.6
        return ModelState(
            t_ms=self._now_ms(),
            lat_deg=lat, lon_deg=lon, alt_m=self._altitude(),
            speed_kph=speed_kph, heading_deg=self._heading % 360.0,
            ignition=on, rpm=self._rpm, gear=self._gear,
            coolant_c=self._coolant, fuel_pct=self._fuel_pct(),
            odometer_km=self._odometer_km, engine_hours_h=self._engine_h,
            battery_v=self._battery, throttle_pct=self._throttle,
            engine_load_pct=self._load, dtcs=list(self._dtcs),
            gps_fix=gps_fix, hdop=hdop, sats=sats, online=online,
            pending_dtcs=list(self._pending),
            speed_limit_kph=self._leg[self._k].limit_kph if self._leg else 0.0,
            accel_mps2=self._a,
            intake_temp_c=self._ambient_c + (22.0 - min(speed_kph, 80.0) / 4.0 if on else 0.0),
            ambient_c=self._ambient_c,
            oil_temp_c=self._oil,
            maf_gps=self._maf, fuel_rate_lph=self._fuel_rate,
            map_kpa=self._map_kpa, baro_kpa=self._baro_kpa(),
            timing_advance_deg=(8.0 + self._rpm / 250.0 - self._load / 10.0) if on else 0.0,
            run_time_s=self._run_s if on else 0.0,
            distance_since_clear_km=self._since_clear_km,
            distance_mil_km=self._mil_km,
            nmea_corrupt=nmea_corrupt,
        )


_VIN_CHARS: Final = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VIN_VALUES: Final = {**{str(d): d for d in range(10)},
                      **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
                      **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
                      **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def make_vin(rng: random.Random) -> str:
    """A 17-character VIN with a valid North American check digit (position 9).

    The first and last characters are never 0, 1 or 2: python-obd 0.7.3 strips those bytes
    from both ends of the VIN it decodes, and the simulated VIN must survive unmodified clients.
    """
    chars = [rng.choice(_VIN_CHARS) for _ in range(17)]
    chars[0] = rng.choice("345JKLSVWYZ")
    chars[16] = rng.choice("3456789")
    chars[9] = rng.choice("LMNPRSTVWXY123456789")  # model year code
    total = sum(_VIN_VALUES[c] * w for c, w in zip(chars, _VIN_WEIGHTS, strict=True))
    check = total % 11
    chars[8] = "X" if check == 10 else str(check)
    return "".join(chars)
