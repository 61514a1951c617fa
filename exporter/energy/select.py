"""Opening the configured energy source."""

from __future__ import annotations

import time

from exporter.config import EnergyConfig
from exporter.energy import EnergySource
from exporter.energy.simulated import (
    DEFAULT_PHASES,
    LoadSchedule,
    PowerModel,
    SimulatedFleet,
    SimulatedSource,
)


def simulated_fleet(cfg: EnergyConfig, schedule: LoadSchedule | None = None) -> SimulatedFleet:
    sim = cfg.simulated
    return SimulatedFleet(
        gpus=sim.gpus,
        schedule=schedule or LoadSchedule(DEFAULT_PHASES, start=time.time()),
        power=PowerModel(sim.idle_watts, sim.joules_per_input_token, sim.joules_per_output_token),
        gpu_model=sim.gpu_model,
    )


async def open_source(cfg: EnergyConfig) -> EnergySource:
    """The energy source named by `energy.source`."""
    return SimulatedSource(simulated_fleet(cfg))
