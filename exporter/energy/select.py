"""The registry of energy sources, and opening the configured one.

Each source is one module that declares itself once, as `SOURCE = Registered(...)` (`exporter.energy`):
its name, `open(cfg: EnergyConfig)`, whether `auto` may try it and the model of its `energy.<name>:`
section. `SOURCES` lists them, one line each; it is the one list of what `energy.source` allows and of
the sections `energy:` may hold (`config_file.validate_config` checks both against it).
`energy.source: auto` tries those marked `auto` in the order listed, and logs one line per source it
did not use with the reason; when none works, `EnergySourceUnavailable` lists them all, and
`tokenwatt run` prints that list and exits 2. A source not marked `auto` is never guessed: it is
chosen in the config.
"""

from __future__ import annotations

import structlog

from exporter.config import EnergyConfig
from exporter.energy import (
    EnergySource,
    EnergySourceUnavailable,
    Registered,
    amd,
    dcgm,
    dcgm_exporter,
    nvml,
    simulated,
)
from exporter.values import EnergyMethod

log = structlog.get_logger("tokenwatt.energy")

SOURCES: tuple[Registered, ...] = (
    dcgm.SOURCE,
    nvml.SOURCE,
    amd.SOURCE,
    dcgm_exporter.SOURCE,
    simulated.SOURCE,
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
