"""A fake `amdsmi` (ROCm's AMD SMI Python package) for machines without an AMD GPU.

Same function names and return shapes as amdsmi 7.0: `amdsmi_get_energy_count(h)` returns
`{"energy_accumulator": int, "counter_resolution": float (µJ per count), "timestamp": int (ns)}`,
`amdsmi_get_power_info(h)` returns watts with "N/A" for unsupported entries, errors are
`AmdSmiLibraryException(err_code)`, a subclass of `AmdSmiException`.

Each fake GPU draws constant power from `SMI.clock()`'s start; `counter_rate` scales how fast its
energy counter runs, so 15.0 reproduces the counter that advances at the wrong rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_NOT_FOUND = 31


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {_ERROR_INFO.get(self.err_code, _UNKNOWN)}"


_ERROR_INFO = {
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_INIT_ERROR: "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    AMDSMI_STATUS_NOT_FOUND: "AMDSMI_STATUS_NOT_FOUND - Device Not found",
}
"""What the real `AmdSmiLibraryException.set_err_info` says for these codes."""
_UNKNOWN = "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred"


@dataclass
class FakeGpu:
    uuid: str
    bdf: str = "0000:c1:00.0"
    market_name: str = "AMD Instinct MI300X"
    power_w: float = 150.0
    counter_rate: float = 1.0
    counter_resolution: float = 15.3
    start_uj: float = 1_000_000.0
    lost: bool = False
    """Gone from the bus: every call on it fails."""


@dataclass
class FakeSmi:
    gpus: list[FakeGpu] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    started: float = field(default_factory=time.time)
    initialised: bool = False


SMI = FakeSmi()


@dataclass(frozen=True)
class processor_handle:
    index: int


def _gpu(handle: processor_handle) -> FakeGpu:
    if not SMI.initialised:
        raise AmdSmiLibraryException(AMDSMI_STATUS_INIT_ERROR)
    gpu = SMI.gpus[handle.index]
    if gpu.lost:
        raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_FOUND)
    return gpu


def amdsmi_init(flag: int = 2) -> None:
    SMI.initialised = True
    SMI.started = SMI.clock()


def amdsmi_shut_down() -> None:
    SMI.initialised = False


def amdsmi_get_processor_handles() -> list[processor_handle]:
    if not SMI.initialised:
        raise AmdSmiLibraryException(AMDSMI_STATUS_INIT_ERROR)
    return [processor_handle(i) for i in range(len(SMI.gpus))]


def amdsmi_get_gpu_device_uuid(processor_handle: processor_handle) -> str:
    return _gpu(processor_handle).uuid


def amdsmi_get_gpu_device_bdf(processor_handle: processor_handle) -> str:
    """The PCI address, as amdsmi formats it: `DDDD:BB:DD.F`."""
    return _gpu(processor_handle).bdf


def amdsmi_get_gpu_asic_info(processor_handle: processor_handle) -> dict[str, object]:
    gpu = _gpu(processor_handle)
    return {
        "market_name": gpu.market_name,
        "vendor_id": "0x1002",
        "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
    }


def amdsmi_get_energy_count(processor_handle: processor_handle) -> dict[str, float | int]:
    gpu = _gpu(processor_handle)
    now = SMI.clock()
    energy_uj = gpu.start_uj + gpu.power_w * gpu.counter_rate * (now - SMI.started) * 1e6
    return {
        "energy_accumulator": int(energy_uj / gpu.counter_resolution),
        "counter_resolution": gpu.counter_resolution,
        "timestamp": int(now * 1e9),
    }


def amdsmi_get_power_info(processor_handle: processor_handle) -> dict[str, object]:
    gpu = _gpu(processor_handle)
    return {
        "socket_power": round(gpu.power_w),
        "current_socket_power": "N/A",
        "average_socket_power": round(gpu.power_w),
        "gfx_voltage": "N/A",
        "soc_voltage": "N/A",
        "mem_voltage": "N/A",
        "power_limit": 750,
    }
