"""A fake `pynvml` (the `nvidia-ml-py` module) for machines without an NVIDIA GPU.

It mirrors the real module where tokenwatt touches it: the same function names and argument
shapes, the same constants with the same values, the same exception hierarchy (`NVMLError` whose
`__new__` maps a code to a generated `NVMLError_<Name>` subclass), and the same ctypes structures for
field values, so `values[i].nvmlReturn`, `.timestamp` (µs since 1970) and `.value.uiVal` (mW) read
as they do on hardware. `tests/energy/test_fakes_mirror_real.py` checks the names and values
against the installed `nvidia-ml-py`.

The simulated machine is `DRIVER`: tests set GPUs' energy (mJ) and power (mW), make the library
missing, make a GPU lack the energy counter (pre-Volta), lose a GPU, or reload the driver (counters
restart from zero and old handles die). Processes' utilization samples (pid, timeStamp in µs since
1970, smUtil %) are returned as the driver does: only those newer than the caller's timestamp,
`NotFound` when there are none, `NotSupported` on a GPU without per-process data (MIG mode), and
`FunctionNotFound` for `nvmlDeviceGetProcessesUtilizationInfo` on drivers older than 550.
"""

from __future__ import annotations

import string
import sys
import time
from collections.abc import Callable
from ctypes import (
    Structure,
    Union,
    c_double,
    c_int,
    c_int64,
    c_longlong,
    c_uint,
    c_uint32,
    c_ulong,
    c_ulonglong,
    c_ushort,
)
from dataclasses import dataclass, field
from typing import ClassVar

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3

NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186

NVML_DEVICE_ARCH_PASCAL = 4
NVML_DEVICE_ARCH_VOLTA = 5

NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1


class NVMLError(Exception):
    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return NVMLError._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")


