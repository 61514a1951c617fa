"""Energy sources: per-GPU cumulative energy counters.

Every source is one small object behind the `EnergySource` interface. A source that cannot read
raises `EnergyReadError` with a short machine-readable `reason`; the daemon turns that into
`tokenwatt_energy_source_up 0` and an error counter, never into a crash.
"""

from __future__ import annotations

from typing import Protocol

from exporter.model import GpuSample


class EnergyReadError(Exception):
    """A read failed; `reason` becomes the `reason` label of the error counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EnergySource(Protocol):
    """A source of per-GPU energy readings."""

    @property
    def name(self) -> str:
        """The value of the `source` label (`simulated`, `nvml`, ...)."""
        ...

    async def read(self) -> list[GpuSample]:
        """Read every GPU once. GPUs that could not be read are left out."""
        ...

    async def close(self) -> None:
        """Release what the source holds (connections, library handles)."""
        ...
