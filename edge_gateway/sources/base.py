"""What every source shares: health counters, back-off and the thread life cycle."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("edge_gateway.sources")


class SourceHealth:
    """Thread-safe state line and counters of one source, reported in `status`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._state = "starting"
        self._counts: Counter[str] = Counter()

    def set_state(self, state: str) -> None:
        """Replace the one-line state ("connected", "reconnecting in 4 s: ...")."""
        with self._lock:
            self._state = state[:120]

    def count(self, what: str, n: int = 1) -> None:
        """Add to a counter (no_data, malformed, unknown_frames, ...)."""
        with self._lock:
            self._counts[what] += n

    def get(self, what: str) -> int:
        """The value of one counter."""
        with self._lock:
            return self._counts[what]

    def counters(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def summary(self) -> str:
        """State plus non-zero counters, short enough for `Status.sources` (200 chars)."""
        with self._lock:
            counts = " ".join(f"{k}={v}" for k, v in sorted(self._counts.items()) if v)
            text = f"{self._state}; {counts}" if counts else self._state
        return text[:200]


class Backoff:
    """Exponential back-off between reconnect attempts, reset after a good session.

    Each delay is drawn between half and all of the current step ("equal jitter"): after a
    broker restart or a network cut, a fleet's gateways then come back spread over the step
    instead of all at once, and none waits longer than `max_s`."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._next_s = min_s
        self._rng = random.Random()  # noqa: S311 - spreading retries, not a secret

    def next_delay_s(self) -> float:
        """The delay to wait now; doubles the next step up to the maximum."""
        step = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """Back to the minimum delay."""
        self._next_s = self.min_s


class ThreadedSource:
    """Runs `session()` on a daemon thread, again and again, with back-off between failures.

    `session()` returns when the device is gone or misbehaves; any exception it raises is
    logged and counted, never propagated: a bad device must not stop the gateway.
    """

    def __init__(self, name: str, reconnect_min_s: float, reconnect_max_s: float) -> None:
        self.name = name
        self.health = SourceHealth(name)
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.good_session_s = 30.0
        """A session that lasted this long resets the back-off."""

    def session(self) -> None:
        """One connection to the device, until it fails or `stop_event` is set."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the source thread."""
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait for it (bounded)."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            reason = "session ended"
            try:
                self.session()
            except Exception as exc:  # noqa: BLE001 - device libraries raise anything; we retry
                reason = f"{type(exc).__name__}: {exc}"
                self.health.count("errors")
                log.warning("%s: %s", self.name, reason)
            if self.stop_event.is_set():
                break
            if time.monotonic() - started >= self.good_session_s:
                self.backoff.reset()
            delay = self.backoff.next_delay_s()
            self.health.count("reconnects")
            self.health.set_state(f"reconnecting in {delay:.0f} s ({reason})")
            self.stop_event.wait(delay)
        self.health.set_state("stopped")


def sleep_until(stop: threading.Event, deadline: float, wake: Callable[[], bool] | None = None,
                step_s: float = 0.05) -> None:
    """Sleep until the monotonic `deadline`, returning early on stop or when `wake()` is true."""
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (wake is not None and wake()):
            return
        stop.wait(min(remaining, step_s))