def _extractNVMLErrorsAsClasses() -> None:
    """Generates `NVMLError_<Name>` for every `NVML_ERROR_<NAME>`, as the real module does."""
    this_module = sys.modules[__name__]
    for err_name in [x for x in dir(this_module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = getattr(this_module, err_name)

        def gen_new(val: int):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        setattr(this_module, class_name, cls)
        NVMLError._valClassMapping[err_val] = cls


_extractNVMLErrorsAsClasses()


def nvmlExceptionClass(nvmlErrorCode: int) -> type[NVMLError]:
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


class c_nvmlValue_t(Union):
    _fields_ = [
        ("dVal", c_double),
        ("uiVal", c_uint),
        ("ulVal", c_ulong),
        ("ullVal", c_ulonglong),
        ("sllVal", c_longlong),
        ("siVal", c_int),
        ("usVal", c_ushort),
    ]


class c_nvmlProcessUtilizationSample_t(Structure):
    _fields_ = [
        ("pid", c_uint),
        ("timeStamp", c_ulonglong),
        ("smUtil", c_uint),
        ("memUtil", c_uint),
        ("encUtil", c_uint),
        ("decUtil", c_uint),
    ]


class c_nvmlProcessUtilizationInfo_v1_t(Structure):
    _fields_ = [
        ("timeStamp", c_ulonglong),
        ("pid", c_uint),
        ("smUtil", c_uint),
        ("memUtil", c_uint),
        ("encUtil", c_uint),
        ("decUtil", c_uint),
        ("jpgUtil", c_uint),
        ("ofaUtil", c_uint),
    ]


class c_nvmlDeviceAttributes(Structure):
    _fields_ = [
        ("multiprocessorCount", c_uint),
        ("sharedCopyEngineCount", c_uint),
        ("sharedDecoderCount", c_uint),
        ("sharedEncoderCount", c_uint),
        ("sharedJpegCount", c_uint),
        ("sharedOfaCount", c_uint),
        ("gpuInstanceSliceCount", c_uint),
        ("computeInstanceSliceCount", c_uint),
        ("memorySizeMB", c_ulonglong),
    ]


class c_nvmlFieldValue_t(Structure):
    _fields_ = [
        ("fieldId", c_uint32),
        ("scopeId", c_uint32),
        ("timestamp", c_int64),
        ("latencyUsec", c_int64),
        ("valueType", c_uint),
        ("nvmlReturn", c_uint),
        ("value", c_nvmlValue_t),
    ]


# --- the simulated machine -------------------------------------------------------------------


@dataclass
class FakeMig:
    """A MIG device (GPU instance with one compute instance) on a MIG-enabled GPU."""

    uuid: str
    gpu_instance: int
    profile: str
    """e.g. `3g.40gb`: NVML names the device `<GPU name> MIG <profile>`."""
    slices: int


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    power_mw: int = 70_000
    has_energy_counter: bool = True
    """False for GPUs before Volta: the energy call raises NVMLError_NotSupported."""
    power_supported: bool = True
    lost: bool = False
    """The GPU fell off the bus: every call on it raises NVMLError_GpuIsLost."""
    process_samples: list[tuple[int, int, int]] = field(default_factory=list)
    """(pid, timeStamp µs since 1970, smUtil %) per process and sampling period."""
    process_utilization_supported: bool = True
    """False in MIG mode (and on GPUs without per-process data): NVMLError_NotSupported."""
    mig_capable: bool = False
    """A100/H100-class GPU: MIG mode can be queried (else NVMLError_NotSupported)."""
    migs: list[FakeMig] = field(default_factory=list)
    """MIG devices; MIG mode is enabled when there are any."""


@dataclass
class FakeDriver:
    gpus: list[FakeGpu] = field(default_factory=list)
    library_found: bool = True
    driver_loaded: bool = True
    generation: int = 0
    """Bumped by a driver reload: handles from before it are dead."""
    processes_utilization_info: bool = True
    """False for drivers before 550, which lack `nvmlDeviceGetProcessesUtilizationInfo`."""
    initialised: int = 0
    calls: list[str] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def reload_driver(self) -> None:
        """A driver reload: energy counters restart from zero, existing handles stop working."""
        self.generation += 1
        for gpu in self.gpus:
            gpu.energy_mj = 0


DRIVER = FakeDriver()


@dataclass(frozen=True)
class _Handle:
    index: int
    generation: int


@dataclass(frozen=True)
class _MigHandle:
    parent: _Handle
    index: int


def _mig(handle: _MigHandle) -> FakeMig:
    migs = _gpu(handle.parent).migs
    if not 0 <= handle.index < len(migs):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return migs[handle.index]


def _check_init() -> None:
    if DRIVER.initialised <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _gpu(handle: _Handle) -> FakeGpu:
    _check_init()
    if handle.generation != DRIVER.generation:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    gpu = DRIVER.gpus[handle.index]
    if gpu.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return gpu


def nvmlInit() -> None:
    DRIVER.calls.append("nvmlInit")
    if not DRIVER.library_found:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    if not DRIVER.driver_loaded:
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    DRIVER.initialised += 1


def nvmlShutdown() -> None:
    DRIVER.calls.append("nvmlShutdown")
    _check_init()
    DRIVER.initialised -= 1


def nvmlDeviceGetCount() -> int:
    _check_init()
    return len(DRIVER.gpus)


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    _check_init()
    if not 0 <= index < len(DRIVER.gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index, DRIVER.generation)


def nvmlDeviceGetHandleByUUID(uuid: str) -> _Handle:
    _check_init()
    for i, gpu in enumerate(DRIVER.gpus):
        if gpu.uuid == uuid:
            return _Handle(i, DRIVER.generation)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetUUID(handle: _Handle | _MigHandle) -> str:
    return _mig(handle).uuid if isinstance(handle, _MigHandle) else _gpu(handle).uuid


def nvmlDeviceGetName(handle: _Handle | _MigHandle) -> str:
    if isinstance(handle, _MigHandle):
        return f"{_gpu(handle.parent).name} MIG {_mig(handle).profile}"
    return _gpu(handle).name


def nvmlDeviceGetMigMode(device: _Handle) -> list[int]:
    """[current, pending] mode; NotSupported on GPUs without MIG."""
    gpu = _gpu(device)
    if not gpu.mig_capable:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    mode = NVML_DEVICE_MIG_ENABLE if gpu.migs else NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(device: _Handle) -> int:
    """How many MIG devices could exist (7 on A100/H100 in MIG mode); zero when MIG is off."""
    gpu = _gpu(device)
    return 7 if gpu.mig_capable and gpu.migs else 0


def nvmlDeviceGetMigDeviceHandleByIndex(device: _Handle, index: int) -> _MigHandle:
    """NotFound for an index where no MIG device exists."""
    handle = _MigHandle(device, index)
    _mig(handle)
    return handle


def nvmlDeviceGetGpuInstanceId(device: _Handle | _MigHandle) -> int:
    if not isinstance(device, _MigHandle):
        _gpu(device)
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _mig(device).gpu_instance


def nvmlDeviceGetAttributes(device: _Handle | _MigHandle) -> c_nvmlDeviceAttributes:
    attributes = c_nvmlDeviceAttributes()
    if isinstance(device, _MigHandle):
        attributes.gpuInstanceSliceCount = attributes.computeInstanceSliceCount = _mig(device).slices
    else:
        _gpu(device)
        attributes.gpuInstanceSliceCount = attributes.computeInstanceSliceCount = 7
    return attributes


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    """Millijoules since the driver was loaded."""
    gpu = _gpu(handle)
    if not gpu.has_energy_counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return gpu.energy_mj


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    """Milliwatts."""
    gpu = _gpu(handle)
    if not gpu.power_supported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return gpu.power_mw


def nvmlDeviceGetFieldValues(handle: _Handle, fieldIds: list[int | tuple[int, int]]):
    """Succeeds when the device answers; each entry carries its own `nvmlReturn`."""
    gpu = _gpu(handle)
    values = (c_nvmlFieldValue_t * len(fieldIds))()
    now_us = int(DRIVER.clock() * 1e6)
    for i, field_id in enumerate(fieldIds):
        fid, scope = field_id if isinstance(field_id, tuple) else (field_id, 0)
        v = values[i]
        v.fieldId, v.scopeId, v.timestamp = fid, scope, now_us
        if fid == NVML_FI_DEV_POWER_INSTANT and gpu.power_supported:
            v.valueType, v.nvmlReturn = NVML_VALUE_TYPE_UNSIGNED_INT, NVML_SUCCESS
            v.value.uiVal = gpu.power_mw
        elif fid == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION and gpu.has_energy_counter:
            v.valueType, v.nvmlReturn = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, NVML_SUCCESS
            v.value.ullVal = gpu.energy_mj
        else:
            v.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
    return values


def _process_samples(handle: _Handle, timeStamp: int) -> list[tuple[int, int, int]]:
    gpu = _gpu(handle)
    if not gpu.process_utilization_supported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    newer = [s for s in gpu.process_samples if s[1] > timeStamp]
    if not newer:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return newer


def nvmlDeviceGetProcessUtilization(handle: _Handle, timeStamp: int):
    """Samples newer than `timeStamp` (µs), as a list of `c_nvmlProcessUtilizationSample_t`."""
    DRIVER.calls.append("nvmlDeviceGetProcessUtilization")
    return [
        c_nvmlProcessUtilizationSample_t(pid, stamp, util, 0, 0, 0)
        for pid, stamp, util in _process_samples(handle, timeStamp)
    ]


def nvmlDeviceGetProcessesUtilizationInfo(handle: _Handle, timeStamp: int):
    """The same samples as `c_nvmlProcessUtilizationInfo_v1_t` (drivers 550 and later)."""
    DRIVER.calls.append("nvmlDeviceGetProcessesUtilizationInfo")
    _check_init()
    if not DRIVER.processes_utilization_info:
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    return [
        c_nvmlProcessUtilizationInfo_v1_t(stamp, pid, util, 0, 0, 0, 0, 0)
        for pid, stamp, util in _process_samples(handle, timeStamp)
    ]
