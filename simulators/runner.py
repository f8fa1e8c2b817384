"""Step a vehicle model in real time from a background thread (for the device front-ends)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from simulators.vehicle import VehicleModel


class RealtimeDriver:
    """Advances `model` by the wall-clock time elapsed, every `step_s` seconds.

    `speedup` > 1 runs simulated time faster than the wall clock (a 10-minute scenario in one
    minute with 10). A context manager; `stop()` is idempotent.
    """

    def __init__(self, model: VehicleModel, *, step_s: float = 0.1, speedup: float = 1.0) -> None:
        if step_s <= 0 or speedup <= 0:
            raise ValueError("step_s and speedup must be positive")
        self.model = model
        self.step_s = step_s
        self.speedup = speedup
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start stepping."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="RealtimeDriver",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop stepping (the model keeps its state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> RealtimeDriver:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.step_s):
            now = time.monotonic()
            self.model.step((now - last) * self.speedup)
            last = now
