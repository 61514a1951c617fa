"""Counters with Prometheus semantics: a decrease is a reset, never a negative increase."""

from __future__ import annotations

import math


class ResetCounter:
    """Turns raw readings of a counter into increments and a total that never decreases.

    The first reading only sets the baseline. After that an increment is `v - last`, or `v` when
    `v < last` (the counter restarted from zero and has counted `v` since). An increment that is
    negative, NaN or above the `limit` given with the reading is a *jump* (the validation gate's
    `implausible_increase`): the counter is re-based at `v` and the increment is None, as for a
    baseline, so the total never takes in more than physics allows.
    """

    __slots__ = ("jumps", "last", "resets", "total")

    def __init__(self) -> None:
        self.last: float | None = None
        self.total = 0.0
        self.resets = 0
        self.jumps = 0

    def observe(self, value: float, limit: float = math.inf) -> float | None:
        """Record a reading; return its increment, or None for the baseline reading and for a jump."""
        last, self.last = self.last, value
        if last is None:
            return None
        if value < last:
            self.resets += 1
            increment = value
        else:
            increment = value - last
        if not 0.0 <= increment <= limit:  # NaN fails too: only a finite, bounded rise is counted
            self.jumps += 1
            return None
        self.total += increment
        return increment
