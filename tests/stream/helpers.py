"""Builders shared by the stream tests: messages, a fixed directory, a trivial detector."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from core.protocol import Channel, Sample, Source, Telemetry, encode, topic_for
from stream.config import DataflowSettings, FilterSettings
from stream.dataflow import FlowParts, build_flow
from stream.decode import Decoder
from stream.detectors.anomaly import AnomalySettings
from stream.directory import VehicleDirectory, VehicleRecord
from stream.economy import EconomyTracker, FleetEconomy
from stream.envelopes import InboxMessage, SinkItem, unbundle
from stream.model import Event, Reading, VehicleEvent
from stream.vehicle import VehicleStepConfig

T0 = 1_780_000_000_000
TENANT = "acme"
TENANT_ID = uuid.UUID(int=1)
VEHICLE_ID = uuid.UUID(int=2)


def records() -> list[VehicleRecord]:
    """acme/v1 active, acme/v2 retired, other/v3 in another tenant."""
    other = uuid.UUID(int=9)
    return [
        VehicleRecord(TENANT_ID, TENANT, True, VEHICLE_ID, "v1", "active", "Ford Transit"),
        VehicleRecord(TENANT_ID, TENANT, True, uuid.UUID(int=3), "v2", "retired", None),
        VehicleRecord(other, "other", True, uuid.UUID(int=4), "v3", "active", None),
    ]


def sample(seq: int, t_s: float, **kw: Any) -> Sample:
    """A sample at T0 + t_s seconds with a valid fix near Berlin by default."""
    kw.setdefault("lat_deg", 52.5 + seq * 1e-5)
    kw.setdefault("lon_deg", 13.4)
    return Sample(seq=seq, t_ms=T0 + int(t_s * 1000), **kw)


class Inbox:
    """Numbers messages like the real inbox does."""

    def __init__(self, partition: str = "p0") -> None:
        self.partition = partition
        self.offset = 0

    def raw(self, topic: str, payload: bytes, received_ms: int = T0) -> InboxMessage:
        self.offset += 1
        return InboxMessage(self.partition, self.offset, received_ms, topic, payload)

    def telemetry(self, samples: Sequence[Sample], vehicle: str = "v1", tenant: str = TENANT,
                  received_ms: int | None = None) -> InboxMessage:
        payload = encode(Telemetry(source=Source.SIMULATOR, samples=list(samples)))
        rec = received_ms if received_ms is not None else max(s.t_ms for s in samples)
        return self.raw(topic_for(tenant, vehicle, Channel.TELEMETRY), payload, rec)


@dataclass
class CountingDetector:
    """Emits an `ignition_on` event per reading; its state counts readings (for recovery)."""

    name: str = "counting"
    seen: list[int] = field(default_factory=list)

    def initial_state(self) -> int:
        return 0

    def on_reading(self, state: int, reading: Reading) -> tuple[int, Sequence[Event]]:
        self.seen.append(reading.sample.seq)
        ev = VehicleEvent(t_ms=reading.t_ms, tenant_id=reading.vehicle.tenant_id,
                          vehicle_id=reading.vehicle.vehicle_id, event_type="ignition_on",
                          value=float(state + 1))
        return state + 1, [ev]

    def on_tick(self, state: int, now_ms: int) -> tuple[int, Sequence[Event]]:
        return state, []


def run_flow(messages: Sequence[InboxMessage], *, detectors: Sequence[Any] = (),
             dataflow: DataflowSettings | None = None,
             filters: FilterSettings | None = None, clock_ms: int | None = T0,
             recovery_dir: Path | None = None, out: list[SinkItem] | None = None,
             economy: AnomalySettings | None = None,
             directory_records: Sequence[VehicleRecord] | None = None,
             ) -> list[SinkItem]:
    """Run the real dataflow in-process over the given inbox messages.

    With `economy`, the fleet-relative fuel-economy step runs too; `directory_records`
    replaces the default vehicles.
    """
    out = [] if out is None else out
    raw: list[Any] = []
    fixed = list(directory_records) if directory_records is not None else None
    directory = VehicleDirectory((lambda: fixed) if fixed is not None else records,
                                 refresh_s=3600, miss_refresh_s=3600)
    parts = FlowParts(
        source=TestingSource(list(messages)),
        sink=TestingSink(raw),
        decoder=Decoder(directory),
        index_provider=lambda: None,
        vehicle=VehicleStepConfig(dataflow or DataflowSettings(), filters or FilterSettings(),
                                  list(detectors),
                                  clock_ms=(lambda: clock_ms) if clock_ms is not None
                                  else (lambda: time.time_ns() // 1_000_000),
                                  economy=EconomyTracker(economy) if economy else None),
        fleet_economy=FleetEconomy(economy) if economy else None,
    )
    if recovery_dir is None:
        run_main(build_flow(parts))
    else:
        run_main(build_flow(parts), epoch_interval=timedelta(0),
                 recovery_config=RecoveryConfig(str(recovery_dir)))
    out.extend(unbundle(raw))
    return out
