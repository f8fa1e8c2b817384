"""How every long-running `fleet` command stops: SIGTERM or SIGINT -> exit 0, one log line.

SIGTERM is how a supervisor (systemd, `fleet demo`, a container runtime) stops a process;
SIGINT is Ctrl-C, or `kill -INT` sent to the process itself. Both mean "stop now, cleanly".

Handlers are installed explicitly for both signals, even when the process inherited SIGINT as
*ignored*: a POSIX shell starts a background job (`fleet demo &` from a script) with SIGINT
and SIGQUIT set to SIG_IGN, and Python then keeps SIGINT ignored instead of raising
KeyboardInterrupt, so such a process ignored `kill -INT` altogether.

Only the first signal starts the stop; later ones are ignored unless the command says what a
second one does (the gateway and the load generator drain first, and a second signal skips
the drain). So a second Ctrl-C, or the SIGTERM a supervisor sends after the terminal's SIGINT
reached the whole process group, cannot interrupt a clean-up half way by accident.

Standard library only: the gateway imports this module, and it may import no server library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


class StopSignals:
    """Records which signal stopped a command and says so in one line (`report`)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.signum: int | None = None
        """The first SIGTERM/SIGINT received, or None while none came."""

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), or ``""`` when none came."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def install(self, on_stop: Callable[[], object] = _raise_keyboard_interrupt,
                on_again: Callable[[], object] | None = None) -> StopSignals:
        """Process-level handlers: the first signal calls `on_stop` in the main thread (by
        default it raises KeyboardInterrupt there, which the command catches); a later one
        calls `on_again` when given (stop at once), else it is ignored."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self._received(signum, on_stop, on_again)

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        return self

    def install_on_loop(self, loop: asyncio.AbstractEventLoop,
                        on_stop: Callable[[], object] = _raise_keyboard_interrupt,
                        on_again: Callable[[], object] | None = None) -> None:
        """The same for a running asyncio loop: the handlers run as loop callbacks, never in
        the middle of another one. The default `on_stop` raises KeyboardInterrupt out of the
        loop, which is what `aiohttp.web.run_app` takes as a graceful shutdown."""
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._received, sig, on_stop, on_again)

    def serve(self, run_app: Callable[..., object], app: Any,
              logger: logging.Logger | None = None, **kwargs: Any) -> None:
        """Serve an aiohttp `app` with `run_app` (`aiohttp.web.run_app`, passed in: this
        module imports no server library) until the first signal, then `report`.

        Our handlers, not aiohttp's (``handle_signals=False``), so the stop line can say which
        signal came; they move onto the app's loop first thing at start-up, and run_app takes
        the KeyboardInterrupt they raise as a graceful shutdown (open requests get
        `shutdown_timeout`, then the cleanup hooks run).
        """
        self.install()
        app.on_startup.insert(0, self._on_startup)
        with contextlib.suppress(KeyboardInterrupt):  # a signal before the loop ran
            run_app(app, handle_signals=False, **kwargs)
        self.report(logger)

    async def _on_startup(self, _app: object) -> None:
        self.install_on_loop(asyncio.get_running_loop())

    def _received(self, signum: int, on_stop: Callable[[], object],
                  on_again: Callable[[], object] | None) -> None:
        if self.signum is None:
            self.signum = signum
            on_stop()
        elif on_again is not None:
            on_again()

    def line(self, reason: str = "") -> str:
        """The one stop line, e.g. ``fleet stream: stopped by SIGTERM``; `reason` says why
        when no signal came (``after --duration-s 60``)."""
        why = f" by {self.name}" if self.signum is not None else f" {reason}" if reason else ""
        return f"fleet {self.command}: stopped{why}"

    def report(self, logger: logging.Logger | None = None, *, reason: str = "") -> None:
        """Write the stop line at INFO with `logger`, or to stderr when there is none or it
        has no handler yet (a signal during start-up); then ignore any further signal, so
        nothing interrupts the exit that follows."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if logger is not None and logger.hasHandlers():
            logger.info(self.line(reason))
        else:
            print(self.line(reason), file=sys.stderr, flush=True)
