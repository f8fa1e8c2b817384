"""Downlink commands (channel `cmd`) and their acknowledgements (channel `cmd/ack`).

Dispatch is a registry: command name -> handler. Anything else becomes a negative
`CommandAck` whose `reason` says why (malformed JSON, unknown command, bad arguments,
expired). A payload without a usable id is still answered, with the id `unparsable`, so the
sender sees the reason.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from core.protocol import ID_PATTERN, Command, CommandAck, Reject, Status, decode
from edge_gateway.errors import GatewayError
from edge_gateway.sampler import Rates

UNPARSABLE_ID: Final = "unparsable"
READ_DTCS_TIMEOUT_S: Final = 15.0
_ID_RE = re.compile(ID_PATTERN)


class CommandRejectedError(GatewayError):
    """A command that cannot be carried out; the message is the ack's reason."""


Handler = Callable[[Command], Awaitable[dict[str, Any] | None]]


class CommandHandler:
    """Validates and runs downlink commands."""

    def __init__(self, rates: Rates, *, status: Callable[[], Status],
                 read_dtcs: Callable[[], Awaitable[dict[str, list[str]]]] | None,
                 publish_status: Callable[[], None]) -> None:
        self.rates = rates
        self.status = status
        self.read_dtcs = read_dtcs
        self.publish_status = publish_status
        self.handlers: dict[str, Handler] = {
            "set_rate": self._set_rate,
            "read_dtcs": self._read_dtcs,
            "report_status": self._report_status,
        }
        self.rejected = 0

    async def handle(self, payload: bytes) -> CommandAck:
        """Run one command payload and return the acknowledgement to publish."""
        now_ms = time.time_ns() // 1_000_000
        command = decode(payload, Command)
        if isinstance(command, Reject):
            self.rejected += 1
            return CommandAck(id=_salvage_id(payload), ok=False, t_ms=now_ms,
                              reason=f"{command.reason.value}: {command.detail}"[:500])
        if command.expires_ms is not None and command.expires_ms < now_ms:
            self.rejected += 1
            return CommandAck(id=command.id, ok=False, t_ms=now_ms, reason="expired")
        handler = self.handlers.get(command.name)
        if handler is None:  # the contract knows the name, this gateway does not
            self.rejected += 1
            return CommandAck(id=command.id, ok=False, t_ms=now_ms,
                              reason=f"unsupported command {command.name!r}")
        try:
            result = await handler(command)
        except CommandRejectedError as exc:
            self.rejected += 1
            return CommandAck(id=command.id, ok=False, t_ms=_now_ms(), reason=str(exc)[:500])
        return CommandAck(id=command.id, ok=True, t_ms=_now_ms(), result=result)

    async def _set_rate(self, command: Command) -> dict[str, Any]:
        args = command.args or {}
        unknown = set(args) - {"signal", "rate_hz"}
        if unknown:
            raise CommandRejectedError(f"set_rate: unknown argument(s) {sorted(unknown)}")
        signal, rate = args.get("signal"), args.get("rate_hz")
        if not isinstance(signal, str):
            raise CommandRejectedError("set_rate: argument 'signal' (a signal name) is required")
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise CommandRejectedError("set_rate: argument 'rate_hz' (a number) is required")
        try:
            self.rates.set(signal, float(rate))
        except KeyError:
            raise CommandRejectedError(f"set_rate: unknown signal {signal!r}") from None
        except ValueError as exc:
            raise CommandRejectedError(f"set_rate: {exc}") from None
        return {"signal": signal, "rate_hz": float(rate)}

    async def _read_dtcs(self, command: Command) -> dict[str, Any]:
        if command.args:
            raise CommandRejectedError("read_dtcs takes no arguments")
        if self.read_dtcs is None:
            raise CommandRejectedError("read_dtcs: this gateway has no OBD-II source")
        try:
            dtcs = await asyncio.wait_for(self.read_dtcs(), READ_DTCS_TIMEOUT_S)
        except TimeoutError:
            raise CommandRejectedError("read_dtcs: the vehicle did not answer in time") from None
        except GatewayError as exc:
            raise CommandRejectedError(f"read_dtcs: {exc}") from None
        return {"stored": dtcs["stored"], "pending": dtcs["pending"]}

    async def _report_status(self, command: Command) -> dict[str, Any]:
        if command.args:
            raise CommandRejectedError("report_status takes no arguments")
        self.publish_status()
        status = msgspec.to_builtins(self.status())
        status.pop("v", None)
        result: dict[str, Any] = status
        result["rates_hz"] = {k: v for k, v in self.rates.as_dict().items()
                              if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", k)}
        return result


def _salvage_id(payload: bytes) -> str:
    """The id of a command we cannot decode, if it has a usable one."""
    try:
        data = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return UNPARSABLE_ID
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str) and _ID_RE.match(value):
            return value
    return UNPARSABLE_ID


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
