"""Build the production dataflow from `StreamSettings` and run it with Bytewax."""

from __future__ import annotations

import gc
import logging
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import cluster_main

from geo.store import FenceWatcher
from stream.config import DataflowSettings, StreamSettings
from stream.dataflow import FlowParts, build_flow, load_detectors
from stream.decode import Decoder
from stream.directory import VehicleDirectory, postgres_loader
from stream.economy import EconomyTracker, FleetEconomy
from stream.mqtt_source import MqttSource
from stream.sink import PostgresSink
from stream.vehicle import VehicleStepConfig

log = logging.getLogger(__name__)


def ensure_recovery_dir(cfg: DataflowSettings) -> Path | None:
    """Create and initialise the recovery partitions on first start; None when disabled."""
    if not cfg.recovery_dir:
        return None
    path = Path(cfg.recovery_dir)
    if not any(path.glob("*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, cfg.recovery_partitions)  # type: ignore[no-untyped-call]
    return path


GC_THRESHOLDS = (50_000, 20, 100)
"""Python's cyclic collector runs a young collection every 700 allocations by default. The
stream allocates dozens of short-lived, acyclic objects per sample, so that was a collection
every few samples, each also scanning the long-lived per-vehicle state: 5-7 % of the stream's
CPU in profiles of `fleet bench e2e`. Reference counting frees these objects anyway; the
collector only has to find the rare cycle, which it still does, less often."""


def _tune_gc() -> None:
    """Freeze what start-up built (modules, settings, the fence index) out of the collector's
    scans and raise its thresholds (see `GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_stream(settings: StreamSettings, *, process_id: int | None = None) -> None:
    """Run the dataflow in this process (as process `process_id` of a local cluster)."""
    db = settings.database
    cfg = settings.stream
    recovery_dir = ensure_recovery_dir(cfg)
    directory = VehicleDirectory(postgres_loader(db.ingest_url, db.connect_timeout_s),
                                 refresh_s=cfg.directory_refresh_s,
                                 miss_refresh_s=cfg.directory_miss_refresh_s)
    watcher = FenceWatcher(db.ingest_url, settings.geofence, log=log.info)
    watcher.start()
    try:
        detectors = load_detectors(settings, watcher.current)
        parts = FlowParts(
            source=MqttSource(mqtt=settings.mqtt, source=settings.source,
                              database_url=db.ingest_url, connect_timeout_s=db.connect_timeout_s,
                              recovery=recovery_dir is not None, limits=settings.limits,
                              reject_payload_max_bytes=cfg.reject_payload_max_bytes),
            sink=PostgresSink(db.ingest_url,
                              redis_url=settings.redis.url if cfg.live_enabled else None,
                              rollup_interval_s=cfg.rollup_interval_s,
                              connect_timeout_s=db.connect_timeout_s),
            decoder=Decoder(directory, payload_max_bytes=cfg.reject_payload_max_bytes),
            index_provider=watcher.current,
            vehicle=VehicleStepConfig(cfg, settings.filters, detectors,
                                      economy=EconomyTracker(settings.anomaly),
                                      rollups=settings.rollups),
            fleet_economy=FleetEconomy(settings.anomaly),
        )
        flow = build_flow(parts)
        _tune_gc()
        addresses: list[str] = []  # none: the workers of this process are the whole cluster
        if cfg.processes > 1:
            addresses = [f"127.0.0.1:{cfg.process_base_port + i}" for i in range(cfg.processes)]
        log.info("stream starting: process %s of %d, %d worker(s), %d detector(s), recovery %s",
                 process_id or 0, cfg.processes, cfg.workers_per_process, len(detectors),
                 recovery_dir or "off")
        epoch = timedelta(seconds=cfg.snapshot_interval_s)
        recovery = (RecoveryConfig(str(recovery_dir), timedelta(0))  # type: ignore[no-untyped-call]
                    if recovery_dir is not None else None)
        # One process: `cluster_main`, not `bytewax.run.cli_main`. For one process with one
        # worker, cli_main runs the dataflow on this very thread and turns a signal into a worker
        # panic (a Rust backtrace, then `BytewaxRuntimeError: signal received` instead of
        # KeyboardInterrupt). cluster_main runs the workers on their own threads while this one
        # waits and checks for signals: on KeyboardInterrupt from our handler the workers leave
        # their loop, close the sources and sinks, and the interrupt reaches the caller as itself
        # (stream.cli). A process of a local cluster keeps cli_main, the path its kill -9 and
        # shared-subscription tests were proven on; its workers already run on their own threads.
        if cfg.processes > 1:
            cli_main(  # type: ignore[no-untyped-call]
                flow, workers_per_process=cfg.workers_per_process, process_id=process_id,
                addresses=addresses, epoch_interval=epoch, recovery_config=recovery)
        else:
            cluster_main(  # type: ignore[no-untyped-call]
                flow, addresses, 0, worker_count_per_proc=cfg.workers_per_process,
                epoch_interval=epoch, recovery_config=recovery)
    finally:
        watcher.stop()
