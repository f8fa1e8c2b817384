"""New diagnostic trouble codes: codes reported now that the previous report did not contain."""

from __future__ import annotations

from collections.abc import Sequence

from stream.detectors.common import vehicle_event
from stream.detectors.config import DetectorSettings
from stream.model import Event, Reading


class DtcDetector:
    """Emits one `dtc_new` event listing the codes that were not in the previous report.

    State: the set of codes of the last reading that carried a DTC list (None before the
    first). A reading without a DTC list says nothing and leaves it unchanged; an empty list
    means the codes were cleared, so a code reported again afterwards is new again. All new
    codes of one reading share one event (the events table is unique per type and time).
    """

    name = "dtc"
    ticks = False

    def __init__(self, settings: DetectorSettings) -> None:
        del settings  # no thresholds: a code is either new or not

    def initial_state(self) -> frozenset[str] | None:
        """No report seen yet."""
        return None

    def on_reading(self, state: frozenset[str] | None,
                   reading: Reading) -> tuple[frozenset[str] | None, Sequence[Event]]:
        """Compare the reading's DTC list with the previous report."""
        codes = reading.sample.dtcs
        if codes is None:
            return state, ()
        now = frozenset(codes)
        new = now - (state or frozenset())
        if not new:
            return now, ()
        event = vehicle_event(reading, "dtc_new", severity="warning", value=float(len(new)),
                              details={"codes": sorted(new), "reported": sorted(now)})
        return now, (event,)

    def on_tick(self, state: frozenset[str] | None,
                now_ms: int) -> tuple[frozenset[str] | None, Sequence[Event]]:
        """Nothing happens on time alone."""
        return state, ()
