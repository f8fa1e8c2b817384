"""Sample building: period alignment, source preference, contract validation."""

from __future__ import annotations

from edge_gateway.sampler import Board, Rates, SampleBuilder
from edge_gateway.signals import SIGNALS, check_names

T0 = 1_780_000_000_000  # a whole second


def test_signal_table_is_consistent() -> None:
    check_names()
    assert len({s.name for s in SIGNALS}) == len(SIGNALS)


def test_same_rate_signals_land_in_one_sample_per_period() -> None:
    board, rates = Board(), Rates()
    builder = SampleBuilder(board, rates)
    board.put("obd_rpm", 900.0, T0 + 100)
    board.put("obd_coolant", 80.0, T0 + 300)
    fields = builder.build(T0 + 500)
    assert fields == {"rpm": 900.0, "coolant_c": 80.0}
    board.put("obd_rpm", 950.0, T0 + 600)
    assert builder.build(T0 + 700) is None  # same 1 s period: not due yet
    assert builder.build(T0 + 1000) == {"rpm": 950.0}
    assert builder.build(T0 + 2000) is None  # nothing new: nothing sent


def test_preferred_source_wins_the_field() -> None:
    board, rates = Board(), Rates()
    builder = SampleBuilder(board, rates)
    board.put("obd_speed", 50.0, T0)
    board.put("gps_speed", 52.5, T0)
    board.put("can_wheel_speed", 51.0, T0)
    assert builder.build(T0 + 10) == {"speed_kph": 52.5}


def test_rates_and_extra_fields() -> None:
    board, rates = Board(), Rates({"obd_maf": 0.0})
    builder = SampleBuilder(board, rates)
    board.put("obd_maf", 3.2, T0)
    board.put("obd_intake_temp", 21.0, T0)
    board.put("gps_position", (52.5, 13.4), T0)
    board.put("obd_dtcs", ["P0301", "P0300", "P0301"], T0)
    fields = builder.build(T0 + 1)
    assert fields == {"extra": {"intake_temp_c": 21.0}, "lat_deg": 52.5, "lon_deg": 13.4,
                      "dtcs": ["P0300", "P0301"]}


def test_values_the_contract_refuses_are_dropped_and_counted() -> None:
    builder = SampleBuilder(Board(), Rates())
    sample = builder.make_sample(7, T0, {"rpm": 900.0, "speed_kph": 999.0, "coolant_c": 90.0})
    assert sample.seq == 7
    assert sample.speed_kph is None
    assert sample.rpm == 900.0
    assert builder.rejected_values == 1


def test_heartbeat_floor_slows_every_signal() -> None:
    board, rates = Board(), Rates()
    rates.floor_period_ms = 60_000
    builder = SampleBuilder(board, rates)
    board.put("gps_speed", 10.0, T0)
    assert builder.build(T0) == {"speed_kph": 10.0}
    board.put("gps_speed", 11.0, T0 + 1000)
    assert builder.build(T0 + 1000) is None
    assert builder.build(T0 + 60_000) == {"speed_kph": 11.0}
