"""Load bands: J/token compared at like-for-like load.

J/token falls steeply as a server batches more requests, so a drop in traffic raises it even when
nothing regressed. Grouping intervals by the number of requests running makes regressions
comparable: the same band before and after a change. Idle intervals belong to no band.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

DEFAULT_BAND_BOUNDS: tuple[int, ...] = (4, 16, 64, 256)


@dataclass(frozen=True, slots=True)
class LoadBands:
    """Bands of concurrent running requests, given by their inclusive upper bounds."""

    bounds: tuple[int, ...] = DEFAULT_BAND_BOUNDS
    labels: tuple[str, ...] = field(init=False, compare=False, repr=False)
    """Label values: `1-4`, `5-16`, …, and an open last band such as `257+` (built once)."""

    def __post_init__(self) -> None:
        if any(b < 1 for b in self.bounds) or list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"load band bounds must be ascending positive integers, got {list(self.bounds)}")
        lows = (1, *(b + 1 for b in self.bounds))
        closed = tuple(
            f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in zip(lows, self.bounds, strict=False)
        )
        object.__setattr__(self, "labels", (*closed, f"{lows[-1]}+"))

    def band_of(self, running: float) -> str:
        """The band of an interval with `running` requests in flight (at least one: it did work)."""
        return self.labels[bisect_left(self.bounds, max(1, math.ceil(running)))]
