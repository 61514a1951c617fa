"""A deterministic simulated GPU fleet, for the demo and for tests.

Load follows a repeating, piecewise-constant `LoadSchedule`. A GPU's power is its idle power plus
the energy of the tokens its server processes (joules per prompt token and per generated token),
spread evenly over the server's GPUs. Because load is constant within each phase, cumulative energy
and token counts have exact closed forms: tests know the ground truth to the microjoule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.model import Gpu, GpuSample


@dataclass(frozen=True, slots=True)
class LoadPhase:
    """A stretch of constant load."""

    duration_s: float
    input_tps: float
    """Prompt tokens per second."""
    output_tps: float
    """Generated tokens per second."""
    running: int
    """Requests in flight."""
    requests_ps: float
    """Requests finished per second."""


@dataclass(frozen=True, slots=True)
class LoadTotals:
    """Cumulative work done since the schedule's start."""

    input_tokens: float
    output_tokens: float
    requests: float


DEFAULT_PHASES: tuple[LoadPhase, ...] = (
    LoadPhase(10.0, input_tps=1500.0, output_tps=300.0, running=24, requests_ps=6.0),
    LoadPhase(6.0, input_tps=4000.0, output_tps=600.0, running=64, requests_ps=12.0),
    LoadPhase(8.0, input_tps=0.0, output_tps=0.0, running=0, requests_ps=0.0),
    LoadPhase(8.0, input_tps=300.0, output_tps=80.0, running=3, requests_ps=1.5),
)


class LoadSchedule:
    """A load pattern that repeats its phases forever from `start` (Unix seconds)."""

    def __init__(self, phases: Sequence[LoadPhase], start: float) -> None:
        if not phases or any(p.duration_s <= 0 for p in phases):
            raise ValueError("a load schedule needs at least one phase, each with a positive duration")
        self.phases = tuple(phases)
        self.start = start
        self._cycle_s = sum(p.duration_s for p in self.phases)
        cycle = LoadTotals(0.0, 0.0, 0.0)
        for p in self.phases:
            cycle = _advance(cycle, p, p.duration_s)
        self._cycle_totals = cycle

    def phase_at(self, t: float) -> LoadPhase:
        offset = (t - self.start) % self._cycle_s if t > self.start else 0.0
        for p in self.phases:
            if offset < p.duration_s:
                return p
            offset -= p.duration_s
        return self.phases[-1]

    def totals_at(self, t: float) -> LoadTotals:
        """Exact cumulative work from `start` to `t` (zero before the start)."""
        elapsed = max(0.0, t - self.start)
        cycles = math.floor(elapsed / self._cycle_s)
        rest = elapsed - cycles * self._cycle_s
        c = self._cycle_totals
        totals = LoadTotals(c.input_tokens * cycles, c.output_tokens * cycles, c.requests * cycles)
        for p in self.phases:
            step = min(rest, p.duration_s)
            totals = _advance(totals, p, step)
            rest -= step
            if rest <= 0:
                break
        return totals


def _advance(totals: LoadTotals, phase: LoadPhase, seconds: float) -> LoadTotals:
    return LoadTotals(
        totals.input_tokens + phase.input_tps * seconds,
        totals.output_tokens + phase.output_tps * seconds,
        totals.requests + phase.requests_ps * seconds,
    )


@dataclass(frozen=True, slots=True)
class PowerModel:
    """How a simulated GPU turns work into power."""

    idle_w: float = 70.0
    j_per_input_token: float = 0.04
    j_per_output_token: float = 0.6


class SimulatedFleet:
    """`gpus` identical simulated GPUs sharing the load of one schedule evenly."""

    def __init__(
        self,
        gpus: int,
        schedule: LoadSchedule,
        power: PowerModel = PowerModel(),
        gpu_model: str = "Simulated GPU",
    ) -> None:
        if gpus < 1:
            raise ValueError("a simulated fleet needs at least one GPU")
        self.schedule = schedule
        self.power = power
        self.gpus = tuple(
            Gpu(index=i, uuid=f"GPU-00000000-0000-4000-8000-{i:012d}", model=gpu_model) for i in range(gpus)
        )

    def energy_at(self, t: float) -> float:
        """Exact energy in joules one GPU has used from the schedule's start to `t`."""
        totals = self.schedule.totals_at(t)
        work_j = (
            self.power.j_per_input_token * totals.input_tokens
            + self.power.j_per_output_token * totals.output_tokens
        )
        return self.power.idle_w * max(0.0, t - self.schedule.start) + work_j / len(self.gpus)

    def power_at(self, t: float) -> float:
        p = self.schedule.phase_at(t)
        work_w = self.power.j_per_input_token * p.input_tps + self.power.j_per_output_token * p.output_tps
        return self.power.idle_w + work_w / len(self.gpus)


class SimulatedSource:
    """The `simulated` energy source: reads a `SimulatedFleet` at the clock's current instant."""

    name = "simulated"
    reads_fresh = True

    def __init__(self, fleet: SimulatedFleet, clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self._clock = clock

    async def read(self) -> list[GpuSample]:
        t = self._clock()
        energy = self.fleet.energy_at(t)
        power = self.fleet.power_at(t)
        return [GpuSample(gpu=g, t=t, energy_j=energy, power_w=power) for g in self.fleet.gpus]

    async def close(self) -> None:
        return None
