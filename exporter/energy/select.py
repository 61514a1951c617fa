"""The registry of energy sources, and opening the configured one.

Each source is one module whose source class opens with `open(cfg: EnergyConfig)` and meets the
`EnergySource` protocol; `SOURCES` lists them, one line each. `energy.source: auto` tries those
marked `auto` in the order listed, and logs one line per source it did not use with the reason;
when none works, `EnergySourceUnavailable` lists them all, and `tokenwatt run` prints that list
and exits 2. A scraped dcgm-exporter and the simulated fleet are never guessed: they are chosen in
the config. The names here are the values `energy.source` allows (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from exporter.config import EnergyConfig
from exporter.energy import EnergySource, EnergySourceUnavailable
from exporter.energy.amd import AmdSource
from exporter.energy.dcgm import DcgmSource
from exporter.energy.dcgm_exporter import DcgmExporterSource
from exporter.energy.nvml import NvmlSource
from exporter.energy.simulated import SimulatedSource
from exporter.values import EnergyMethod

log = structlog.get_logger("tokenwatt.energy")


@dataclass(frozen=True, slots=True)
class Registered:
    """One energy source: its `energy.source` name and how it opens."""

    name: str
    open: Callable[[EnergyConfig], Awaitable[EnergySource]]
    auto: bool
    """A library that reads this machine's GPUs: `auto` tries it, and opening it logs the GPUs found."""


SOURCES = (
    Registered("dcgm", DcgmSource.open, auto=True),
    Registered("nvml", NvmlSource.open, auto=True),
    Registered("amd", AmdSource.open, auto=True),
    Registered("dcgm_exporter", DcgmExporterSource.open, auto=False),
    Registered("simulated", SimulatedSource.open, auto=False),
)
AUTO_ORDER = tuple(s.name for s in SOURCES if s.auto)


async def open_source(cfg: EnergyConfig) -> EnergySource:
    """The energy source named by `energy.source`; `EnergySourceUnavailable` if it cannot be used."""
    if cfg.source != "auto":
        [chosen] = [s for s in SOURCES if s.name == cfg.source]
        return await _open(chosen, cfg)
    problems: list[str] = []
    for entry in (s for s in SOURCES if s.auto):
        try:
            source = await _open(entry, cfg)
        except EnergySourceUnavailable as e:
            for problem in e.problems:
                reason = problem.removeprefix(f"{entry.name}: ")
                log.info("energy source not used", source=entry.name, reason=reason)
            problems += e.problems
            continue
        tried = AUTO_ORDER[: AUTO_ORDER.index(entry.name) + 1]
        log.info("energy source chosen", source=entry.name, tried=list(tried))
        return source
    raise EnergySourceUnavailable(problems)


async def _open(entry: Registered, cfg: EnergyConfig) -> EnergySource:
    source = await entry.open(cfg)
    if entry.auto:
        gpus = [f"{g.index}:{g.uuid}:{g.model}" for g in source.gpus]
        log.info("energy source", source=entry.name, gpus=gpus)
    for gpu in source.gpus:
        if gpu.energy_method is not EnergyMethod.COUNTER:
            log.warning(
                "no usable energy counter: integrating power",
                source=entry.name,
                gpu=gpu.index,
                uuid=gpu.uuid,
                method=gpu.energy_method,
            )
    return source
