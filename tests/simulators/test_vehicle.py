"""The vehicle model: determinism, plausible physics, and every fault visible in the data."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from simulators.errors import FaultSpecError, RouteError
from simulators.roads import GeoJsonRoutes, SyntheticCity
from simulators.vehicle import (
    MAX_SERVICE_DECEL_MPS2,
    Fault,
    FaultKind,
    GroundTruth,
    ModelState,
    VehicleModel,
    make_vin,
)
from tests.simulators.conftest import START_MS


def run(model: VehicleModel, seconds: int, dt_s: float = 1.0) -> list[ModelState]:
    return [model.step(dt_s) for _ in range(int(seconds / dt_s))]


def truth(model: VehicleModel, kind: FaultKind) -> GroundTruth:
    found = [g for g in model.ground_truth if g.kind == kind.value]
    assert len(found) == 1, model.ground_truth
    return found[0]


def within(states: list[ModelState], g: GroundTruth) -> list[ModelState]:
    return [s for s in states if g.start_ms <= s.t_ms <= g.end_ms]


def test_same_seed_same_states_and_different_seed_differs() -> None:
    a = run(VehicleModel(42, start_ms=START_MS), 900)
    b = run(VehicleModel(42, start_ms=START_MS), 900)
    c = run(VehicleModel(43, start_ms=START_MS), 900)
    assert a == b
    assert [s.lat_deg for s in a] != [s.lat_deg for s in c]
    assert a[0].t_ms == START_MS + 1000
    assert a[-1].t_ms == START_MS + 900_000


def test_step_size_is_subdivided() -> None:
    model = VehicleModel(5, start_ms=START_MS)
    model.step(30.0)
    assert model.state.t_ms == START_MS + 30_000
    with pytest.raises(ValueError, match="negative"):
        model.step(-1.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_driving_physics_is_plausible(seed: int) -> None:
    model = VehicleModel(seed, start_ms=START_MS, parking_s=(60.0, 120.0))
    states = run(model, 3600)
    moving = [s for s in states if s.speed_kph > 1]
    assert len(moving) > 600, "the vehicle mostly drives"
    assert any(not s.ignition for s in states), "it parks between trips"
    assert any(s.ignition and s.speed_kph == 0 for s in states), "it idles"
    for prev, cur in itertools.pairwise(states):
        accel = (cur.speed_kph - prev.speed_kph) / 3.6
        assert accel <= 2.5
        assert -accel <= MAX_SERVICE_DECEL_MPS2 + 1e-9
        assert cur.odometer_km >= prev.odometer_km
        assert cur.engine_hours_h >= prev.engine_hours_h
        if not cur.ignition:
            assert cur.rpm == 0
            assert cur.speed_kph == 0
            assert cur.engine_hours_h == prev.engine_hours_h
    for s in states:
        assert s.speed_kph <= s.speed_limit_kph + 0.5
        assert 0 <= s.heading_deg < 360
        assert 0 <= s.fuel_pct <= 100
        if s.ignition:
            assert 700 <= s.rpm <= 4500
            assert (s.gear == 0) == (s.speed_kph == 0)
    # odometer agrees with integrated speed (trapezoids at 1 s)
    driven_km = sum((a.speed_kph + b.speed_kph) / 2 / 3600 for a, b in itertools.pairwise(states))
    assert states[-1].odometer_km - states[0].odometer_km == pytest.approx(driven_km, rel=0.02)


def test_engine_warms_up_charges_and_burns_fuel() -> None:
    model = VehicleModel(9, start_ms=START_MS, park_between_trips=False)
    cold = model.state.coolant_c
    states = run(model, 1500)
    assert cold < 35
    assert 85 <= states[-1].coolant_c <= 95
    running = [s for s in states[60:] if s.ignition]
    assert all(13.6 <= s.battery_v <= 14.6 for s in running)
    assert states[-1].fuel_pct < states[0].fuel_pct
    assert states[-1].engine_hours_h - states[0].engine_hours_h == pytest.approx(
        1499 / 3600, rel=0.01)


def test_battery_rests_when_parked() -> None:
    model = VehicleModel(11, start_ms=START_MS, parking_s=(3000.0, 3000.0))
    states = run(model, 3600)
    parked = [s for s in states if not s.ignition]
    assert parked
    assert parked[-1].battery_v < 13.0


def test_overheat_misfire_fuel_theft_and_refuel() -> None:
    model = VehicleModel(4, start_ms=START_MS, warm_engine=True, park_between_trips=False,
                         faults=[Fault.parse("overheat@60+300"), Fault.parse("misfire@30+60"),
                                 Fault.parse("fuel_theft@400+60:pct=30"),
                                 Fault.parse("refuel@600+120")])
    states = run(model, 800)
    g = truth(model, FaultKind.OVERHEAT)
    assert max(s.coolant_c for s in within(states, g)) > 110
    assert "P0217" in states[-1].dtcs
    g = truth(model, FaultKind.MISFIRE)
    assert g.details["dtc"] == "P0301"
    assert all("P0301" in s.pending_dtcs for s in within(states, g)[1:-1])
    assert "P0301" in states[-1].dtcs
    assert "P0301" not in states[-1].pending_dtcs
    g = truth(model, FaultKind.FUEL_THEFT)
    window = within(states, g)
    assert window[0].fuel_pct - window[-1].fuel_pct == pytest.approx(30, abs=2)
    g = truth(model, FaultKind.REFUEL)
    assert within(states, g)[-1].fuel_pct == pytest.approx(95, abs=1)
    model.clear_dtcs()
    assert model.state.dtcs == []
    assert model.state.distance_since_clear_km == 0


def test_harsh_brake_and_speeding_happen_while_driving() -> None:
    model = VehicleModel(6, start_ms=START_MS,
                         faults=[Fault.parse("harsh_brake@20"), Fault.parse("speeding@200+200")])
    states = run(model, 900)
    g = truth(model, FaultKind.HARSH_BRAKE)
    assert g.details["executed"] is True
    assert g.details["from_kph"] > 30
    window = [s for s in states if g.start_ms <= s.t_ms <= g.end_ms + 1000]
    decels = [(a.speed_kph - b.speed_kph) / 3.6 for a, b in itertools.pairwise(window)]
    assert max(decels) >= 5.0
    g = truth(model, FaultKind.SPEEDING)
    assert g.details["executed"] is True
    over = [s for s in within(states, g) if s.speed_kph > s.speed_limit_kph * 1.1]
    assert over
    assert max(s.speed_kph for s in over) == pytest.approx(g.details["max_kph"], abs=0.1)


def test_gps_jump_loss_offline_and_nmea_corrupt() -> None:
    model = VehicleModel(8, start_ms=START_MS,
                         faults=[Fault.parse("gps_jump@50+5:distance_m=5000"),
                                 Fault.parse("gps_loss@100+20"), Fault.parse("offline@150+30"),
                                 Fault.parse("nmea_corrupt@200+10")])
    states = run(model, 260)
    proj = model.route.projection
    xy = [proj.to_xy(s.lat_deg, s.lon_deg) for s in states]
    jumps = [math.dist(a, b) for a, b in itertools.pairwise(xy)]
    assert max(jumps) > 4900
    assert sum(1 for j in jumps if j > 4900) == 2, "out and back"
    g = truth(model, FaultKind.GPS_LOSS)
    assert all(s.gps_fix == 0 for s in within(states, g)[1:-1])
    assert states[0].gps_fix == 1
    assert states[-1].gps_fix == 1
    g = truth(model, FaultKind.OFFLINE)
    assert [s.t_ms for s in states if not s.online] == list(range(g.start_ms, g.end_ms, 1000))
    assert sum(s.nmea_corrupt for s in states) == 10


def test_ground_truth_includes_active_faults() -> None:
    model = VehicleModel(8, start_ms=START_MS, faults=[Fault.parse("offline@10+100")])
    run(model, 20)
    assert model.ground_truth == [GroundTruth("offline", START_MS + 10_000,
                                              START_MS + 110_000, {})]
    assert model.fault_active(FaultKind.OFFLINE)


@pytest.mark.parametrize(("spec", "expected"), [
    ("overheat@60+300", Fault(FaultKind.OVERHEAT, 60, 300)),
    ("GPS_JUMP@5", Fault(FaultKind.GPS_JUMP, 5, 5)),
    ("fuel_theft@1.5+30:pct=40", Fault(FaultKind.FUEL_THEFT, 1.5, 30, {"pct": 40.0})),
])
def test_fault_parse(spec: str, expected: Fault) -> None:
    assert Fault.parse(spec) == expected


@pytest.mark.parametrize("spec", ["boom@1+2", "overheat", "overheat@x", "overheat@1+0",
                                  "misfire@1+2:cylinder=two"])
def test_fault_parse_rejects(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        Fault.parse(spec)


def test_geojson_route_is_followed_back_and_forth() -> None:
    line = {"type": "Feature", "properties": {"speed_limit_kph": 40},
            "geometry": {"type": "LineString",
                         "coordinates": [[11.0, 48.0], [11.01, 48.0], [11.01, 48.005]]}}
    route = GeoJsonRoutes.load({"type": "FeatureCollection", "features": [line]})
    model = VehicleModel(1, route=route, start_ms=START_MS, park_between_trips=False)
    states = run(model, 900)
    assert max(s.speed_kph for s in states) <= 40.5
    for s in states:
        on_first = abs(s.lat_deg - 48.0) < 0.0003 and 10.9997 < s.lon_deg < 11.0103
        on_second = abs(s.lon_deg - 11.01) < 0.0004 and 47.9997 < s.lat_deg < 48.0053
        assert on_first or on_second, (s.lat_deg, s.lon_deg)
    assert any(s.lat_deg > 48.004 for s in states)
    assert any(s.lon_deg < 11.001 for s in states[300:])


def test_route_errors() -> None:
    with pytest.raises(RouteError):
        GeoJsonRoutes.load({"type": "Point", "coordinates": [0, 0]})
    with pytest.raises(RouteError):
        GeoJsonRoutes.load("/nonexistent/route.geojson")
    with pytest.raises(RouteError):
        SyntheticCity(block_m=5)


def test_synthetic_city_stays_in_area() -> None:
    city = SyntheticCity(center_lat_deg=52.52, center_lon_deg=13.405, half_size_m=1000)
    model = VehicleModel(2, route=city, start_ms=START_MS)
    for s in run(model, 1800):
        x, y = city.projection.to_xy(s.lat_deg, s.lon_deg)
        assert abs(x) < 1100
        assert abs(y) < 1100


def test_vin_has_valid_check_digit() -> None:
    weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
    values = {c: i for i, c in enumerate("0123456789")}
    values.update(dict(zip("ABCDEFGH", range(1, 9), strict=True)))
    values.update(dict(zip("JKLMN", range(1, 6), strict=True)) | {"P": 7, "R": 9})
    values.update(dict(zip("STUVWXYZ", range(2, 10), strict=True)))
    for seed in range(50):
        vin = make_vin(random.Random(seed))
        assert len(vin) == 17
        assert not set(vin) & set("IOQ")
        check = sum(values[c] * w for c, w in zip(vin, weights, strict=True)) % 11
        assert vin[8] == ("X" if check == 10 else str(check))


def test_park_and_low_battery() -> None:
    model = VehicleModel(6, start_ms=START_MS, warm_engine=True, park_between_trips=False,
                         faults=[Fault.parse("park@100+300"), Fault.parse("low_battery@500+200")])
    states = run(model, 800)
    g = truth(model, FaultKind.PARK)
    assert g.details["parked"] is True
    window = [s for s in states if g.start_ms <= s.t_ms < g.end_ms]
    assert len(window) >= 250
    assert not any(s.ignition for s in window)
    assert states[99].speed_kph > 0 or states[99].ignition, "it was driving or idling before"
    before = [s for s in states if s.t_ms < g.start_ms][-5:]
    decels = [(a.speed_kph - b.speed_kph) / 3.6 for a, b in itertools.pairwise(before)]
    assert max(decels, default=0) <= MAX_SERVICE_DECEL_MPS2, "it pulled over normally"
    assert any(s.ignition for s in states if s.t_ms > g.end_ms), "and drove on"
    g = truth(model, FaultKind.LOW_BATTERY)
    late = [s for s in states if g.start_ms + 120_000 < s.t_ms < g.end_ms]
    assert late
    assert all(s.battery_v < 12.0 for s in late)
    assert states[-1].battery_v > 13.0, "recovers when the fault ends and the engine runs"
