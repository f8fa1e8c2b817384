"""Load generator: many simulated vehicles in one asyncio process, publishing to MQTT.

Each vehicle is a `VehicleModel` stepped in real time at `rate_hz`; its samples are batched
(`batch_size` per message) into `core.protocol.Telemetry` messages on
``fleet/v1/{tenant}/{vehicle}/telemetry`` at QoS 1 (MQTT v5), with a per-vehicle sequence
number that only grows and `sent_ms` set. A sample counts as sent once the broker acknowledged
its message (PUBACK); the `SentLedger` keeps, per vehicle, how many samples were acknowledged
and the last sequence number, so tests can check for loss and duplicates downstream.

Vehicles in an `offline` fault keep producing samples but hold them, and send the backlog in
order when they come back, as a store-and-forward gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiomqtt

from core.mqtt_url import parse_mqtt_url
from core.protocol import (
    MAX_SAMPLES_PER_MESSAGE,
    Channel,
    Sample,
    Source,
    telemetry_payloads,
    topic_for,
)
from simulators.errors import SimulatorError
from simulators.roads import RouteSource, SyntheticCity
from simulators.vehicle import Fault, FaultKind, ModelState, VehicleModel

STEP_CHUNK: Final = 250
"""Vehicles stepped between yields to the event loop, so acknowledgements keep flowing."""
RANDOM_FAULT_KINDS: Final = (FaultKind.OVERHEAT, FaultKind.MISFIRE, FaultKind.FUEL_THEFT,
                             FaultKind.HARSH_BRAKE, FaultKind.SPEEDING, FaultKind.GPS_JUMP,
                             FaultKind.OFFLINE)


def vehicle_codes(count: int, prefix: str = "sim") -> list[str]:
    """``sim-00000``, ``sim-00001``, ... (valid topic ids)."""
    return [f"{prefix}-{i:05d}" for i in range(count)]


def sample_of(state: ModelState, seq: int) -> Sample:
    """The wire-contract sample of a model state (no position without a GPS fix)."""
    fix = state.gps_fix > 0
    return Sample(
        seq=seq, t_ms=state.t_ms,
        lat_deg=state.lat_deg if fix else None, lon_deg=state.lon_deg if fix else None,
        alt_m=round(state.alt_m, 1) if fix else None,
        speed_kph=round(state.speed_kph, 2),
        heading_deg=round(state.heading_deg, 1) if fix else None,
        hdop=round(state.hdop, 2), sats=state.sats, gps_fix=state.gps_fix,
        ignition=state.ignition, rpm=round(state.rpm, 1),
        coolant_c=round(state.coolant_c, 1), fuel_pct=round(state.fuel_pct, 2),
        odometer_km=round(state.odometer_km, 3), engine_hours_h=round(state.engine_hours_h, 4),
        battery_v=round(state.battery_v, 2), throttle_pct=round(state.throttle_pct, 1),
        engine_load_pct=round(state.engine_load_pct, 1),
        dtcs=list(state.dtcs) if state.dtcs else None,
    )


@dataclass(frozen=True)
class LoadConfig:
    """What to simulate and how fast."""

    mqtt_url: str
    tenant: str
    codes: Sequence[str]
    """Vehicle codes (topic ids), one simulated vehicle each."""
    rate_hz: float = 1.0
    """Samples per vehicle per second."""
    batch_size: int = 10
    """Samples per telemetry message."""
    duration_s: float | None = None
    """Stop after this long (None: until cancelled)."""
    seed: int = 0
    connections: int = 2
    """MQTT connections the vehicles are spread over."""
    max_inflight: int = 2000
    """Unacknowledged messages allowed across all connections (back-pressure beyond)."""
    seq_start: int | None = None
    """First sequence number; default: Unix time in ms, so a restarted generator never reuses
    a sequence number at rates up to 1000 Hz."""
    faults_per_vehicle_hour: float = 0.0
    """Random scripted faults per vehicle and hour (their ground truth is in each model)."""
    progress_interval_s: float = 5.0
    route: RouteSource | None = None
    faults: Mapping[str, Sequence[Fault]] = field(default_factory=dict)
    """Scripted faults per vehicle code (added to the random ones)."""
    max_backlog_samples: int = 36_000
    """Samples a vehicle holds while offline or unacknowledged; beyond it the oldest are
    dropped and counted in `SentLedger.dropped` (a bounded spool, like the gateway's)."""

    def __post_init__(self) -> None:
        if not self.codes:
            raise SimulatorError("the load generator needs at least one vehicle")
        if self.rate_hz <= 0 or not 1 <= self.batch_size <= MAX_SAMPLES_PER_MESSAGE:
            raise SimulatorError(
                f"rate_hz must be > 0 and batch_size 1..{MAX_SAMPLES_PER_MESSAGE}")
        if self.connections < 1 or self.max_inflight < 1 or self.max_backlog_samples < 1:
            raise SimulatorError("connections, max_inflight and max_backlog_samples must be >= 1")


@dataclass
class SentLedger:
    """Per vehicle: acknowledged samples and the last acknowledged sequence number."""

    counts: dict[str, int] = field(default_factory=dict)
    first_seq: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    """Samples dropped unsent because a vehicle's backlog was full (oldest first)."""
    messages: int = 0
    failed_messages: int = 0

    def record(self, code: str, samples: Sequence[Sample]) -> None:
        """Count one acknowledged message."""
        self.messages += 1
        self.counts[code] = self.counts.get(code, 0) + len(samples)
        self.first_seq.setdefault(code, samples[0].seq)
        self.last_seq[code] = samples[-1].seq

    @property
    def samples(self) -> int:
        """Acknowledged samples of all vehicles."""
        return sum(self.counts.values())


@dataclass
class LoadReport:
    """What a run did."""

    ledger: SentLedger
    elapsed_s: float
    produced_samples: int
    max_lag_s: float
    """Largest delay of a tick behind its wall-clock time (the machine could not keep up)."""

    @property
    def samples_per_s(self) -> float:
        """Acknowledged samples per second of wall time."""
        return self.ledger.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _SimVehicle:
    code: str
    topic: str
    model: VehicleModel
    client_index: int
    seq: int
    pending: list[Sample] = field(default_factory=list)
    sending: asyncio.Task[None] | None = None


def random_faults(rng: random.Random, per_hour: float, horizon_s: float) -> list[Fault]:
    """Faults at random times over `horizon_s` (at least one hour is planned)."""
    faults: list[Fault] = []
    if per_hour <= 0:
        return faults
    t = 0.0
    horizon_s = max(horizon_s, 3600.0)
    while True:
        t += rng.expovariate(per_hour / 3600.0)
        if t >= horizon_s:
            return faults
        kind = rng.choice(RANDOM_FAULT_KINDS)
        duration = {FaultKind.GPS_JUMP: 5.0, FaultKind.OFFLINE: 60.0,
                    FaultKind.FUEL_THEFT: 60.0}.get(kind, 120.0)
        faults.append(Fault(kind, round(t, 1), duration))


class LoadGenerator:
    """Runs the simulated fleet; `run()` returns a `LoadReport`. Vehicles are public so that
    tests can read each model's ground truth."""

    def __init__(self, config: LoadConfig, *, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.ledger = SentLedger()
        start_ms = int(time.time() * 1000)
        seq0 = start_ms if config.seq_start is None else config.seq_start
        route = config.route or SyntheticCity()
        self.vehicles: list[_SimVehicle] = []
        horizon = config.duration_s or 3600.0
        for index, code in enumerate(config.codes):
            seed = config.seed * 1_000_003 + index
            faults = random_faults(random.Random(seed ^ 0x5EED),  # noqa: S311 - simulation
                                   config.faults_per_vehicle_hour, horizon)
            faults += config.faults.get(code, ())
            model = VehicleModel(seed, route=route, faults=faults, start_ms=start_ms,
                                 warm_engine=True)
            self.vehicles.append(_SimVehicle(
                code, topic_for(config.tenant, code, Channel.TELEMETRY), model,
                index % config.connections, seq0))
        self._inflight = asyncio.Semaphore(config.max_inflight)
        self._inflight_count = 0
        self._produced = 0
        self._stopping = False
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Stop producing at the next tick; `run()` then flushes and returns (call it from
        the event loop's thread, e.g. a signal handler added with `loop.add_signal_handler`)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> LoadReport:
        """Simulate until `duration_s` passes or the task is cancelled; then flush."""
        self._wake = asyncio.Event()
        target = parse_mqtt_url(self.config.mqtt_url)
        if target.tls:
            raise SimulatorError("the load generator speaks plain MQTT (mqtt://) only")
        clients = [aiomqtt.Client(
            target.host, target.port, username=target.username, password=target.password,
            identifier=f"fleet-load-{uuid.uuid4().hex[:12]}",
            protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000,
            max_queued_outgoing_messages=self.config.max_inflight * 2, timeout=30)
            for _ in range(self.config.connections)]
        for client in clients:
            # many publishes wait for their PUBACK at once by design; bounded by max_inflight
            client.pending_calls_threshold = self.config.max_inflight + 1
        started = time.monotonic()
        max_lag = 0.0
        try:
            async with contextlib.AsyncExitStack() as stack:
                for client in clients:
                    await stack.enter_async_context(client)
                # building models and connecting take seconds: simulated time starts now
                start_ms = int(time.time() * 1000)
                for v in self.vehicles:
                    v.model.start_ms = start_ms
                started = time.monotonic()
                max_lag = await self._loop(clients, started)
                await self._flush(clients)
        except aiomqtt.MqttError as exc:
            raise SimulatorError(f"MQTT: {exc}") from exc
        elapsed = time.monotonic() - started
        report = LoadReport(self.ledger, elapsed, self._produced, max_lag)
        self.log(self._progress_line(elapsed, final=True))
        return report

    async def _loop(self, clients: list[aiomqtt.Client], started: float) -> float:
        cfg = self.config
        interval = 1.0 / cfg.rate_hz
        ticks = None if cfg.duration_s is None else round(cfg.duration_s * cfg.rate_hz)
        next_progress = started + cfg.progress_interval_s
        max_lag = 0.0
        tick = 0
        while not self._stopping and (ticks is None or tick < ticks):
            tick += 1
            delay = started + tick * interval - time.monotonic()
            if delay > 0:
                await self._sleep(delay)
                if self._stopping:
                    break
            max_lag = max(max_lag, -delay)
            await self._tick(clients, interval)
            now = time.monotonic()
            if now >= next_progress:
                self.log(self._progress_line(now - started))
                next_progress = now + cfg.progress_interval_s
        return max_lag

    async def _sleep(self, delay_s: float) -> None:
        assert self._wake is not None  # noqa: S101 - set by run() before the loop starts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay_s)

    async def _tick(self, clients: list[aiomqtt.Client], dt_s: float) -> None:
        batch = self.config.batch_size
        for start in range(0, len(self.vehicles), STEP_CHUNK):
            for v in self.vehicles[start:start + STEP_CHUNK]:
                state = v.model.step(dt_s)
                v.pending.append(sample_of(state, v.seq))
                v.seq += 1
                self._produced += 1
                excess = len(v.pending) - self.config.max_backlog_samples
                if excess > 0:
                    del v.pending[:excess]
                    self.ledger.dropped[v.code] = self.ledger.dropped.get(v.code, 0) + excess
                if len(v.pending) >= batch and state.online and v.sending is None:
                    self._send(clients, v)
            await asyncio.sleep(0)

    def _send(self, clients: list[aiomqtt.Client], v: _SimVehicle) -> None:
        samples, v.pending = v.pending, []
        v.sending = asyncio.create_task(self._publish(clients[v.client_index], v, samples))

    async def _publish(self, client: aiomqtt.Client, v: _SimVehicle,
                       samples: list[Sample]) -> None:
        # one task per vehicle at a time, messages in sequence order: the broker keeps the
        # order of one connection, so every vehicle's samples arrive in order
        try:
            k = 0
            for chunk, payload in telemetry_payloads(samples, source=Source.SIMULATOR,
                                                     device=v.code,
                                                     max_samples=self.config.batch_size):
                async with self._inflight:
                    self._inflight_count += 1
                    try:
                        await client.publish(v.topic, payload, qos=1)
                    except Exception as exc:  # noqa: BLE001 - counted and retried later
                        self.ledger.failed_messages += 1
                        self.log(f"publish for {v.code} failed: {exc}")
                        v.pending = samples[k:] + v.pending  # keep them for the next attempt
                        return
                    finally:
                        self._inflight_count -= 1
                self.ledger.record(v.code, chunk)
                k += len(chunk)
        finally:
            v.sending = None

    async def _flush(self, clients: list[aiomqtt.Client]) -> None:
        """Send what is still pending (also the backlog of vehicles offline at the end)."""
        for v in self.vehicles:
            if v.sending is not None:
                await v.sending
            if v.pending:
                self._send(clients, v)
        tasks = [v.sending for v in self.vehicles if v.sending is not None]
        if tasks:
            await asyncio.gather(*tasks)

    def _progress_line(self, elapsed_s: float, *, final: bool = False) -> str:
        acked = self.ledger.samples
        rate = acked / elapsed_s if elapsed_s > 0 else 0.0
        inflight = self._inflight_count
        label = "done" if final else "progress"
        return (f"{label} t={elapsed_s:.0f}s vehicles={len(self.vehicles)} "
                f"produced={self._produced} acked={acked} messages={self.ledger.messages} "
                f"failed={self.ledger.failed_messages} rate={rate:.0f} samples/s "
                f"inflight={inflight}")


async def run_load(config: LoadConfig, *,
                   log: Callable[[str], None] = print) -> LoadReport:
    """Build a `LoadGenerator` and run it."""
    return await LoadGenerator(config, log=log).run()
