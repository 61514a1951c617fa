"""Opening the configured energy source, or with `auto` the first that works here.

`auto` tries DCGM, then NVML, then AMD, and logs one line per source it did not use with the
reason; when none works, `EnergySourceUnavailable` lists them all, and `tokenwatt run` prints that
list and exits 2. A scraped dcgm-exporter is never guessed: it is chosen in the config.
"""

from __future__ import annotations

import time

import structlog

from exporter.config import EnergyConfig
from exporter.energy import EnergySource, EnergySourceUnavailable
from exporter.energy.amd import AmdSource
from exporter.energy.dcgm import DcgmSource
from exporter.energy.dcgm_exporter import DcgmExporterSource
from exporter.energy.nvml import NvmlSource
from exporter.energy.simulated import (
    DEFAULT_PHASES,
    LoadSchedule,
    PowerModel,
    SimulatedFleet,
    SimulatedSource,
)
from exporter.values import EnergyMethod


def simulated_fleet(cfg: EnergyConfig, schedule: LoadSchedule | None = None) -> SimulatedFleet:
    sim = cfg.simulated
    return SimulatedFleet(
        gpus=sim.gpus,
        schedule=schedule or LoadSchedule(DEFAULT_PHASES, start=time.time()),
        power=PowerModel(sim.idle_watts, sim.joules_per_input_token, sim.joules_per_output_token),
        gpu_model=sim.gpu_model,
    )


log = structlog.get_logger("tokenwatt.energy")

AUTO_ORDER = ("dcgm", "nvml", "amd")


async def open_source(cfg: EnergyConfig) -> EnergySource:
    """The energy source named by `energy.source`; `EnergySourceUnavailable` if it cannot be used."""
    if cfg.source == "simulated":
        return SimulatedSource(simulated_fleet(cfg))
    if cfg.source == "dcgm_exporter":
        log.info("energy source", source="dcgm_exporter", url=cfg.dcgm_exporter.url)
        return DcgmExporterSource.open(cfg.dcgm_exporter)
    if cfg.source != "auto":
        return await _open_hardware(cfg.source, cfg)
    problems: list[str] = []
    for name in AUTO_ORDER:
        try:
            source = await _open_hardware(name, cfg)
        except EnergySourceUnavailable as e:
            for problem in e.problems:
                log.info("energy source not used", source=name, reason=problem.removeprefix(f"{name}: "))
            problems += e.problems
            continue
        log.info("energy source chosen", source=name, tried=list(AUTO_ORDER[: AUTO_ORDER.index(name) + 1]))
        return source
    raise EnergySourceUnavailable(problems)


async def _open_hardware(name: str, cfg: EnergyConfig) -> EnergySource:
    source: DcgmSource | NvmlSource | AmdSource
    if name == "dcgm":
        source = await DcgmSource.open(cfg.dcgm, cfg.interval)
    elif name == "nvml":
        source = await NvmlSource.open(max_step_s=cfg.gap_limit_s)
    else:
        source = await AmdSource.open(max_step_s=cfg.gap_limit_s)
    log.info("energy source", source=name, gpus=[f"{g.index}:{g.uuid}:{g.model}" for g in source.gpus])
    if isinstance(source, AmdSource):
        for check in source.checks:
            log.info(
                "energy counter check",
                source=name,
                gpu=check.gpu.index,
                counter_watts=round(check.counter_w, 1),
                measured_watts=round(check.measured_w, 1),
                trusted=check.trusted,
            )
    for gpu in source.gpus:
        if gpu.energy_method is not EnergyMethod.COUNTER:
            log.warning(
                "no usable energy counter: integrating power",
                source=name,
                gpu=gpu.index,
                uuid=gpu.uuid,
                method=gpu.energy_method,
            )
    return source
