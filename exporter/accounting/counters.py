"""Counters with Prometheus semantics: a decrease is a reset, never a negative increase."""

from __future__ import annotations


class ResetCounter:
    """Turns raw readings of a counter into increments and a total that never decreases.

    The first reading only sets the baseline. After that an increment is `v - last`, or `v` when
    `v < last` (the counter restarted from zero and has counted `v` since).
    """

    __slots__ = ("last", "resets", "total")

    def __init__(self) -> None:
        self.last: float | None = None
        self.total = 0.0
        self.resets = 0

    def observe(self, value: float) -> float | None:
        """Record a reading; return its increment, or None for the baseline reading."""
        last, self.last = self.last, value
        if last is None:
            return None
        if value < last:
            self.resets += 1
            increment = value
        else:
            increment = value - last
        self.total += increment
        return increment
