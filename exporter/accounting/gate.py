"""The validation gate: what comes from outside is checked before it reaches the accounting.

Energy readings come from GPU drivers, host engines and scraped dcgm-exporter pages; token
counters from inference servers' pages. Any of them can carry NaN, an infinity, a negative value
or an absurd one. A reading that fails a check is *rejected*: it never becomes a value, it is a
gap, exactly as if the read had not happened. Rejections are counted by reason and logged once
per change of state (a GPU or server going from valid to rejected readings and back).

The checks, with their physical bounds (docs/metrics.md, "Rejected readings"):

- `non_finite`: NaN or an infinity in any value of the reading.
- `negative`: a negative energy, power or token value (they are counters and gauges of amounts).
- `label_too_long`: a GPU UUID or product name longer than `cardinality.MAX_LABEL_CHARS` (they
  become label values; real ones are a few dozen characters).
- `too_large`: a value of 2**53 or more. Above it a float no longer holds every integer, so a
  counter could not count one more token or millijoule; no real counter reaches it.
- `implausible_increase`: a counter that rose faster than physics allows between two readings:
  energy faster than `MAX_GPU_POWER_W` (plus `COUNTER_SLACK_S` of it, for counters that move in
  steps), tokens faster than `MAX_TOKENS_PER_S` (plus the same slack). The counter is re-based
  at the new value, as after a reset: the increase is a gap, never energy or tokens.

Because every increment that reaches a counter is finite, non-negative and bounded, the exported
counters are monotone and finite by construction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from exporter.accounting.cardinality import MAX_LABEL_CHARS
from exporter.values import GpuSample, ModelTokens

log = structlog.get_logger("tokenwatt")

MAX_VALUE = 2.0**53
MAX_GPU_POWER_W = 5000.0
"""Four times the most power-hungry accelerator board sold (about 1.2 kW)."""
MAX_TOKENS_PER_S = 1e8
"""Tokens one server can count per second: hundreds of times the fastest deployments."""
COUNTER_SLACK_S = 2.0
"""Counters are refreshed in steps (NVML every few tens of ms, DCGM's watches every 100 ms or
more), so an increment may hold up to this much more time than the readings' timestamps show."""

LOG_EVERY_S = 60.0
"""A GPU or server flipping between valid and rejected readings is logged at most this often."""

REASONS = ("non_finite", "negative", "too_large", "implausible_increase", "label_too_long")


def energy_limit_j(dt_s: float) -> float:
    """The most energy a GPU can use in `dt_s` seconds, slack included."""
    return MAX_GPU_POWER_W * (max(dt_s, 0.0) + COUNTER_SLACK_S)


def token_limit(dt_s: float) -> float:
    """The most tokens a server can count in `dt_s` seconds, slack included."""
    return MAX_TOKENS_PER_S * (max(dt_s, 0.0) + COUNTER_SLACK_S)


def value_problem(values: Iterable[float | None]) -> str | None:
    """The reason the values are unusable, or None when each is finite, non-negative and below 2**53."""
    for v in values:
        if v is None:
            continue
        if not math.isfinite(v):
            return "non_finite"
        if v < 0:
            return "negative"
        if v >= MAX_VALUE:
            return "too_large"
    return None


def energy_problem(sample: GpuSample) -> str | None:
    if len(sample.gpu.uuid) > MAX_LABEL_CHARS or len(sample.gpu.model) > MAX_LABEL_CHARS:
        return "label_too_long"
    too_much_power = sample.power_w is not None and sample.power_w > MAX_GPU_POWER_W
    return value_problem((sample.t, sample.energy_j, sample.power_w)) or (
        "too_large" if too_much_power else None
    )


def tokens_problem(tokens: ModelTokens) -> str | None:
    t = tokens
    return value_problem((t.input_tokens, t.output_tokens, t.requests, t.running, t.cached_input_tokens))


@dataclass(frozen=True, slots=True)
class Rejections:
    """Readings rejected so far, by reason: energy readings (all GPUs) and scrapes (per server)."""

    energy: tuple[tuple[str, int], ...] = ()
    """(reason, count)."""
    scrapes: tuple[tuple[str, str, int], ...] = ()
    """(server, reason, count)."""


class Gate:
    """Counts rejections and logs each GPU's or server's change between valid and rejected readings.

    Its memory is bounded by the GPUs and servers seen: one state and a few counts each.
    """

    def __init__(self) -> None:
        self._energy: Counter[str] = Counter()
        self._scrapes: Counter[tuple[str, str]] = Counter()
        self._logged: dict[tuple[str, str], tuple[str | None, float | None]] = {}
        """(kind, name) -> (the outcome its latest log line told, and that reading's instant)."""

    def energy(self, samples: Iterable[GpuSample]) -> list[GpuSample]:
        """The samples that pass; each rejected one is counted and, on a change of state, logged."""
        passed = []
        for s in samples:
            reason = energy_problem(s)
            self.note("gpu", s.gpu.uuid, s.t, reason, s.energy_j)
            if reason is None:
                passed.append(s)
        return passed

    def tokens(self, server: str, t: float, tokens: Iterable[ModelTokens]) -> bool:
        """True when every model's values of one scrape pass; one bad model rejects the scrape."""
        for m in tokens:
            reason = tokens_problem(m)
            if reason is not None:
                self.note("server", server, t, reason, m)
                return False
        self.note("server", server, t, None, None)
        return True

    def note(self, kind: str, name: str, t: float, reason: str | None, value: object) -> None:
        """Record the outcome of one reading taken at `t`: `reason` None when it passed.

        A change of state is logged, but a GPU or server that flips between valid and rejected
        readings gets at most one line per `LOG_EVERY_S` (the counters keep every rejection); a
        state hidden by that limit is logged with the first reading after it.
        """
        if reason is not None:
            if kind == "gpu":
                self._energy[reason] += 1
            else:
                self._scrapes[(name, reason)] += 1
        key = (kind, name)
        logged, logged_t = self._logged.get(key, (None, None))
        if reason == logged:
            return
        if logged_t is not None and not (math.isfinite(t) and abs(t - logged_t) >= LOG_EVERY_S):
            return  # flapping: the state is logged once the minute is over, if it still differs
        self._logged[key] = (reason, t)
        if reason is not None:
            log.warning("reading rejected", **{kind: name}, reason=reason, value=repr(value))
        else:
            log.info("readings valid again", **{kind: name})

    def forget(self, kind: str, name: str) -> None:
        """Drop what is kept of a GPU or server that is gone (a removed or departed server)."""
        self._logged.pop((kind, name), None)
        if kind == "server":
            for key in [k for k in self._scrapes if k[0] == name]:
                del self._scrapes[key]

    def rejections(self) -> Rejections:
        return Rejections(
            tuple(sorted(self._energy.items())),
            tuple(sorted((server, reason, n) for (server, reason), n in self._scrapes.items())),
        )
