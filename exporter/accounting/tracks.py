"""Per-GPU energy series on which token instants are placed.

Each GPU keeps a short history of reset-corrected cumulative energy. The energy at an instant is
interpolated linearly between the readings just before and just after it, never extrapolated:
until a reading after the instant exists, the instant is not yet measurable. Readings further
apart than the gap limit do not bracket anything: no energy is invented across a gap.

A counter reset is treated like a gap for attribution: the energy used between the last reading
before the reset and the reset itself is unknown (the counter only tells what it counted since),
so a stretch of time that overlaps it cannot be measured. The GPU's own total still follows
Prometheus semantics (the increment across a reset is the value after it).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque

from exporter.accounting.counters import ResetCounter
from exporter.accounting.gate import energy_limit_j
from exporter.values import Gpu, GpuSample


class EnergyTrack:
    """The reset-corrected energy history of one GPU.

    The series starts at zero at the first reading, so `energy_at(t)` is the energy the GPU used
    between its first reading and `t`.
    """

    def __init__(self, gpu: Gpu) -> None:
        self.gpu = gpu
        self.counter = ResetCounter()
        self.power_w: float | None = None
        self.first_t: float | None = None
        self._t: deque[float] = deque()
        self._e: deque[float] = deque()
        self._reset: deque[bool] = deque()
        """Whether the counter was reset between the previous reading and this one."""

    @property
    def energy_j(self) -> float:
        """Energy measured since the first reading (joules, never decreasing)."""
        return self.counter.total

    def __len__(self) -> int:
        """Readings held."""
        return len(self._t)

    @property
    def latest_t(self) -> float | None:
        return self._t[-1] if self._t else None

    def add(self, sample: GpuSample) -> bool:
        """Record a reading; return True when it revealed a counter reset.

        Readings not newer than the latest are ignored: sources that refresh slower than we poll
        repeat their last value and timestamp. An increase beyond what a GPU can draw since the
        previous reading (a counter jump) re-bases the counter and, like a reset, is a gap.
        """
        if self._t and sample.t <= self._t[-1]:
            return False
        resets, jumps = self.counter.resets, self.counter.jumps
        self.counter.observe(sample.energy_j, energy_limit_j(sample.t - self._t[-1]) if self._t else 0.0)
        self.power_w = sample.power_w
        if self.first_t is None:
            self.first_t = sample.t
        reset = self.counter.resets != resets
        self._reset.append(reset or self.counter.jumps != jumps)
        self._t.append(sample.t)
        self._e.append(self.counter.total)
        return reset

    def reading_t(self, index: int) -> float:
        """Instant of the reading at `index` (negative: from the latest); -inf where there is none."""
        try:
            return self._t[index]
        except IndexError:
            return -math.inf

    def forget_before(self, t: float) -> None:
        """Drop readings no longer needed to interpolate at instants from `t` on."""
        while len(self._t) > 2 and self._t[1] <= t:
            self._t.popleft()
            self._e.popleft()
            self._reset.popleft()

    def covers(self, t: float) -> bool:
        """True once a reading at or after `t` exists, so `t` can be interpolated."""
        return bool(self._t) and self._t[-1] >= t

    def energy_at(self, t: float, gap_limit_s: float) -> float | None:
        """Cumulative energy at `t`, or None where readings do not bracket `t` within the gap limit."""
        bracket = self._bracket(t)
        if bracket is None:
            return None
        t0, e0, t1, e1 = bracket
        if t1 - t0 > gap_limit_s:
            return None
        return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    def energy_between(self, t0: float, t1: float, gap_limit_s: float) -> float | None:
        """Energy used from `t0` to `t1`; None where a gap or a counter reset lies in between."""
        e0, e1 = self.energy_at(t0, gap_limit_s), self.energy_at(t1, gap_limit_s)
        if e0 is None or e1 is None:
            return None
        # Every step between two readings, (t[i-1], t[i]], that overlaps (t0, t1).
        first, last = max(1, bisect_right(self._t, t0)), min(bisect_left(self._t, t1), len(self._t) - 1)
        for i in range(first, last + 1):
            if self._reset[i] or self._t[i] - self._t[i - 1] > gap_limit_s:
                return None
        return e1 - e0

    def energy_spanning(self, t: float) -> float:
        """Cumulative energy at `t` (between the first and latest readings), gap or not.

        Used only where the values cancel out: the unattributed energy of a stretch is a sum of
        differences that telescopes across a gap, so no joule is invented by interpolating it.
        """
        bracket = self._bracket(t)
        if bracket is None:
            raise ValueError(f"instant {t} is outside the readings of GPU {self.gpu.uuid}")
        t0, e0, t1, e1 = bracket
        return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    def _bracket(self, t: float) -> tuple[float, float, float, float] | None:
        if not self._t or t > self._t[-1] or t < self._t[0]:
            return None
        i = bisect_left(self._t, t)
        if self._t[i] == t:
            return t, self._e[i], t, self._e[i]
        return self._t[i - 1], self._e[i - 1], self._t[i], self._e[i]
