"""The fleet-relative fuel-economy score runs inside the real dataflow: per-vehicle windows are
re-keyed by (tenant, model), and the vehicle burning twice its peers' fuel is flagged."""

from __future__ import annotations

import uuid

from stream.detectors.anomaly import AnomalySettings
from stream.directory import VehicleRecord
from stream.economy import ECONOMY_SIGNAL
from stream.envelopes import EmittedEvent
from stream.model import AnomalyRecord
from tests.stream.helpers import TENANT, TENANT_ID, Inbox, run_flow, sample

MODEL = "Ford Transit"
# % of tank per km: five normal vans and one that burns twice as much.
BURN = {"van-0": 0.19, "van-1": 0.2, "van-2": 0.21, "van-3": 0.195, "van-4": 0.205,
        "van-5": 0.4}
IDS = {code: uuid.UUID(int=100 + k) for k, code in enumerate(BURN)}


def test_thirsty_vehicle_is_flagged_against_its_peers() -> None:
    records = [VehicleRecord(TENANT_ID, TENANT, True, IDS[c], c, "active", MODEL) for c in BURN]
    inbox = Inbox()
    messages = []
    speed_kph, duration_s, chunk = 72.0, 1500, 50
    for start in range(0, duration_s, chunk):
        for code, burn in BURN.items():
            samples = []
            for t in range(start, start + chunk):
                km = t * speed_kph / 3600
                samples.append(sample(t + 1, t, speed_kph=speed_kph, odometer_km=1000 + km,
                                      fuel_pct=90 - burn * km, ignition=True, rpm=1800))
            messages.append(inbox.telemetry(samples, vehicle=code))
    settings = AnomalySettings(economy_window_km=2.0, economy_min_fuel_pct=0.3,
                               economy_min_windows=3, economy_min_peers=3)
    out = run_flow(messages, economy=settings, directory_records=records)
    scores = [i.event for i in out if isinstance(i, EmittedEvent)
              and isinstance(i.event, AnomalyRecord) and i.event.kind == "fleet_relative"]
    assert len(scores) >= 10, f"too few fleet-relative scores: {len(scores)}"
    assert all(s.signal == ECONOMY_SIGNAL for s in scores)
    flagged = {s.vehicle_id for s in scores if s.is_event}
    assert flagged == {IDS["van-5"]}
    thirsty = [s for s in scores if s.vehicle_id == IDS["van-5"] and s.is_event]
    assert thirsty[0].details["z"] < 0  # worse than its peers
