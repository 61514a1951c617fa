"""Per-GPU energy series on which token instants are placed.

Each GPU keeps a short history of reset-corrected cumulative energy. The energy at an instant is
interpolated linearly between the readings just before and just after it, never extrapolated:
until a reading after the instant exists, the instant is not yet measurable. Readings further
apart than the gap limit do not bracket anything: no energy is invented across a gap.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

from exporter.accounting.counters import ResetCounter
from exporter.model import Gpu, GpuSample


class EnergyTrack:
    """The reset-corrected energy history of one GPU."""

    def __init__(self, gpu: Gpu, retain_s: float) -> None:
        self.gpu = gpu
        self.counter = ResetCounter()
        self.power_w: float | None = None
        self._retain_s = retain_s
        self._t: deque[float] = deque()
        self._e: deque[float] = deque()

    @property
    def energy_j(self) -> float:
        """Energy measured since the first reading (joules, never decreasing)."""
        return self.counter.total

    @property
    def latest_t(self) -> float | None:
        return self._t[-1] if self._t else None

    def add(self, sample: GpuSample) -> bool:
        """Record a reading; return True when it revealed a counter reset.

        Readings not newer than the latest are ignored: sources that refresh slower than we poll
        repeat their last value and timestamp.
        """
        if self._t and sample.t <= self._t[-1]:
            return False
        resets = self.counter.resets
        self.counter.observe(sample.energy_j)
        self.power_w = sample.power_w
        self._t.append(sample.t)
        self._e.append(self.counter.total)
        while len(self._t) > 2 and self._t[1] < sample.t - self._retain_s:
            self._t.popleft()
            self._e.popleft()
        return self.counter.resets != resets

    def covers(self, t: float) -> bool:
        """True once a reading at or after `t` exists, so `t` can be interpolated."""
        return bool(self._t) and self._t[-1] >= t

    def energy_at(self, t: float, gap_limit_s: float) -> float | None:
        """Cumulative energy at `t`, or None where readings do not bracket `t` within the gap limit."""
        if not self._t or t > self._t[-1] or t < self._t[0]:
            return None
        i = bisect_left(self._t, t)
        t1, e1 = self._t[i], self._e[i]
        if t1 == t:
            return e1
        t0, e0 = self._t[i - 1], self._e[i - 1]
        if t1 - t0 > gap_limit_s:
            return None
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0)
