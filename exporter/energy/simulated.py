"""A deterministic simulated GPU fleet, for the demo and for tests.

Load follows a repeating, piecewise-constant `LoadSchedule`. A GPU's power is its idle power plus
the energy of the tokens its server processes (joules per prompt token and per generated token),
spread evenly over the server's GPUs. Because load is constant within each phase, cumulative energy
and token counts have exact closed forms: tests know the ground truth to the microjoule.

`SharedFleet` puts several tenants on one GPU: pods time-slicing a whole GPU, or MIG instances
(with deterministic MIG UUIDs and profiles). Each tenant has its own schedule and reports its
activity (busy fraction of the whole GPU, per pod or per GPU instance), so every share method can
be exercised without hardware, against a known truth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from pydantic import Field

from exporter.config import EnergyConfig, Strict
from exporter.energy import Registered
from exporter.placement import MIG_SLICES_PER_GPU, mig_profile_slices
from exporter.values import Gpu, GpuActivity, GpuSample, MigDevice


class SimulatedSettings(Strict):
    """`energy.simulated:`: the simulated fleet."""

    gpus: int = Field(2, ge=1, le=64)
    idle_watts: float = Field(70.0, ge=0)
    joules_per_input_token: float = Field(0.04, ge=0)
    joules_per_output_token: float = Field(0.6, ge=0)
    gpu_model: str = "Simulated GPU"


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

    def edges(self, t0: float, t1: float) -> list[float]:
        """The instants in (t0, t1) where the load changes (phase boundaries, the start)."""
        found = [self.start] if t0 < self.start < t1 else []
        if t1 <= self.start:
            return found
        edge = self.start + math.floor((max(t0, self.start) - self.start) / self._cycle_s) * self._cycle_s
        while edge < t1:
            for p in self.phases:
                edge += p.duration_s
                if t0 < edge < t1:
                    found.append(edge)
        return found

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
        self.gpus = tuple(Gpu(index=i, uuid=_gpu_uuid(i), model=gpu_model) for i in range(gpus))

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


def _gpu_uuid(index: int) -> str:
    return f"GPU-00000000-0000-4000-8000-{index:012d}"


@dataclass(frozen=True, slots=True)
class Tenant:
    """Work on one simulated GPU: a pod's processes sharing the whole GPU, or one MIG instance."""

    schedule: LoadSchedule
    j_per_input_token: float
    j_per_output_token: float
    full_w: float
    """Power above idle when the tenant keeps the whole GPU busy: its activity (busy fraction of
    the whole GPU) is its power above idle divided by this."""
    pod_uid: str | None = None
    """The pod whose processes these are (reported as per-pod activity on a whole GPU)."""
    mig: tuple[int, str] | None = None
    """(GPU instance ID, profile such as `3g.40gb`) on a MIG GPU (reported per instance)."""
    fraction: float = 1.0
    """The part of the schedule's work that runs on this GPU."""

    def work_j(self, t: float) -> float:
        totals = self.schedule.totals_at(t)
        work = self.j_per_input_token * totals.input_tokens + self.j_per_output_token * totals.output_tokens
        return self.fraction * work

    def work_w(self, t: float) -> float:
        p = self.schedule.phase_at(t)
        return self.fraction * (self.j_per_input_token * p.input_tps + self.j_per_output_token * p.output_tps)


@dataclass(frozen=True, slots=True)
class SharedGpu:
    idle_w: float
    tenants: tuple[Tenant, ...]


