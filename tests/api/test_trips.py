"""Trip and stop detection as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.trips import Point, TripSettings, detect_trips

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(plan: list[tuple[int, float, bool | None]], step_s: int = 1) -> list[Point]:
    """Samples from (seconds, speed, ignition) segments."""
    out, t, lon = [], T0, 13.0
    for duration, speed, ignition in plan:
        for _ in range(0, duration, step_s):
            lon += speed / 3600 / 68 * step_s
            out.append(Point(t, speed, ignition, 52.5, lon))
            t += timedelta(seconds=step_s)
    return out


def test_short_stop_does_not_split_a_trip() -> None:
    """A 60 s traffic-light stop stays inside one trip."""
    trips, stops = detect_trips(run([(300, 40, True), (60, 0, True), (300, 40, True)]))
    assert len(trips) == 1
    assert stops == []
    assert trips[0].duration_s >= 600


def test_ignition_off_ends_the_trip_and_long_stop_splits() -> None:
    """Ignition off ends a trip; a long stop separates two trips and is reported."""
    trips, stops = detect_trips(run([(120, 50, True), (10, 0, False), (400, 0, False),
                                     (120, 30, True), (300, 0, True)]))
    assert len(trips) == 2
    assert len(stops) == 1
    assert stops[0].as_json()["duration_s"] >= 400
    assert trips[1].max_speed_kph == 30
    assert 0.9 < trips[0].distance_km < 1.9  # ~1.67 km at 50 km/h for 2 minutes


def test_data_gap_ends_a_trip_and_short_blips_are_ignored() -> None:
    """A gap longer than max_gap_s closes the trip; a 20 s movement is not a trip."""
    first = run([(120, 50, True)])
    later = [Point(p.time + timedelta(hours=1), p.speed_kph, p.ignition, p.lat, p.lon)
             for p in run([(20, 10, True)])]
    trips, _ = detect_trips(first + later, TripSettings(min_trip_s=60))
    assert len(trips) == 1
