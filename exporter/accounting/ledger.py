"""Per-server ledgers: energy, tokens, requests and idle time advancing together.

A server's scrapes arrive as groups of `TokenSample`s sharing one instant. Each scrape after the
first closes an *interval*: the energy its GPUs used between the two instants (interpolated on
each GPU's series, times the server's share of that GPU) and the tokens its counters advanced.
An interval whose energy cannot be measured (a gap in the energy readings) keeps its tokens but
has no energy, and windows leave it out of both sides of the ratio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.accounting.counters import ResetCounter
from exporter.model import ModelTokens


@dataclass(frozen=True, slots=True)
class ModelInterval:
    model: str | None
    energy_j: float | None
    """This model's part of the interval's energy; None when the interval is unmeasured."""
    input_tokens: float
    output_tokens: float
    requests: float


@dataclass(frozen=True, slots=True)
class Interval:
    t_start: float
    t_end: float
    energy_j: float | None
    idle: bool
    models: tuple[ModelInterval, ...]


class ModelLedger:
    """Cumulative counters of one model on one server (all start at zero at the first scrape)."""

    def __init__(self) -> None:
        self.input = ResetCounter()
        self.output = ResetCounter()
        self.requests = ResetCounter()
        self.has_requests = False
        self.energy_j = 0.0
        self.running: float | None = None


class ServerLedger:
    """Everything tokenwatt knows about one server's energy and work."""

    def __init__(self, name: str, retain_s: float) -> None:
        self.name = name
        self.models: dict[str | None, ModelLedger] = {}
        self.idle_energy_j = 0.0
        self.idle_s = 0.0
        self.unmeasured_s = 0.0
        self.intervals: deque[Interval] = deque()
        self.last_t: float | None = None
        self.last_gpu_energy: dict[str, float] | None = None
        """Interpolated cumulative energy per GPU UUID at `last_t`; None where it could not be measured."""
        self._retain_s = retain_s

    def record(
        self,
        t: float,
        models: Sequence[ModelTokens],
        gpu_energy: Mapping[str, float] | None,
        shares: Mapping[str, float],
    ) -> Interval | None:
        """Apply one scrape taken at `t`.

        `gpu_energy` is each of the server's GPUs' cumulative energy at `t` (None when any could
        not be measured), `shares` the server's share of each GPU. Returns the interval the
        scrape closed, or None for the first scrape.
        """
        increments = [(m, self._observe(m)) for m in models]
        prev_t, prev_energy = self.last_t, self.last_gpu_energy
        was_running = any((ledger.running or 0.0) > 0 for ledger in self.models.values())
        for m in models:
            self.models[m.model].running = m.running
        self.last_t = t
        self.last_gpu_energy = dict(gpu_energy) if gpu_energy is not None else None
        if prev_t is None or t <= prev_t:
            return None

        energy: float | None = None
        if gpu_energy is not None and prev_energy is not None and set(prev_energy) == set(gpu_energy):
            energy = sum(shares[uuid] * (gpu_energy[uuid] - prev_energy[uuid]) for uuid in gpu_energy)

        counted = [(m.model, inc) for m, inc in increments if inc is not None]
        tokens = sum(inc[0] + inc[1] for _, inc in counted)
        running_now = any((m.running or 0.0) > 0 for m in models)
        idle = tokens == 0 and not was_running and not running_now
        parts = self._split(energy, counted, tokens)
        interval = Interval(prev_t, t, energy, idle, parts)

        if energy is None:
            self.unmeasured_s += t - prev_t
        else:
            for part in parts:
                self.models[part.model].energy_j += part.energy_j or 0.0
            if idle:
                self.idle_energy_j += energy
                self.idle_s += t - prev_t
        self.intervals.append(interval)
        while self.intervals and self.intervals[0].t_end < t - self._retain_s:
            self.intervals.popleft()
        return interval

    def _observe(self, m: ModelTokens) -> tuple[float, float, float] | None:
        ledger = self.models.get(m.model)
        if ledger is None:
            ledger = self.models[m.model] = ModelLedger()
        d_in = ledger.input.observe(m.input_tokens)
        d_out = ledger.output.observe(m.output_tokens)
        d_req: float | None = 0.0
        if m.requests is not None:
            ledger.has_requests = True
            d_req = ledger.requests.observe(m.requests)
        if d_in is None or d_out is None:
            return None
        return (d_in, d_out, d_req or 0.0)

    @staticmethod
    def _split(
        energy: float | None,
        counted: Sequence[tuple[str | None, tuple[float, float, float]]],
        tokens: float,
    ) -> tuple[ModelInterval, ...]:
        """Split an interval's energy between models by their share of its tokens (equally if none)."""
        parts = []
        for model, (d_in, d_out, d_req) in counted:
            share = (d_in + d_out) / tokens if tokens > 0 else 1.0 / len(counted)
            parts.append(ModelInterval(model, None if energy is None else energy * share, d_in, d_out, d_req))
        return tuple(parts)
