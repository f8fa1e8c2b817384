"""An ELM327 v1.5 adapter on a pseudo-terminal, wired to a simulated ISO 15765-4 vehicle.

`Elm327Interpreter` is the adapter itself (bytes in, bytes out, no I/O): the AT command set,
echo/linefeed/space/header settings, protocol search, and OBD-II responses formatted the way
a real ELM327 prints CAN frames:

* headers on:  ``7E8 06 41 00 BE 3F A8 13`` - every frame with its CAN id, the ISO-TP PCI byte
  and all 8 data bytes (padding included); multi-frame answers as one line per frame;
* headers off: ``41 0D 32`` - the payload only; multi-frame answers as a byte count line
  (``014``) then ``0: ...``, ``1: ...`` lines (CAN auto-formatting, the default);
* ``NO DATA`` when the ECU stays silent, ``?`` for commands it does not understand,
  ``SEARCHING...`` on the first request in automatic protocol mode, and each answer ends with
  an empty line and the ``>`` prompt.

`Elm327Emulator(model)` serves the interpreter on a pty from a background thread and can be
told to misbehave for the gateway's robustness tests.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from simulators import isotp
from simulators.obd_ecu import ObdEcu
from simulators.pty_port import PtyServer
from simulators.vehicle import VehicleModel

VERSION: Final = "ELM327 v1.5"
DEVICE_DESCRIPTION: Final = "OBDII to RS232 Interpreter"
PROMPT: Final = b">"

PROTOCOL_NAMES: Final = {
    "0": "AUTO", "1": "SAE J1850 PWM", "2": "SAE J1850 VPW", "3": "ISO 9141-2",
    "4": "ISO 14230-4 (KWP 5BAUD)", "5": "ISO 14230-4 (KWP FAST)",
    "6": "ISO 15765-4 (CAN 11/500)", "7": "ISO 15765-4 (CAN 29/500)",
    "8": "ISO 15765-4 (CAN 11/250)", "9": "ISO 15765-4 (CAN 29/250)",
    "A": "SAE J1939 (CAN 29/250)", "B": "USER1 CAN (11* /125)", "C": "USER2 CAN (11* /50)",
}
VEHICLE_PROTOCOLS: Final = ("6", "7")
"""The simulated vehicle speaks CAN at 500 kbit/s; 11-bit (6) and 29-bit (7) ids both work."""
_CAN_OTHER_SPEED: Final = frozenset("89ABC")

ECU_RESPONSE_ID_11: Final = 0x7E8
ECU_RESPONSE_ID_29: Final = 0x18DAF110
_ACCEPTED_HEADERS: Final = frozenset({"7DF", "7E0", "18DB33F1", "18DA10F1"})

Misbehaviour = Literal["no_data", "garbage", "reset", "silence", "drop"]
MISBEHAVIOURS: Final[tuple[str, ...]] = ("no_data", "garbage", "reset", "silence", "drop")


@dataclass
class _Settings:
    echo: bool = True
    linefeeds: bool = False
    spaces: bool = True
    headers: bool = False
    dlc: bool = False
    can_auto_format: bool = True
    header: str = "7DF"


class Elm327Interpreter:
    """The adapter's behaviour: feed it the bytes a client writes, get the bytes it answers."""

    def __init__(self, ecu: ObdEcu, *, clock: Callable[[], float] = time.monotonic,
                 seed: int = 0) -> None:
        self.ecu = ecu
        self.clock = clock
        self.settings = _Settings()
        self.protocol = "0"
        self.auto = True
        self.connected = False
        self._buffer = bytearray()
        self._last = ""
        self._misbehaviour: str | None = None
        self._misbehave_until = 0.0
        self._rng = random.Random(seed)  # noqa: S311 - junk for tests, not secrets
        self.commands = 0
        """Number of command lines processed (for tests and benchmarks)."""
        self._at: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[str]]]] = [
            (re.compile(p), h) for p, h in self._at_table()]

    # ---- misbehaviour ----------------------------------------------------------------------

    def misbehave(self, mode: str, duration_s: float) -> None:
        """Answer badly for `duration_s` seconds (``reset`` fires once, on the next request)."""
        if mode not in MISBEHAVIOURS or mode == "drop":
            raise ValueError(f"unknown misbehaviour {mode!r}")
        self._misbehaviour = mode
        self._misbehave_until = self.clock() + duration_s

    def _current_misbehaviour(self) -> str | None:
        if self._misbehaviour and self.clock() >= self._misbehave_until:
            self._misbehaviour = None
        return self._misbehaviour

    # ---- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Process client bytes; returns everything the adapter writes back."""
        out = bytearray()
        for byte in data:
            if byte == 0x0D:
                raw = self._buffer.decode("latin-1")
                self._buffer.clear()
                out += self._line(raw)
            elif byte in (0x0A, 0x00):
                continue  # the ELM327 ignores line feeds and NULs
            elif len(self._buffer) < 256:
                self._buffer.append(byte)
        return bytes(out)

    def _eol(self) -> str:
        return "\r\n" if self.settings.linefeeds else "\r"

    def _line(self, raw: str) -> bytes:
        self.commands += 1
        misbehaviour = self._current_misbehaviour()
        if misbehaviour == "silence":
            return b""
        echo = raw + self._eol() if self.settings.echo else ""
        command = raw.replace(" ", "").upper()
        if not command:
            command = self._last  # a bare CR repeats the last command
        if not command.isascii() or not command.isprintable():
            lines = ["?"]
        elif command.startswith("AT"):
            lines = self._at_command(command[2:])
        else:
            lines = self._obd_request(command, misbehaviour)
            self._last = command
        eol = self._eol()
        text = echo + "".join(line + eol for line in lines) + eol
        if misbehaviour == "reset" and not command.startswith("AT"):
            # power glitch mid-answer: half a line, then the power-on banner and defaults
            self._misbehaviour = None
            self._reset()
            text = text[: max(1, len(text) // 3)] + "\r\r" + VERSION + "\r\r"
        return text.encode("latin-1") + PROMPT

    # ---- AT commands -----------------------------------------------------------------------

    def _reset(self) -> None:
        self.settings = _Settings()
        self.connected = False

    def _ok(self, _m: re.Match[str]) -> list[str]:
        return ["OK"]

    def _flag(self, name: str) -> Callable[[re.Match[str]], list[str]]:
        def handler(m: re.Match[str]) -> list[str]:
            setattr(self.settings, name, m.group(1) == "1")
            return ["OK"]
        return handler

    def _at_table(self) -> list[tuple[str, Callable[[re.Match[str]], list[str]]]]:
        return [
            (r"Z", self._at_reset),
            (r"WS", self._at_reset),
            (r"D", self._at_defaults),
            (r"E([01])", self._flag("echo")),
            (r"L([01])", self._flag("linefeeds")),
            (r"S([01])", self._flag("spaces")),
            (r"H([01])", self._flag("headers")),
            (r"D([01])", self._flag("dlc")),
            (r"CAF([01])", self._flag("can_auto_format")),
            (r"I", lambda _m: [VERSION]),
            (r"@1", lambda _m: [DEVICE_DESCRIPTION]),
            (r"RV", lambda _m: [f"{self.ecu.model.state.battery_v:.1f}V"]),
            (r"DP", self._at_describe_protocol),
            (r"DPN", self._at_describe_protocol_number),
            (r"(?:SP|TP)(A?)([0-9A-C])", self._at_set_protocol),
            (r"SH([0-9A-F]{3}|[0-9A-F]{6}|[0-9A-F]{8})", self._at_set_header),
            (r"ST[0-9A-F]{2}", self._ok),
            (r"AT[012]", self._ok),
            (r"M[01]|AL|NL|PC|LP|BI|CFC[01]|CSM[01]|R[01]|V[01]|KW[01]|JE|JS|CEA", self._ok),
            (r"CRA[0-9A-FX]{3,8}|FCS[HDM][0-9A-F]+|CP[0-9A-F]{2}|CF[0-9A-F]{3,8}", self._ok),
            (r"CM[0-9A-F]{3,8}|SW[0-9A-F]{2}|WM[0-9A-F]+|IB(?:10|48|96)|IIA[0-9A-F]{2}", self._ok),
        ]

    def _at_command(self, body: str) -> list[str]:
        for pattern, handler in self._at:
            match = pattern.fullmatch(body)
            if match:
                return handler(match)
        return ["?"]

    def _at_reset(self, _m: re.Match[str]) -> list[str]:
        self._reset()
        return ["", "", VERSION]

    def _at_defaults(self, _m: re.Match[str]) -> list[str]:
        self._reset()
        return ["OK"]

    def _at_describe_protocol(self, _m: re.Match[str]) -> list[str]:
        name = PROTOCOL_NAMES[self.protocol]
        return [f"AUTO, {name}" if self.auto and self.protocol != "0" else name]

    def _at_describe_protocol_number(self, _m: re.Match[str]) -> list[str]:
        return [("A" if self.auto and self.protocol != "0" else "") + self.protocol]

    def _at_set_protocol(self, m: re.Match[str]) -> list[str]:
        self.auto = m.group(1) == "A" or m.group(2) == "0"
        self.protocol = m.group(2)
        self.connected = False
        return ["OK"]

    def _at_set_header(self, m: re.Match[str]) -> list[str]:
        self.settings.header = m.group(1)
        return ["OK"]

    # ---- OBD requests ----------------------------------------------------------------------

    def _obd_request(  # noqa: PLR0911 - one return per message the adapter can print
            self, command: str, misbehaviour: str | None) -> list[str]:
        if not re.fullmatch(r"[0-9A-F]+", command):
            return ["?"]
        if len(command) % 2:  # a trailing digit says how many responses to wait for
            command = command[:-1]
        request = bytes.fromhex(command)
        if not request or len(request) > 7:
            return ["?"]
        prefix: list[str] = []
        if self.protocol == "0" or (self.auto and not self.connected):
            prefix = ["SEARCHING..."]
            if not self.ecu.available():
                return [*prefix, "UNABLE TO CONNECT"]
            self.protocol = self.protocol if self.protocol in VEHICLE_PROTOCOLS else "6"
        elif self.protocol in _CAN_OTHER_SPEED:
            return ["CAN ERROR"]
        elif self.protocol not in VEHICLE_PROTOCOLS:
            return ["BUS INIT: ...ERROR"] if self.protocol in "345" else ["UNABLE TO CONNECT"]
        self.connected = True
        if misbehaviour == "no_data":
            return [*prefix, "NO DATA"]
        if misbehaviour == "garbage":
            return [*prefix, *self._garbage()]
        if self.settings.header not in _ACCEPTED_HEADERS:
            return [*prefix, "NO DATA"]
        payload = self.ecu.respond(request)
        if payload is None:
            return [*prefix, "NO DATA"]
        return [*prefix, *self._format(isotp.segment(payload), len(payload))]

    def _garbage(self) -> list[str]:
        rng = self._rng
        alphabet = "0123456789ABCDEF GHXZ:#!\x7f"
        lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
                 for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            lines.append("7E8 10 14 49 02")  # a first frame whose continuation never comes
        return lines

    def _format(self, frames: list[bytes], length: int) -> list[str]:
        s = self.settings
        sep = " " if s.spaces else ""

        def hexes(data: bytes) -> str:
            return sep.join(f"{b:02X}" for b in data)

        if s.headers:
            if self.protocol == "7":
                raw = f"{ECU_RESPONSE_ID_29:08X}"
                header = sep.join(raw[i:i + 2] for i in range(0, 8, 2))
            else:
                header = f"{ECU_RESPONSE_ID_11:03X}"
            dlc = f"{sep}8" if s.dlc else ""
            return [f"{header}{dlc}{sep}{hexes(f)}" for f in frames]
        if not s.can_auto_format:
            return [hexes(f) for f in frames]
        if len(frames) == 1:
            return [hexes(frames[0][1:1 + length])]
        lines = [f"{length:03X}"]
        remaining = length
        for index, frame in enumerate(frames):
            data = frame[2:] if index == 0 else frame[1:]
            data = data[:remaining]
            remaining -= len(data)
            colon = ": " if s.spaces else ":"
            lines.append(f"{index & 0x0F:X}{colon}{hexes(data)}")
        return lines


class Elm327Emulator(PtyServer):
    """An ELM327 on a pty; a context manager whose ``__enter__`` returns the port path.

    The adapter answers like a real one while the model's vehicle is online; during an
    `offline` fault it is silent (as an unpowered Bluetooth adapter would be).
    """

    def __init__(self, model: VehicleModel, *, link_path: str | Path | None = None,
                 response_delay_s: float = 0.0) -> None:
        super().__init__(link_path=link_path)
        self.model = model
        self.interpreter = Elm327Interpreter(ObdEcu(model), seed=model.seed)
        self.response_delay_s = response_delay_s
        self._lock = threading.Lock()

    def misbehave(self, mode: Misbehaviour, duration_s: float) -> None:
        """Misbehave for `duration_s`: ``no_data`` (every OBD request), ``garbage`` (junk
        lines), ``reset`` (reboots mid-answer once, settings back to defaults), ``silence``
        (reads but never answers) or ``drop`` (the port disappears and comes back)."""
        if mode == "drop":
            self.drop(duration_s)
            return
        with self._lock:
            self.interpreter.misbehave(mode, duration_s)

    def on_input(self, data: bytes) -> None:
        """Answer the client (nothing while the vehicle's device is offline)."""
        if not self.model.state.online:
            return
        with self._lock:
            out = self.interpreter.feed(data)
        if out:
            if self.response_delay_s:
                time.sleep(self.response_delay_s)
            self.write(out)
