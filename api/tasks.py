"""Background tasks of the API process, stopped within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

log = logging.getLogger("api.tasks")

STOP_TIMEOUT_S = 5.0
"""How long a stopping task may take to unwind (its `finally` closes connections)."""


async def cancel_and_wait(task: asyncio.Task[None], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel `task` and wait for it, at most `timeout_s`: a shutdown never hangs on a
    connection that does not close (redis-py's pub/sub close can wait on a socket that a
    server-side kill left half-closed)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("task %s did not stop within %.0f s; left behind", task.get_name(),
                    timeout_s)
        return
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


async def bounded(closing: Awaitable[object], timeout_s: float = 2.0) -> None:
    """Await a close that may hang (a dead connection), at most `timeout_s`; errors ignored."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, timeout_s)
