"""OBD-II through an ELM327-compatible adapter, with python-obd (GPL-2.0-only, `obd` extra).

python-obd is imported lazily, so the gateway runs without it when OBD-II is off. Each table
PID is polled at its own rate; DTCs (Mode 03 stored + Mode 07 pending) at the `obd_dtcs`
rate; the VIN (Mode 09) once per connection; the adapter voltage (AT RV) at its rate, also in
BUS_OFF mode (it is measured by the adapter, not asked of an ECU).

Failure handling: a query that comes back empty (NO DATA, garbage, a timeout) is counted.
`failures_before_reconnect` consecutive failures of PIDs the car claims to support, or the
adapter itself going away, end the session; `ThreadedSource` then reconnects with back-off.
With the ignition off the ECU stops answering: python-obd then reports the adapter without a
car, and only the adapter voltage is read until a later reconnect finds the car again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_gateway.config import ObdSettings
from edge_gateway.errors import SourceError
from edge_gateway.power import PowerMode
from edge_gateway.sampler import Board, Rates
from edge_gateway.signals import SignalSource, SignalSpec, signals_of, to_number
from edge_gateway.sources.base import ThreadedSource, sleep_until

log = logging.getLogger("edge_gateway.sources.obd")

DTC_SIGNAL = "obd_dtcs"
VOLTAGE_SIGNAL = "obd_adapter_voltage"
RPM_SIGNAL = "obd_rpm"
ENGINE_PROBE_S = 10.0
"""Outside ACTIVE mode the engine speed is still read this often to notice ignition on."""


@dataclass(slots=True)
class _Poll:
    """One thing to poll: a python-obd command and how to store its answer."""

    name: str
    command: Any
    spec: SignalSpec | None
    counts_failures: bool
    """Whether an empty answer counts toward a reconnect (only PIDs the car supports)."""
    next_due: float = 0.0


class ObdSource(ThreadedSource):
    """Polls an ELM327 adapter on a thread and writes values into the board."""

    def __init__(self, settings: ObdSettings, board: Board, rates: Rates,
                 power_mode: Callable[[], PowerMode], *, forward_raw: bool,
                 reconnect_min_s: float, reconnect_max_s: float) -> None:
        super().__init__("obd", reconnect_min_s, reconnect_max_s)
        self.settings = settings
        self.board = board
        self.rates = rates
        self.power_mode = power_mode
        self.forward_raw = forward_raw
        self.vin: str | None = None
        # Bounded: at most a few "read DTCs now" commands wait; more are refused as busy.
        self._requests: queue.Queue[concurrent.futures.Future[dict[str, list[str]]]] = (
            queue.Queue(maxsize=4))

    # ---- requests from the event loop ---------------------------------------------------------

    def request_dtcs(self) -> concurrent.futures.Future[dict[str, list[str]]]:
        """Ask the poll thread to read stored and pending DTCs now."""
        fut: concurrent.futures.Future[dict[str, list[str]]] = concurrent.futures.Future()
        try:
            self._requests.put_nowait(fut)
        except queue.Full:
            fut.set_exception(SourceError("OBD-II source is busy with earlier requests"))
        return fut

    # ---- the session ----------------------------------------------------------------------------

    def session(self) -> None:
        """Connect to the adapter and poll until it fails."""
        obd = _import_obd()
        self.health.set_state(f"connecting to {self.settings.port}")
        conn = obd.OBD(self.settings.port, baudrate=self.settings.baudrate,
                       protocol=self.settings.protocol, fast=False,
                       timeout=self.settings.timeout_s, check_voltage=False)
        _shorten_read_timeout(conn, self.settings.timeout_s)
        try:
            self._poll_connection(obd, conn)
        finally:
            # python-obd's close() fails on a port it already dropped itself; nothing to free.
            with contextlib.suppress(Exception):
                conn.close()

    def _poll_connection(self, obd: Any, conn: Any) -> None:
        status = conn.status()
        if status == obd.OBDStatus.NOT_CONNECTED:
            raise SourceError(f"no ELM327 adapter answers on {self.settings.port}")
        car = status == obd.OBDStatus.CAR_CONNECTED
        polls = self._polls(obd, conn, car=car)
        if car:
            self._read_vin(obd, conn)
            self.health.set_state(f"connected ({conn.protocol_name()})"
                                  + (f" VIN {self.vin}" if self.vin else ""))
        else:
            self.health.set_state("adapter connected, vehicle not answering (ignition off?)")
        failures = 0
        # Without a car, re-probe it after a while by ending the session (it reconnects).
        session_end = time.monotonic() + (self.backoff.max_s if not car else float("inf"))
        while not self.stop_event.is_set() and time.monotonic() < session_end:
            self._serve_requests(obd, conn)
            now = time.monotonic()
            mode = self.power_mode()
            for poll in polls:
                if poll.next_due > now:
                    continue
                period_s = self.rates.period_ms(poll.name) / 1000.0
                if poll.name == RPM_SIGNAL:
                    # Keep probing the engine while sleeping, or ignition-on would be noticed
                    # only at the next heartbeat (minutes later).
                    period_s = min(period_s, ENGINE_PROBE_S)
                poll.next_due = now + period_s
                if self.rates.rate_hz(poll.name) <= 0:
                    continue
                if mode is PowerMode.BUS_OFF and poll.name != VOLTAGE_SIGNAL:
                    continue
                failures = self._run_poll(obd, conn, poll, failures)
            next_due = min((p.next_due for p in polls), default=now + 1.0)
            sleep_until(self.stop_event, next_due, wake=lambda: not self._requests.empty())

    def _run_poll(self, obd: Any, conn: Any, poll: _Poll, failures: int) -> int:
        """Query one poll; returns the new count of consecutive failures or raises to reconnect."""
        ok = self._query(obd, conn, poll)
        if conn.status() == obd.OBDStatus.NOT_CONNECTED:
            raise SourceError("adapter disconnected")
        if ok:
            return 0
        if poll.name == VOLTAGE_SIGNAL or not self._adapter_answers(obd, conn):
            # The adapter itself is silent or confused (reset, garbage): start over.
            raise SourceError("adapter stopped answering")
        if not poll.counts_failures:
            return failures
        failures += 1
        if failures >= self.settings.failures_before_reconnect:
            raise SourceError(f"{failures} queries in a row failed")
        return failures

    def _adapter_answers(self, obd: Any, conn: Any) -> bool:
        """Ask the adapter for its own voltage (AT RV, no ECU involved) after a failed query.

        Tells "the vehicle said NO DATA" (adapter fine: count it) apart from "the adapter is
        silent or was reset" (reconnect now rather than after many slow timeouts).
        """
        try:
            response = conn.query(obd.commands.ELM_VOLTAGE, force=True)
        except Exception:  # noqa: BLE001 - a garbled reply means the adapter is confused
            return False
        return not response.is_null()

    def _polls(self, obd: Any, conn: Any, *, car: bool) -> list[_Poll]:
        polls: list[_Poll] = []
        for spec in signals_of(SignalSource.OBD):
            if spec.name == VOLTAGE_SIGNAL:
                polls.append(_Poll(spec.name, obd.commands.ELM_VOLTAGE, spec, True))
            elif not car:
                continue
            elif spec.name == DTC_SIGNAL:
                polls.append(_Poll(spec.name, None, spec, False))
            elif spec.obd_command is not None:
                command = obd.commands[spec.obd_command]
                if conn.supports(command):
                    polls.append(_Poll(spec.name, command, spec, True))
                else:
                    self.health.count("unsupported_pids")
            elif spec.obd_pid is not None:
                polls.append(_Poll(spec.name, _custom_command(obd, spec), spec, False))
        if car:
            for pid in self.settings.raw_pids:
                name = f"obd_raw_{pid.lower()}"
                self.rates.set_raw(name, self.settings.raw_rate_hz)
                polls.append(_Poll(name, _raw_command(obd, pid), None, False))
        return polls

    def _query(self, obd: Any, conn: Any, poll: _Poll) -> bool:  # noqa: PLR0911
        """Run one poll; True when a usable value came back."""
        if poll.name == DTC_SIGNAL:
            dtcs = self._read_dtcs(conn, obd)
            if dtcs is None:
                return False
            self.board.put(DTC_SIGNAL, sorted(set(dtcs["stored"]) | set(dtcs["pending"])),
                           _now_ms())
            return True
        try:
            response = conn.query(poll.command, force=True)
            if response.is_null():
                self.health.count("no_data")
                return False
            value = _convert(response.value, poll.spec)
        except Exception as exc:  # noqa: BLE001 - python-obd decoders choke on garbage replies
            self.health.count("malformed")
            log.debug("obd: %s: %s", poll.name, exc)
            return False
        if value is None:
            self.health.count("malformed")
            return False
        if poll.spec is None:
            # An unknown PID: always counted, forwarded raw only when configured.
            self.health.count("unknown_frames")
            if not self.forward_raw:
                return True
        self.board.put(poll.name, value, _now_ms())
        return True

    def _read_dtcs(self, conn: Any, obd: Any) -> dict[str, list[str]] | None:
        result: dict[str, list[str]] = {}
        for key, command in (("stored", obd.commands.GET_DTC),
                             ("pending", obd.commands.GET_CURRENT_DTC)):
            try:
                response = conn.query(command, force=True)
            except Exception:  # noqa: BLE001 - a garbled DTC reply is counted, not fatal
                self.health.count("malformed")
                return None
            if response.is_null():
                self.health.count("no_data")
                return None
            result[key] = [str(code) for code, _desc in response.value]
        return result

    def _read_vin(self, obd: Any, conn: Any) -> None:
        try:
            response = conn.query(obd.commands.VIN, force=True)
        except Exception:  # noqa: BLE001 - VIN is informative only
            self.health.count("malformed")
            return
        if response.is_null():
            return
        raw = response.value
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
        self.vin = "".join(ch for ch in text if ch.isalnum())[:17] or None

    def _serve_requests(self, obd: Any, conn: Any) -> None:
        while True:
            try:
                fut = self._requests.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            if conn.status() != obd.OBDStatus.CAR_CONNECTED:
                fut.set_exception(SourceError("the vehicle does not answer OBD-II requests"))
                continue
            dtcs = self._read_dtcs(conn, obd)
            if dtcs is None:
                fut.set_exception(SourceError("the vehicle gave no usable DTC reply"))
                continue
            self.board.put(DTC_SIGNAL, sorted(set(dtcs["stored"]) | set(dtcs["pending"])),
                           _now_ms())
            fut.set_result(dtcs)

    def fail_pending(self) -> None:
        """Refuse requests still queued when the source stops."""
        while True:
            try:
                fut = self._requests.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(SourceError("OBD-II source stopped"))


def _import_obd() -> Any:
    # python-obd's unit registry redefines pint units at import time, with a WARNING each.
    logging.getLogger("pint").setLevel(logging.ERROR)
    try:
        import obd  # noqa: PLC0415 - optional extra `obd` (GPL-2.0); pint's log level first
    except ImportError as exc:
        raise SourceError("OBD-II needs python-obd: pip install 'fleet-telemetry[obd]'") from exc
    # python-obd logs every query at INFO and every empty read at WARNING; we count those
    # ourselves (status counters), so keep only its errors.
    logging.getLogger("obd").setLevel(logging.ERROR)
    return obd


def _shorten_read_timeout(conn: Any, timeout_s: float) -> None:
    """Use our per-query timeout instead of python-obd's fixed 10 s serial read timeout.

    python-obd opens the port with `timeout=10` and applies its own `timeout` only while
    initialising; an adapter that falls silent would then stall polling for 10 s per query.
    The port is a private attribute, so a python-obd that renames it keeps its default.
    """
    port = getattr(getattr(conn, "interface", None), "_ELM327__port", None)
    if port is not None and hasattr(port, "timeout"):
        port.timeout = timeout_s


def _convert(value: Any, spec: SignalSpec | None) -> float | None:
    """A python-obd value (pint quantity or number) as a float in the table's unit."""
    if spec is not None and spec.obd_unit is not None and hasattr(value, "to"):
        value = value.to(spec.obd_unit)
    magnitude = getattr(value, "magnitude", value)
    return to_number(magnitude)


def _custom_command(obd: Any, spec: SignalSpec) -> Any:
    """A python-obd command for a PID it lacks, decoded by the table's byte decoder."""
    pid = spec.obd_pid
    if pid is None:
        raise ValueError(f"signal {spec.name} has no custom PID")
    decode = pid.decode

    def decoder(messages: list[Any]) -> float | None:
        data = bytes(messages[0].data[2:])
        return decode(data) if len(data) >= pid.data_bytes else None

    command = f"01{pid.pid:02X}".encode()
    return obd.OBDCommand(spec.name.upper(), spec.name, command, 2 + pid.data_bytes, decoder,
                          obd.protocols.ECU.ENGINE, False)


def _raw_command(obd: Any, pid: str) -> Any:
    """A command for an unknown PID: its data bytes as one unsigned number (up to 6 bytes)."""

    def decoder(messages: list[Any]) -> float | None:
        data = bytes(messages[0].data[2:8])
        return float(int.from_bytes(data, "big")) if data else None

    return obd.OBDCommand(f"RAW_{pid.upper()}", f"raw {pid}", pid.upper().encode(), 0, decoder,
                          obd.protocols.ECU.ENGINE, False)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
