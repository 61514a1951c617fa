"""How long to wait before retrying something that keeps failing: a read, a scrape, a reconnect."""

from __future__ import annotations

MAX_BACKOFF_S = 30.0
"""The longest wait between two attempts (unless the interval itself is longer)."""


def backoff_s(interval_s: float, failures: int) -> float:
    """The wait after `failures` consecutive failures: doubling from the interval, capped."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 16), max(interval_s, MAX_BACKOFF_S))
