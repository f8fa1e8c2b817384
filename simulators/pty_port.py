"""A pseudo-terminal served from a background thread: the "serial port" of every front-end.

The slave side is what a client opens (`port`); the server keeps its own slave descriptor open
so the port survives clients closing and reopening it, and sets it raw so no line discipline
rewrites CR/LF or echoes bytes. With `link_path`, a symlink points at the current slave, which
lets a client reconnect by name after the port was dropped and recreated.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from simulators.errors import FrontEndError

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S: Final = 1.0
"""Overflow policy: a client that reads nothing for this long loses the rest of the write,
as bytes are lost when a real UART's buffer overflows."""


class PtyServer:
    """Base of the pty front-ends: override `on_input` and/or `on_tick`."""

    tick_s: float = 0.1
    """How often `on_tick` runs (seconds)."""
    backlog_limit_bytes: int | None = None
    """For streaming devices: when more than this many bytes wait unread at the client's end,
    they are discarded before the next write (a UART overrun), so a client that opens the
    port late or stalls never reads stale data. None keeps everything (request/response)."""

    def __init__(self, *, link_path: str | Path | None = None) -> None:
        self.link_path = Path(link_path) if link_path else None
        self._master = -1
        self._slave = -1
        self._slave_path = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self._dropped_until = 0.0

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The path a client opens: the symlink if one was asked for, else the pty slave."""
        return str(self.link_path) if self.link_path else self._slave_path

    @property
    def is_open(self) -> bool:
        """Whether the pty exists now (False while dropped)."""
        return self._master >= 0

    def start(self) -> str:
        """Open the pty, start serving from a background thread; returns the port path."""
        if self._thread is not None:
            return self.port
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and close the pty (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close_pty()
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def drop(self, duration_s: float) -> None:
        """Unplug the device: close the pty now, recreate it after `duration_s`."""
        with self._io_lock:
            self._close_pty()
            self._dropped_until = time.monotonic() + duration_s

    # ---- hooks -----------------------------------------------------------------------------

    def on_input(self, data: bytes) -> None:
        """Bytes the client wrote."""

    def on_tick(self, now: float) -> None:
        """Called every `tick_s` seconds (monotonic clock)."""

    def on_reopen(self) -> None:
        """The pty was recreated after a drop."""

    # ---- I/O -------------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Write to the client; False when the port is closed or the bytes were dropped."""
        with self._io_lock:
            fd = self._master
            if fd < 0:
                return False
            if self.backlog_limit_bytes is not None:
                self._discard_backlog(self.backlog_limit_bytes)
            view = memoryview(data)
            deadline = time.monotonic() + WRITE_TIMEOUT_S
            while view:
                try:
                    n = os.write(fd, view)
                    view = view[n:]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    select.select([], [fd], [], min(left, 0.05))
                except OSError:
                    return False
            return True

    def _discard_backlog(self, limit: int) -> None:
        try:
            waiting = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0" * 4))[0]
            if waiting > limit:
                termios.tcflush(self._slave, termios.TCIFLUSH)
        except OSError:
            return  # the port is being dropped; the write below fails and says so

    def _serve(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if self._master < 0:
                if now >= self._dropped_until:
                    with self._io_lock:
                        self._open_pty()
                    self.on_reopen()
                else:
                    self._stop.wait(min(0.05, self._dropped_until - now))
                    continue
            timeout = max(0.0, min(next_tick - now, 0.05))
            try:
                readable, _, _ = select.select([self._master], [], [], timeout)
            except (OSError, ValueError):
                continue  # the pty was closed by drop(); the loop reopens it
            if readable:
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno not in (errno.EIO, errno.EBADF):
                        raise
                    data = b""
                if data:
                    self._guarded(self.on_input, data)
            now = time.monotonic()
            if now >= next_tick:
                self._guarded(self.on_tick, now)
                next_tick = max(next_tick + self.tick_s, now)

    def _guarded(self, hook: Callable[[Any], None], arg: Any) -> None:
        # a bug in one answer must not kill the device for the rest of a test run
        try:
            hook(arg)
        except Exception:
            log.exception("%s: %s failed", type(self).__name__, hook.__name__)

    def _open_pty(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise FrontEndError(f"cannot open a pseudo-terminal: {exc}") from exc
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_path)
            tmp.replace(self.link_path)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port!r})"
