"""Sums over measured intervals: the one place where an interval is added to (or taken from) a total.

A server's cumulative figures, its windowed figures and its load-band figures are all `Totals`:
the cumulative ones only ever add an interval; a window adds each interval as it is settled and
takes it away when it leaves the window (`SlidingTotals`), so reading a window costs the same
whatever its length. The rules live in `Totals.add` alone: an unmeasured interval counts for
nothing, an idle one adds to the idle sums too and belongs to no band.

Taking intervals away leaves float round-off behind. Each sum counts its intervals and is set to
exactly zero when the count falls to zero (an emptied window shows 0, not 1e-13), and a window is
re-based (summed afresh from its intervals) once as many intervals have left it as it holds, so
the error stays that of summing one window's worth of values, at an amortised constant cost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the ledger keeps its totals here: a runtime import would be circular
    from exporter.accounting.ledger import Interval

BandOf = Callable[[float], str]
K = TypeVar("K")


class Sums:
    """Energy and tokens of one model (or one model's band) over a set of measured intervals."""

    __slots__ = ("energy_j", "idle_energy_j", "idle_intervals", "input_tokens", "intervals", "output_tokens")

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.idle_energy_j = 0.0
        self.input_tokens = 0.0
        self.output_tokens = 0.0
        self.intervals = 0
        self.idle_intervals = 0

    def add(self, energy_j: float, input_tokens: float, output_tokens: float, idle: bool, sign: int) -> None:
        self.intervals += sign
        self.energy_j += sign * energy_j
        self.input_tokens += sign * input_tokens
        self.output_tokens += sign * output_tokens
        if idle:
            self.idle_intervals += sign
            self.idle_energy_j += sign * energy_j
            if self.idle_intervals == 0:
                self.idle_energy_j = 0.0


class Totals:
    """A server's sums over a set of measured intervals: its own, each model's, each model-band's."""

    __slots__ = ("bands", "energy_j", "idle_energy_j", "idle_intervals", "idle_s", "intervals",
                 "measured_s", "models")

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.measured_s = 0.0
        self.idle_energy_j = 0.0
        self.idle_s = 0.0
        self.intervals = 0
        self.idle_intervals = 0
        self.models: dict[str | None, Sums] = {}
        self.bands: dict[tuple[str | None, str], Sums] = {}

    def add(self, interval: Interval, band_of: BandOf, sign: int = 1) -> None:
        """Add (`sign` 1) or take away (`sign` -1) one interval; an unmeasured one counts for nothing."""
        energy_j = interval.energy_j
        if energy_j is None:
            return
        idle, duration_s = interval.idle, interval.duration_s
        self.intervals += sign
        self.energy_j += sign * energy_j
        self.measured_s += sign * duration_s
        if idle:
            self.idle_intervals += sign
            self.idle_energy_j += sign * energy_j
            self.idle_s += sign * duration_s
        for part in interval.models:
            part_j = part.energy_j or 0.0
            _add(self.models, part.model, part_j, part.input_tokens, part.output_tokens, idle, sign)
            if not idle and part.running is not None:
                key = (part.model, band_of(part.running))
                _add(self.bands, key, part_j, part.input_tokens, part.output_tokens, False, sign)
        if self.idle_intervals == 0:
            self.idle_energy_j = self.idle_s = 0.0
        if self.intervals == 0:
            self.energy_j = self.measured_s = 0.0

    def forget(self, model: str | None) -> None:
        """Drop a model and its bands (it expired from the accounting)."""
        self.models.pop(model, None)
        for key in [k for k in self.bands if k[0] == model]:
            del self.bands[key]


def _add(
    sums: dict[K, Sums], key: K, energy_j: float, inputs: float, outputs: float, idle: bool, sign: int
) -> None:
    entry = sums.get(key)
    if entry is None:
        entry = sums[key] = Sums()
    entry.add(energy_j, inputs, outputs, idle, sign)
    if entry.intervals == 0:
        del sums[key]


def totals_of(intervals: Iterable[Interval], band_of: BandOf) -> Totals:
    totals = Totals()
    for interval in intervals:
        totals.add(interval, band_of)
    return totals


class SlidingTotals:
    """The sums over the intervals that ended in (now - window, now], kept as intervals arrive and leave."""

    __slots__ = ("_band_of", "_intervals", "_removed", "totals", "window_s")

    def __init__(self, window_s: float, band_of: BandOf) -> None:
        self.window_s = window_s
        self.totals = Totals()
        self._band_of = band_of
        self._intervals: deque[Interval] = deque()
        self._removed = 0

    def add(self, interval: Interval) -> None:
        if interval.energy_j is None:
            return
        self._intervals.append(interval)
        self.totals.add(interval, self._band_of)

    def advance(self, now: float) -> Totals:
        """Take away the intervals that ended at or before `now - window`; the sums at `now`."""
        start, intervals = now - self.window_s, self._intervals
        while intervals and intervals[0].t_end <= start:
            self.totals.add(intervals.popleft(), self._band_of, -1)
            self._removed += 1
        if self._removed and self._removed >= len(intervals):
            self.totals = totals_of(intervals, self._band_of)
            self._removed = 0
        return self.totals
