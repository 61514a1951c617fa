"""Energy sources: per-GPU cumulative energy counters.

Every source is one small object behind the `EnergySource` interface. A source that cannot read
raises `EnergyReadError` with a short machine-readable `reason`; the daemon turns that into
`tokenwatt_energy_source_up 0` and an error counter, never into a crash. A source that cannot be
opened at all (library missing, nothing to connect to) raises `EnergySourceUnavailable` at start-up,
which `tokenwatt run` reports as one line per source tried and exit code 2.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from exporter.config import EnergyConfig, Strict
from exporter.values import Gpu, GpuActivity, GpuSample, MigDevice

D = TypeVar("D")


class EnergyReadError(Exception):
    """A read failed; `reason` becomes the `reason` label of the error counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def error_reason(e: Exception, library: str) -> str:
    """A library's error class as the `reason` label of a failed read: `NVMLError_GpuIsLost` of
    library `NVML` is `gpu_is_lost`, its base class `NVMLError` is `nvml_error`."""
    name = type(e).__name__.removeprefix(f"{library}Error").lstrip("_")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if name else f"{library.lower()}_error"


def gpu_read_error(gpu: Gpu, reason: str, detail: object) -> EnergyReadError:
    """A failed read of one GPU, saying which."""
    return EnergyReadError(reason, f"GPU {gpu.index} ({gpu.uuid}): {detail}")


def read_each(devices: Sequence[D], read: Callable[[D], GpuSample]) -> list[tuple[D, GpuSample]]:
    """Each device with its sample; a device whose read fails is left out, unless every one fails:
    then the first failure is raised, so a source that reads nothing is a failed read."""
    read_ok: list[tuple[D, GpuSample]] = []
    failure: EnergyReadError | None = None
    for device in devices:
        try:
            read_ok.append((device, read(device)))
        except EnergyReadError as e:
            failure = failure or e
    if failure is not None and not read_ok:
        raise failure
    return read_ok


class EnergySourceUnavailable(Exception):
    """The source cannot be used on this machine; each problem says what is missing and how to fix it.

    `problems` holds one line per source tried, each starting with the source's name.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems

    @classmethod
    def of(cls, source: str, message: str) -> EnergySourceUnavailable:
        return cls([f"{source}: {message}"])


class EnergySource(Protocol):
    """A source of per-GPU energy readings."""

    @property
    def name(self) -> str:
        """The value of the `source` label (`dcgm`, `nvml`, ...), its name in the registry."""
        ...

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        """The GPUs the source reads, as known now (a scraped exporter knows them from its pages)."""
        ...

    @property
    def reads_fresh(self) -> bool:
        """True when every read asks the hardware now (NVML, AMD).

        The daemon then also reads right before and right after each scrape of a server, so the
        scrape's instant is bracketed by readings milliseconds apart. False where values refresh on
        the source's own schedule (DCGM watches, a scraped dcgm-exporter): reading more often
        would only repeat them.
        """
        ...

    async def read(self) -> list[GpuSample]:
        """Read every GPU once. GPUs that could not be read are left out."""
        ...

    async def close(self) -> None:
        """Release what the source holds (connections, library handles)."""
        ...


@runtime_checkable
class RefreshObserving(Protocol):
    """A source whose values change less often than it is read (a scraped dcgm-exporter)."""

    @property
    def refresh_period_s(self) -> float | None:
        """The observed time between two changes of the values; None until two changes were seen."""
        ...

    def unchanged_s(self, now: float) -> tuple[tuple[Gpu, float], ...]:
        """Every GPU the source listed, from its first read, with how long its value has not changed."""
        ...

    @property
    def nominal_refresh_s(self) -> float:
        """How often the values are meant to change, as configured (dcgm-exporter's collect interval)."""
        ...


def gap_limit_s(cfg: EnergyConfig, source: EnergySource | None = None) -> float:
    """The longest stretch between two readings that still brackets an instant: `energy.gap_limit`;
    by default five read intervals, and at least two refreshes of a source whose values change on
    its own, slower schedule (two refreshes are normally that far apart)."""
    if cfg.gap_limit is not None:
        return cfg.gap_limit
    refresh_s = source.nominal_refresh_s if isinstance(source, RefreshObserving) else 0.0
    return max(5 * cfg.interval, 2 * refresh_s)


@dataclass(frozen=True, slots=True)
class Registered:
    """How one energy source declares itself to the registry (`exporter.energy.select.SOURCES`)."""

    name: str
    """Its `energy.source` value and the `source` label of its series."""
    open: Callable[[EnergyConfig], Awaitable[EnergySource]]
    """Opens it from the energy settings alone; its own section it reads with `EnergyConfig.section`."""
    auto: bool
    """A library that reads this machine's GPUs: `auto` tries it, and opening it logs the GPUs found."""
    settings: type[Strict] | None = None
    """The model of its `energy.<name>:` section; None where it has no settings."""


@runtime_checkable
class MigReporting(Protocol):
    """A source that knows the MIG devices of its GPUs (empty where MIG is off)."""

    @property
    def mig_devices(self) -> tuple[MigDevice, ...]:
        """The MIG devices of the GPUs read, as last seen."""
        ...


@runtime_checkable
class ActivityReporting(Protocol):
    """A source that measures how busy each tenant keeps a GPU (per pod, or per MIG instance).

    The daemon hands this to the accountant before the readings of the same read, so the shares of
    each stretch between two energy readings come from the activity measured over that stretch.
    """

    @property
    def activity(self) -> tuple[GpuActivity, ...]:
        """The activity over the stretch that ended at the latest read, per GPU (empty where the
        source measured none: no tenants, no per-process data)."""
        ...