class SharedFleet:
    """GPUs with several tenants each, energy and activity in closed form from `start` on."""

    def __init__(self, gpus: Sequence[SharedGpu], start: float, gpu_model: str = "Simulated GPU") -> None:
        self.specs = tuple(gpus)
        self.start = start
        self.gpus = tuple(Gpu(index=i, uuid=_gpu_uuid(i), model=gpu_model) for i in range(len(gpus)))
        self.mig_devices = tuple(
            MigDevice(
                f"MIG-00000000-0000-4000-9000-{i:04d}{t.mig[0]:08d}",
                self.gpus[i].uuid,
                t.mig[0],
                t.mig[1],
                mig_profile_slices(t.mig[1]),
            )
            for i, spec in enumerate(self.specs)
            for t in spec.tenants
            if t.mig is not None
        )

    def energy_at(self, index: int, t: float) -> float:
        """Exact energy GPU `index` used from the start to `t`."""
        spec = self.specs[index]
        return spec.idle_w * max(0.0, t - self.start) + sum(x.work_j(t) for x in spec.tenants)

    def samples(self, t: float) -> list[GpuSample]:
        return [
            GpuSample(g, t, self.energy_at(g.index, t), spec.idle_w + sum(x.work_w(t) for x in spec.tenants))
            for g, spec in zip(self.gpus, self.specs, strict=True)
        ]

    def activity(self, t0: float, t1: float) -> tuple[GpuActivity, ...]:
        """Each tenant's mean activity over (t0, t1], as a per-process or DCGM reading would give it."""
        found = []
        for g, spec in zip(self.gpus, self.specs, strict=True):
            busy = [(x, (x.work_j(t1) - x.work_j(t0)) / x.full_w / (t1 - t0)) for x in spec.tenants]
            found.append(
                GpuActivity(
                    g.uuid,
                    t1,
                    pods={x.pod_uid: b for x, b in busy if x.pod_uid is not None and x.mig is None},
                    instances={x.mig[0]: b for x, b in busy if x.mig is not None},
                )
            )
        return tuple(found)

    def tenant_energy(self, index: int, tenant: int, t0: float, t1: float) -> float:
        """The truth: the tenant's own work plus the idle power split by the tenants' activity
        instant by instant (with nobody active: equally, or by slices of seven on MIG)."""
        spec = self.specs[index]
        me = spec.tenants[tenant]
        cuts = sorted({t0, t1, *(e for x in spec.tenants for e in x.schedule.edges(t0, t1))})
        idle_j = 0.0
        for a, b in pairwise(cuts):
            mid = (a + b) / 2
            total = sum(x.work_w(mid) / x.full_w for x in spec.tenants)
            if total > 0:
                part = me.work_w(mid) / me.full_w / total
            elif me.mig is not None:
                part = mig_profile_slices(me.mig[1]) / MIG_SLICES_PER_GPU
            else:
                part = 1.0 / len(spec.tenants)
            idle_j += spec.idle_w * (b - a) * part
        return me.work_j(t1) - me.work_j(t0) + idle_j


def simulated_fleet(cfg: EnergyConfig, schedule: LoadSchedule | None = None) -> SimulatedFleet:
    """The fleet `energy.simulated` describes; by default under `DEFAULT_PHASES` from now."""
    sim = cfg.section(SimulatedSource.name, SimulatedSettings)
    return SimulatedFleet(
        gpus=sim.gpus,
        schedule=schedule or LoadSchedule(DEFAULT_PHASES, start=time.time()),
        power=PowerModel(sim.idle_watts, sim.joules_per_input_token, sim.joules_per_output_token),
        gpu_model=sim.gpu_model,
    )


class SimulatedSource:
    """The `simulated` energy source: reads a simulated fleet at the clock's current instant.

    With a `SharedFleet` it also reports the fleet's MIG devices and, for each read, every tenant's
    activity since the previous read.
    """

    name = "simulated"
    reads_fresh = True

    def __init__(self, fleet: SimulatedFleet | SharedFleet, clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self._clock = clock
        self._last_t: float | None = None
        self.activity: tuple[GpuActivity, ...] = ()
        self.mig_devices: tuple[MigDevice, ...] = fleet.mig_devices if isinstance(fleet, SharedFleet) else ()

    @classmethod
    async def open(cls, cfg: EnergyConfig) -> SimulatedSource:
        """The fleet `cfg.simulated` describes, under the built-in load schedule from now."""
        return cls(simulated_fleet(cfg))

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.fleet.gpus

    async def read(self) -> list[GpuSample]:
        t = self._clock()
        if isinstance(self.fleet, SimulatedFleet):
            energy = self.fleet.energy_at(t)
            power = self.fleet.power_at(t)
            return [GpuSample(gpu=g, t=t, energy_j=energy, power_w=power) for g in self.fleet.gpus]
        if self._last_t is not None and t > self._last_t:
            self.activity = self.fleet.activity(self._last_t, t)
        self._last_t = t
        return self.fleet.samples(t)

    async def close(self) -> None:
        return None


SOURCE = Registered(SimulatedSource.name, SimulatedSource.open, auto=False, settings=SimulatedSettings)
