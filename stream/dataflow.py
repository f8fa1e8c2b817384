"""The stream's Bytewax dataflow. The pipeline order is this one list of steps:

1. ``inbox``      MQTT source -> durable inbox (PostgreSQL) -> `InboxMessage` (stream.mqtt_source)
2. ``decode``     wire contract + vehicle directory -> `VehicleBatch` | dead letter (stream.decode)
3. ``geo``        fences containing each position, vectorised per batch (stream.geo_step)
4. ``split``      dead letters go straight to the sink
5. ``by_vehicle`` key by vehicle id (Bytewax routes each vehicle to one worker of the cluster)
6. ``vehicle``    dedupe, reorder/watermark, GPS filters, motion/ignition, detectors
                  (stream.vehicle; the detectors in `stream.detectors.build_detectors` order)
7. ``fleet_economy`` fuel-economy windows re-keyed by (tenant, model) and scored against
                  the vehicle's peers (stream.economy.FleetEconomy) -> anomalies
8. ``sink``       TimescaleDB (COPY, idempotent), vehicle_state, rollups, Redis live (stream.sink)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from stream.config import StreamSettings
from stream.decode import Decoder
from stream.detectors import build_detectors
from stream.detectors.base import Detector
from stream.envelopes import (
    EconomyItem,
    EmittedEvent,
    InboxMessage,
    RejectRow,
    SinkInput,
    VehicleBatch,
    VehicleOutput,
)
from stream.errors import StreamConfigError
from stream.geo_step import GeoLookup, IndexProvider
from stream.vehicle import VehicleStepConfig, vehicle_logic_builder

FLOW_ID = "fleet_stream"


@dataclass(frozen=True)
class FlowParts:
    """Everything the dataflow is made of; tests swap the source, sink and directory."""

    source: Source[InboxMessage]
    sink: Sink[SinkInput]
    decoder: Decoder
    index_provider: IndexProvider
    vehicle: VehicleStepConfig
    fleet_economy: Any = None
    """`stream.economy.FleetEconomy`; None leaves the fleet-relative step out."""


def _is_batch(item: VehicleBatch | RejectRow) -> TypeGuard[VehicleBatch]:
    return isinstance(item, VehicleBatch)


def _vehicle_key(batch: VehicleBatch) -> str:
    return str(batch.ref.vehicle_id)


def _unkey(kv: tuple[str, VehicleOutput]) -> VehicleOutput:
    return kv[1]


def _economy_items(out: VehicleOutput) -> tuple[EconomyItem, ...]:
    return out.economy


def _model_key(item: EconomyItem) -> str:
    return f"{item.sample.tenant_id}:{item.sample.model_key}"


class _FleetEconomyStep:
    """`stateful_flat_map` mapper around `FleetEconomy` (state: its per-model value)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def __call__(self, state: Any, item: EconomyItem) -> tuple[Any, list[VehicleOutput]]:
        if state is None:
            state = self.scorer.initial_state()
        state, records = self.scorer.on_sample(state, item.sample)
        return state, [VehicleOutput(tuple(EmittedEvent(item.ref, r) for r in records))]


def build_flow(parts: FlowParts) -> Dataflow:
    """Assemble the dataflow (see the module docstring for the order)."""
    flow = Dataflow(FLOW_ID)
    inbox = op.input("inbox", flow, parts.source)
    decoded = op.map("decode", inbox, parts.decoder)
    located = op.flat_map_batch("geo", decoded, GeoLookup(parts.index_provider))
    split = op.branch("split", located, _is_batch)
    keyed = op.key_on("by_vehicle", split.trues, _vehicle_key)
    processed = op.stateful_batch("vehicle", keyed, vehicle_logic_builder(parts.vehicle))
    results = op.map("unkey", processed, _unkey)
    rejects: Any = split.falses
    outputs: list[Any] = [results, rejects]
    if parts.fleet_economy is not None:
        windows = op.flat_map("economy_windows", results, _economy_items)
        by_model = op.key_on("by_model", windows, _model_key)
        scored = op.stateful_flat_map("fleet_economy", by_model,
                                      _FleetEconomyStep(parts.fleet_economy))
        outputs.append(op.map("unkey_economy", scored, _unkey))
    op.output("sink", op.merge("all", *outputs), parts.sink)
    return flow


def load_detectors(settings: StreamSettings, index_provider: Callable[[], Any], *,
                   clock_ms: Callable[[], int] | None = None) -> Sequence[Detector]:
    """The one ordered detector list of `stream.detectors`, built from the settings."""
    extra: dict[str, Any] = {} if clock_ms is None else {"clock": clock_ms}
    built = build_detectors(settings.detectors, index_provider, settings.geofence,
                            settings.anomaly, **extra)
    disabled = set(settings.stream.disabled_detectors)
    unknown = disabled - {d.name for d in built}
    if unknown:
        raise StreamConfigError(f"stream.disabled_detectors names unknown detectors: "
                                f"{sorted(unknown)}")
    return [d for d in built if d.name not in disabled]
