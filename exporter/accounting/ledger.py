"""Per-server ledgers: energy, tokens, requests and idle time advancing together.

A server's scrapes arrive as groups of `ModelTokens` sharing one instant. Each scrape after the
first closes an *interval*: the energy its GPUs used between the two instants (measured by the
accountant) and the tokens its counters advanced. An interval whose energy cannot be measured (a
gap in the energy readings) keeps its tokens but has no energy, and windows leave it out of both
sides of the ratio.

An interval is *idle* when no token counter advanced and, where the server reports it, no request
was running at either end. Idle energy is part of the all-in cost and is also kept apart, so that
active-only figures can leave it out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.accounting.bands import LoadBands
from exporter.accounting.counters import ResetCounter
from exporter.accounting.gate import token_limit
from exporter.accounting.split import BLOCK_S, SplitBlocks
from exporter.accounting.totals import SlidingTotals, Totals
from exporter.values import ModelTokens


@dataclass(frozen=True, slots=True)
class ModelInterval:
    """One model's part of an interval."""

    model: str | None
    energy_j: float | None
    """This model's part of the interval's energy; None when the interval is unmeasured."""
    input_tokens: float
    output_tokens: float
    requests: float
    cached_input_tokens: float
    """Prompt tokens served from a prefix cache (0 where the server does not report them)."""
    running: float | None
    """Requests in flight: the larger of the counts at the two ends; None where not reported."""

    @property
    def computed_input_tokens(self) -> float:
        """Prompt tokens the GPUs actually computed (cache hits excluded)."""
        return max(0.0, self.input_tokens - self.cached_input_tokens)


@dataclass(frozen=True, slots=True)
class Interval:
    t_start: float
    t_end: float
    energy_j: float | None
    """The server's energy over the interval; None when it could not be measured."""
    idle: bool
    models: tuple[ModelInterval, ...]

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start


class ModelLedger:
    """Cumulative counters of one model on one server (all start at zero at the first scrape)."""

    def __init__(self) -> None:
        self.input = ResetCounter()
        self.output = ResetCounter()
        self.requests = ResetCounter()
        self.cached_input = ResetCounter()
        self.has_requests = False
        self.has_cached_input = False
        self.running: float | None = None


@dataclass(frozen=True, slots=True)
class _Increments:
    input_tokens: float
    output_tokens: float
    requests: float
    cached_input_tokens: float


class ServerLedger:
    """Everything tokenwatt knows about one server's energy and work.

    Each closed interval is added to the server's cumulative `total`, to each of its `windows` and
    to its `split` blocks as it is recorded, so reading any of them does not walk the intervals.
    """

    def __init__(
        self,
        name: str,
        retain_s: float,
        windows_s: Sequence[float] = (),
        bands: LoadBands | None = None,
        split_block_s: float = BLOCK_S,
        split_window_s: float = math.inf,
    ) -> None:
        self.name = name
        self.models: dict[str | None, ModelLedger] = {}
        band_of = (bands or LoadBands()).band_of
        self.total = Totals()
        """Sums over every measured interval (a model's part leaves with the model)."""
        self.windows = tuple(SlidingTotals(w, band_of) for w in windows_s)
        self.split = SplitBlocks(split_block_s, split_window_s)
        self._band_of = band_of
        self.unmeasured_s = 0.0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.intervals: deque[Interval] = deque()
        self.jumps = 0
        """Scrapes in which a model's counter rose faster than `gate.MAX_TOKENS_PER_S` allows."""
        self._retain_s = retain_s

    @property
    def energy_j(self) -> float:
        """Energy of the measured intervals, idle included."""
        return self.total.energy_j

    def forget(self, model: str | None) -> None:
        """Drop a model that expired from the accounting (what its intervals added stays in the windows)."""
        self.models.pop(model, None)
        self.total.forget(model)

    def record(self, t: float, models: Sequence[ModelTokens], energy_j: float | None) -> Interval | None:
        """Apply one scrape taken at `t`, with the server's energy since its previous scrape.

        `energy_j` is None when that energy could not be measured. Returns the interval the scrape
        closed, or None for the first scrape (and for a scrape not after the previous one).
        """
        prev_t = self.last_t
        if prev_t is not None and t <= prev_t:
            return None
        running_before = {m: ledger.running for m, ledger in self.models.items()}
        counted: list[tuple[ModelTokens, _Increments]] = []
        limit = token_limit(t - prev_t) if prev_t is not None else 0.0
        for m in models:
            increments = self._observe(m, limit)
            if increments is not None:
                counted.append((m, increments))
            self.models[m.model].running = m.running
        self.last_t = t
        if prev_t is None:
            self.first_t = t
            return None

        tokens = sum(inc.input_tokens + inc.output_tokens for _, inc in counted)
        if not counted:
            energy_j = None  # no model has a baseline yet: nobody to attribute the energy to
        was_running = any((r or 0.0) > 0 for r in running_before.values())
        running_now = any((m.running or 0.0) > 0 for m in models)
        idle = tokens == 0 and not was_running and not running_now
        parts = tuple(
            ModelInterval(
                model=m.model,
                energy_j=None if energy_j is None else energy_j * _share(inc, tokens, len(counted)),
                input_tokens=inc.input_tokens,
                output_tokens=inc.output_tokens,
                requests=inc.requests,
                cached_input_tokens=inc.cached_input_tokens,
                running=_larger(running_before.get(m.model), m.running),
            )
            for m, inc in counted
        )
        interval = Interval(prev_t, t, energy_j, idle, parts)

        if energy_j is None:
            self.unmeasured_s += t - prev_t
        self.total.add(interval, self._band_of)
        for window in self.windows:
            window.add(interval)
            window.advance(t)
        self.split.add(interval)
        self.intervals.append(interval)
        while self.intervals and self.intervals[0].t_end < t - self._retain_s:
            self.intervals.popleft()
        return interval

    def _observe(self, m: ModelTokens, limit: float) -> _Increments | None:
        ledger = self.models.get(m.model)
        if ledger is None:
            ledger = self.models[m.model] = ModelLedger()
        counters = (ledger.input, ledger.output, ledger.requests, ledger.cached_input)
        jumps = sum(c.jumps for c in counters)
        d_in = ledger.input.observe(m.input_tokens, limit)
        d_out = ledger.output.observe(m.output_tokens, limit)
        d_req: float | None = 0.0
        if m.requests is not None:
            ledger.has_requests = True
            d_req = ledger.requests.observe(m.requests, limit)
        d_cached: float | None = 0.0
        if m.cached_input_tokens is not None:
            ledger.has_cached_input = True
            d_cached = ledger.cached_input.observe(m.cached_input_tokens, limit)
        if sum(c.jumps for c in counters) != jumps:
            self.jumps += 1
        if d_in is None or d_out is None:
            return None
        return _Increments(d_in, d_out, d_req or 0.0, d_cached or 0.0)


def _share(inc: _Increments, tokens: float, models: int) -> float:
    """A model's part of an interval: its share of the tokens, or an equal part when there were none."""
    return (inc.input_tokens + inc.output_tokens) / tokens if tokens > 0 else 1.0 / models


def _larger(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
