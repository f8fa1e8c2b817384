"""The gateway process: sources -> board -> sample builder -> spool -> uplink.

The pipeline order lives here, in `Gateway.run`:

1. sources (threads) write decoded values into the `Board`;
2. every `tick_s` the power state advances (`power.next_power_state`), then the
   `SampleBuilder` turns due values into at most one sample, which the spool stores (fsync)
   with the next seq;
3. the `Uplink` publishes the spool in seq order and deletes samples after PUBACK;
4. a watchdog task pings systemd while the tick loop makes progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from core.protocol import DeviceEvent, Status
from edge_gateway.commands import CommandHandler
from edge_gateway.config import GatewayProcessSettings, dbc_paths
from edge_gateway.power import PowerMode, PowerState, next_power_state
from edge_gateway.sampler import Board, Rates, SampleBuilder
from edge_gateway.sdnotify import Notifier
from edge_gateway.sources.base import ThreadedSource
from edge_gateway.sources.obd import ObdSource
from edge_gateway.spool import Spool, SpoolWorker
from edge_gateway.uplink import STOP_DRAIN_S, Uplink, software

log = logging.getLogger("edge_gateway")

ENGINE_SIGNALS = ("can_engine_speed", "obd_rpm")
BATTERY_SIGNALS = ("obd_adapter_voltage", "can_battery")
ENGINE_FRESH_MS = 5_000
BATTERY_FRESH_MS = 120_000


class Gateway:
    """One vehicle's gateway; `run()` until cancelled."""

    def __init__(self, settings: GatewayProcessSettings,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.board = Board()
        self.rates = Rates(dict(settings.signals.rates_hz))
        self.builder = SampleBuilder(self.board, self.rates)
        self.spool = SpoolWorker(Spool(settings.gateway.spool_path,
                                       settings.gateway.spool_max_samples))
        self.power = PowerState()
        self.notifier = notifier or Notifier()
        self.sources: dict[str, ThreadedSource] = {}
        self._obd: Any = None
        self._build_sources()
        self.commands = CommandHandler(
            self.rates, status=self.status, publish_status=self._request_status,
            read_dtcs=self._read_dtcs if self._obd is not None else None)
        self.uplink = Uplink(settings, self.spool, self.commands, self.status)
        self.last_tick = time.monotonic()
        self.samples_written = 0
        self._stop_requested = asyncio.Event()

    def _build_sources(self) -> None:
        # A device library is imported only when its source is configured: CAN's and the GPS's
        # with their source module here, python-obd (an optional extra) by the OBD-II source.
        s = self.settings
        common = {"reconnect_min_s": s.gateway.reconnect_min_s,
                  "reconnect_max_s": s.gateway.reconnect_max_s}
        if s.obd.port:
            self._obd = ObdSource(s.obd, self.board, self.rates, self.power_mode,
                                  forward_raw=s.gateway.forward_unknown_raw, **common)
            self.sources["obd"] = self._obd
        if s.can.interface:
            from edge_gateway.sources.can import CanSource  # noqa: PLC0415 - python-can, cantools

            self.sources["can"] = CanSource(s.can, dbc_paths(s.can), self.board, self.rates,
                                            self.power_mode,
                                            forward_raw=s.gateway.forward_unknown_raw, **common)
        if s.gps.port:
            from edge_gateway.sources.gps import GpsSource  # noqa: PLC0415 - pyserial, pynmea2

            self.sources["gps"] = GpsSource(s.gps, self.board, **common)

    # ---- state shared with sources and commands ------------------------------------------------

    def power_mode(self) -> PowerMode:
        """The current power mode (read from source threads: a single attribute read)."""
        return self.power.mode

    @property
    def manages_power(self) -> bool:
        """Power saving needs an engine source; a GPS-only gateway always stays active."""
        return "obd" in self.sources or "can" in self.sources

    def status(self) -> Status:
        """The current health report."""
        spool = self.spool.spool
        unknown = sum(src.health.get("unknown_frames") for src in self.sources.values())
        sources = {name: src.health.summary() for name, src in self.sources.items()}
        sources["uplink"] = self.uplink.state[:200]
        sources["power"] = self.power.mode.value
        battery = self._fresh(BATTERY_SIGNALS, BATTERY_FRESH_MS)
        obd = self._obd
        if obd is not None and obd.vin:
            sources["vin"] = obd.vin
        return Status(
            state="online" if self.power.mode is PowerMode.ACTIVE else "sleeping",
            t_ms=_now_ms(), software=software(), spool_samples=spool.count,
            dropped_samples=spool.dropped, unknown_frames=unknown,
            battery_v=battery if battery is not None and 0 <= battery <= 60 else None,
            sources=sources)

    def _request_status(self) -> None:
        self.uplink.request_status()

    async def _read_dtcs(self) -> dict[str, list[str]]:
        return await asyncio.wrap_future(self._obd.request_dtcs())

    def _fresh(self, names: tuple[str, ...], max_age_ms: int) -> float | None:
        now = _now_ms()
        for name in names:
            entry = self.board.get(name)
            if entry is not None and now - entry[1] <= max_age_ms:
                value = entry[0]
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return float(value)
        return None

    # ---- the pipeline ---------------------------------------------------------------------------

    async def tick(self, now_ms: int) -> None:
        """One step: power state, then at most one new sample into the spool."""
        if self.manages_power:
            before = self.power.mode
            self.power = next_power_state(
                self.power, now_ms, self._fresh(ENGINE_SIGNALS, ENGINE_FRESH_MS),
                self._fresh(BATTERY_SIGNALS, BATTERY_FRESH_MS), self.settings.power)
            if self.power.mode is not before:
                self._on_power_change(before, now_ms)
            self.board.put("ignition", self.power.ignition, now_ms)
        fields = self.builder.build(now_ms)
        if fields is None:
            return
        sample = await self.spool.append(lambda seq: self.builder.make_sample(seq, now_ms,
                                                                              fields))
        if sample is not None:
            self.samples_written += 1

    def _on_power_change(self, before: PowerMode, now_ms: int) -> None:
        mode = self.power.mode
        heartbeat_ms = int(self.settings.power.heartbeat_interval_s * 1000)
        self.rates.floor_period_ms = 0 if mode is PowerMode.ACTIVE else heartbeat_ms
        log.info("power mode %s -> %s", before.value, mode.value)
        battery = self._fresh(BATTERY_SIGNALS, BATTERY_FRESH_MS)
        detail: dict[str, str | float | bool] = {"mode": mode.value, "previous": before.value}
        if battery is not None:
            detail["battery_v"] = battery
        self.uplink.add_event(DeviceEvent(t_ms=now_ms, kind="power_mode", detail=detail))
        self.uplink.request_status()

    async def _tick_loop(self) -> None:
        tick_s = self.settings.gateway.tick_s
        next_at = time.monotonic()
        while True:
            await self.tick(_now_ms())
            self.last_tick = time.monotonic()
            next_at += tick_s
            delay = next_at - time.monotonic()
            if delay < 0:  # we fell behind (slow fsync): skip ticks rather than burst
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def _watchdog_loop(self) -> None:
        timeout_s = self.notifier.watchdog_s
        if timeout_s is None:
            return
        while True:
            # Ping only while the pipeline is alive: a stuck tick loop lets systemd restart us.
            if time.monotonic() - self.last_tick < timeout_s / 2:
                self.notifier.watchdog()
            await asyncio.sleep(timeout_s / 4)

    def request_stop(self) -> None:
        """Graceful stop (SIGTERM): stop sampling, let in-flight batches get their PUBACK."""
        self._stop_requested.set()

    async def run(self) -> None:
        """Start every source and task; runs until `request_stop()` (graceful: in-flight
        batches are acknowledged first, so a restart sends nothing twice) or cancellation."""
        for source in self.sources.values():
            source.start()
        self.notifier.ready(f"gateway {self.settings.gateway.vehicle}: "
                            f"sources {', '.join(self.sources) or 'none'}")
        try:
            async with asyncio.TaskGroup() as tg:
                ticking = tg.create_task(self._tick_loop())
                uplink = tg.create_task(self.uplink.run())
                watchdog = tg.create_task(self._watchdog_loop())
                await self._stop_requested.wait()
                self.notifier.stopping()
                ticking.cancel()
                self.uplink.stop()
                drain_s = STOP_DRAIN_S + 5.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(uplink), drain_s)
                uplink.cancel()
                watchdog.cancel()
        finally:
            self.notifier.stopping()
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the sources and close the spool (blocking)."""
        for source in self.sources.values():
            source.stop()
        if self._obd is not None:
            self._obd.fail_pending()
        self.spool.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
