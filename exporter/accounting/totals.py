"""Sums over measured intervals: the one place where an interval is added to (or taken from) a total.

A server's cumulative figures, its windowed figures and its load-band figures are all `Totals`:
the cumulative ones only ever add an interval; a window adds each interval as it is settled and
takes it away when it leaves the window (`SlidingTotals`), so reading a window costs the same
whatever its length. The rules live in `Totals.add` alone: an unmeasured interval counts for
nothing, an idle one adds to the idle sums too and belongs to no band.

Sums are held as integers in billionths (nanojoules, nanoseconds, billionths of a token): taking
away an interval subtracts exactly what adding it added, so running sums never drift, however
long they run, and a window that emptied reads exactly zero. Rounding each value to a billionth
changes a figure by at most a billionth of a unit per interval. A figure is read in its unit
through `Scaled`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:  # the ledger keeps its totals here: a runtime import would be circular
    from exporter.accounting.ledger import Interval

BandOf = Callable[[float], str]
K = TypeVar("K")
SCALE = 1e9
"""Units per integer step of a sum: values are held in billionths."""


def fixed(value: float) -> int:
    """`value` in billionths, as the sums hold it."""
    return round(value * SCALE)


class Scaled:
    """A figure in its unit, read from the sum in billionths that the attribute `name` holds."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Scaled: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> float: ...

    def __get__(self, instance: object, owner: type | None = None) -> Scaled | float:
        if instance is None:
            return self
        total: int = getattr(instance, self.name)
        return total / SCALE


class Sums:
    """Energy and tokens of one model (or one model's band) over a set of measured intervals."""

    __slots__ = ("_energy", "_idle_energy", "_input", "_output", "intervals")

    energy_j = Scaled("_energy")
    idle_energy_j = Scaled("_idle_energy")
    input_tokens = Scaled("_input")
    output_tokens = Scaled("_output")

    def __init__(self) -> None:
        self._energy = self._idle_energy = self._input = self._output = 0
        self.intervals = 0

    def add(self, energy: int, inputs: int, outputs: int, idle: bool, sign: int) -> None:
        self.intervals += sign
        self._energy += sign * energy
        self._input += sign * inputs
        self._output += sign * outputs
        if idle:
            self._idle_energy += sign * energy


class Totals:
    """A server's sums over a set of measured intervals: its own, each model's, each model-band's."""

    __slots__ = ("_energy", "_idle_energy", "_idle_time", "_time", "bands", "intervals", "models")

    energy_j = Scaled("_energy")
    measured_s = Scaled("_time")
    idle_energy_j = Scaled("_idle_energy")
    idle_s = Scaled("_idle_time")

    def __init__(self) -> None:
        self._energy = self._time = self._idle_energy = self._idle_time = 0
        self.intervals = 0
        self.models: dict[str | None, Sums] = {}
        self.bands: dict[tuple[str | None, str], Sums] = {}

    def add(self, interval: Interval, band_of: BandOf, sign: int = 1) -> None:
        """Add (`sign` 1) or take away (`sign` -1) one interval; an unmeasured one counts for nothing."""
        if interval.energy_j is None:
            return
        idle = interval.idle
        energy, duration = fixed(interval.energy_j), fixed(interval.duration_s)
        self.intervals += sign
        self._energy += sign * energy
        self._time += sign * duration
        if idle:
            self._idle_energy += sign * energy
            self._idle_time += sign * duration
        for part in interval.models:
            part_j = fixed(part.energy_j or 0.0)
            inputs, outputs = fixed(part.input_tokens), fixed(part.output_tokens)
            _add(self.models, part.model, part_j, inputs, outputs, idle, sign)
            if not idle and part.running is not None:
                _add(self.bands, (part.model, band_of(part.running)), part_j, inputs, outputs, False, sign)

    def forget(self, model: str | None) -> None:
        """Drop a model and its bands (it expired from the accounting)."""
        self.models.pop(model, None)
        for key in [k for k in self.bands if k[0] == model]:
            del self.bands[key]


def _add(sums: dict[K, Sums], key: K, energy: int, inputs: int, outputs: int, idle: bool, sign: int) -> None:
    entry = sums.get(key)
    if entry is None:
        entry = sums[key] = Sums()
    entry.add(energy, inputs, outputs, idle, sign)
    if entry.intervals == 0:
        del sums[key]


def totals_of(intervals: Iterable[Interval], band_of: BandOf) -> Totals:
    totals = Totals()
    for interval in intervals:
        totals.add(interval, band_of)
    return totals


class SlidingTotals:
    """The sums over the intervals that ended in (now - window, now], kept as intervals arrive and leave."""

    __slots__ = ("_band_of", "_intervals", "totals", "window_s")

    def __init__(self, window_s: float, band_of: BandOf) -> None:
        self.window_s = window_s
        self.totals = Totals()
        self._band_of = band_of
        self._intervals: deque[Interval] = deque()

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
        return self.totals
