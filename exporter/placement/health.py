"""The health of a placement source (the kubelet, the DRA ResourceSlices), kept one way for both.

A source is up after a call that succeeded. A failed call marks it down with a reason (the `reason`
label of `tokenwatt_placement_errors_total`) and counts it; the placement in force (built from the
last good answer) stays meanwhile. One log line per change: up, down, or down for another reason.
"""

from __future__ import annotations

from collections import Counter

import structlog

log = structlog.get_logger("tokenwatt.placement")


class PlacementSourceState:
    """Up, why not, failures in a row and errors by reason of one placement source."""

    def __init__(self, source: str) -> None:
        self.source = source
        """The `source` field of the log lines: `kubelet` or `dra`."""
        self.up: bool | None = None
        """None before the first call ended."""
        self.reason: str | None = None
        """Why the latest call failed; None when it succeeded."""
        self.failures = 0
        """Consecutive failed calls."""
        self.errors: Counter[str] = Counter()
        """Failed calls so far, by reason."""

    def succeeded(self, **context: object) -> None:
        """A call succeeded; `context` goes on the "placement up" line (logged when the source was not up)."""
        if self.up is not True:
            log.info("placement up", source=self.source, **context)
        self.up, self.reason, self.failures = True, None, 0

    def failed(self, reason: str, message: str) -> None:
        """A call failed for `reason` (`message`: what went wrong, for the log)."""
        self.failures += 1
        self.errors[reason] += 1
        if self.up is not False or self.reason != reason:
            log.warning(
                "placement down, keeping the last placement", source=self.source, reason=reason, error=message
            )
        self.up, self.reason = False, reason

    def crashed(self) -> None:
        """The source's poll raised an exception nobody foresaw (the supervisor logged its traceback)."""
        self.failed("unexpected", "the poll raised an unexpected error (see the log)")
