"""The `nvml` source: the NVIDIA driver's own library, through `nvidia-ml-py` (`import pynvml`).

Energy comes from `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver was loaded; Volta and
newer). Power comes from `nvmlDeviceGetFieldValues` with `NVML_FI_DEV_POWER_INSTANT`, the reading
that is instantaneous on every architecture; that call succeeds when any value was filled, so each
entry's own `nvmlReturn` is checked. Where a GPU has no energy counter (before Volta) its energy is
the integral of that power, and its samples say so (`method="power_integration"`).

GPUs are keyed by UUID: inside a container NVML renumbers the visible GPUs from 0.

Each read also asks for the processes' SM utilization samples since the previous one
(`nvmlDeviceGetProcessesUtilizationInfo`, or `nvmlDeviceGetProcessUtilization` on drivers without
it), summed per pod (`exporter.energy.activity`), so a GPU several pods share is split by what
each did. NVML answers `NotFound` when no process was sampled since, and `NotSupported` on MIG GPUs
and GPUs without per-process data: those GPUs have no activity, and their shares fall back.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from exporter.config import EnergyConfig
from exporter.energy import (
    EnergyReadError,
    EnergySourceUnavailable,
    Registered,
    error_reason,
    gap_limit_s,
    gpu_read_error,
    read_each,
)
from exporter.energy.activity import PodActivity
from exporter.energy.integration import PowerIntegral
from exporter.energy.library_thread import LibraryThread
from exporter.values import EnergyMethod, Gpu, GpuActivity, GpuSample, MigDevice

log = structlog.get_logger("tokenwatt.energy")


_HINTS = {
    "LibraryNotFound": "libnvidia-ml.so.1 not found: run where the NVIDIA driver is installed; in a "
    "container use the NVIDIA runtime with NVIDIA_DRIVER_CAPABILITIES including utility",
    "DriverNotLoaded": "the NVIDIA kernel driver is not loaded (no NVIDIA GPU here, or the module failed "
    "to load): check nvidia-smi",
    "NoPermission": "no permission to open the GPUs: give the process access to /dev/nvidia*",
    "LibRmVersionMismatch": "libnvidia-ml and the kernel driver are of different versions: reload the "
    "driver or reboot after a driver upgrade",
}


@dataclass(slots=True)
class _Device:
    handle: Any
    gpu: Gpu
    integral: PowerIntegral | None
    """Set where the GPU has no energy counter."""
    activity_error: str | None = field(default=None, compare=False)
    """Why the latest per-process activity read failed; None while it works."""


def import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise EnergySourceUnavailable.of(
            "nvml", "the Python package nvidia-ml-py is not installed: pip install 'tokenwatt[nvml]'"
        ) from None


class NvmlSource:
    """Reads every GPU NVML sees, one call at a time in the source's own thread."""

    name = "nvml"
    reads_fresh = True

    def __init__(
        self, nvml: ModuleType, thread: LibraryThread, max_step_s: float, proc: Path = Path("/proc")
    ) -> None:
        self._nvml = nvml
        self._thread = thread
        self._max_step_s = max_step_s
        self._devices: list[_Device] = []
        self._integrals: dict[str, PowerIntegral] = {}
        self._stale = False
        self._proc = proc
        self._pod_activity: dict[str, PodActivity] = {}
        self._processes_info = True
        """False once the driver lacks `nvmlDeviceGetProcessesUtilizationInfo`."""
        self.activity: tuple[GpuActivity, ...] = ()
        """Per-pod activity of each GPU over the latest read (see `ActivityReporting`)."""
        self.mig_devices: tuple[MigDevice, ...] = ()
        """The MIG devices of MIG-enabled GPUs, as found at start-up (see `MigReporting`)."""

    @classmethod
    async def open(cls, cfg: EnergyConfig) -> NvmlSource:
        """Initialise NVML and find the GPUs; `EnergySourceUnavailable` says why it cannot be used.

        Power is integrated over steps up to `gap_limit_s(cfg)` (see `PowerIntegral`).
        """
        nvml = import_pynvml()
        source = cls(nvml, LibraryThread("nvml"), gap_limit_s(cfg))
        try:
            await source._thread.call(source._start)
        except nvml.NVMLError as e:
            source._thread.close()
            hint = _HINTS.get(type(e).__name__.removeprefix("NVMLError_"), f"nvmlInit failed: {e}")
            raise EnergySourceUnavailable.of("nvml", hint) from None
        if not source._devices:
            await source.close()
            raise EnergySourceUnavailable.of("nvml", "NVML works but sees no GPU")
        return source

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(d.gpu for d in self._devices)

    def _start(self) -> None:
        nvml = self._nvml
        nvml.nvmlInit()
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = str(nvml.nvmlDeviceGetUUID(handle))
            name = str(nvml.nvmlDeviceGetName(handle))
            integral = None
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
                integral = self._integrals.setdefault(uuid, PowerIntegral(self._max_step_s))
            method = EnergyMethod.COUNTER if integral is None else EnergyMethod.POWER_INTEGRATION
            devices.append(_Device(handle, Gpu(index, uuid, name, method), integral))
        self._devices = devices
        self.mig_devices = tuple(m for d in devices for m in self._migs(d))

    def _migs(self, device: _Device) -> list[MigDevice]:
        """The MIG devices of one GPU: none where MIG is unsupported or off."""
        nvml = self._nvml
        try:
            current, _ = nvml.nvmlDeviceGetMigMode(device.handle)
        except nvml.NVMLError:
            return []  # NotSupported: a GPU without MIG
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        found = []
        try:
            for i in range(nvml.nvmlDeviceGetMaxMigDeviceCount(device.handle)):
                try:
                    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(device.handle, i)
                except nvml.NVMLError_NotFound:
                    continue  # no MIG device at this index
                name = str(nvml.nvmlDeviceGetName(mig))  # "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
                found.append(
                    MigDevice(
                        uuid=str(nvml.nvmlDeviceGetUUID(mig)),
                        parent_uuid=device.gpu.uuid,
                        gpu_instance=int(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                        profile=name.rpartition(" MIG ")[2] or name,
                        slices=int(nvml.nvmlDeviceGetAttributes(mig).gpuInstanceSliceCount),
                    )
                )
        except nvml.NVMLError as e:
            # Energy is read per physical GPU all the same; only MIG device IDs go unresolved.
            reason = error_reason(e, "NVML")
            log.warning("MIG devices not listed", gpu=device.gpu.index, reason=reason, error=str(e))
            return []
        return found

    async def read(self) -> list[GpuSample]:
        return await self._thread.call(self._read)

    def _read(self) -> list[GpuSample]:
        nvml = self._nvml
        if self._stale:
            # Every GPU failed last time (driver reloaded, GPU reset): handles may be dead.
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            try:
                self._start()
            except nvml.NVMLError as e:
                reason = error_reason(e, "NVML")
                raise EnergyReadError(reason, f"NVML could not be initialised again: {e}") from None
            self._stale = False
        try:
            read_ok = read_each(self._devices, self._read_device)
        except EnergyReadError:
            self._stale = True
            raise
        activity: list[GpuActivity] = []
        for device, sample in read_ok:
            pods = self._read_pods(device)
            if pods:
                activity.append(GpuActivity(device.gpu.uuid, sample.t, pods=pods))
        self.activity = tuple(activity)
        return [sample for _, sample in read_ok]

    def _read_pods(self, device: _Device) -> dict[str, float]:
        """The pods' SM activity on the GPU since the previous read; empty where NVML has none."""
        nvml = self._nvml
        tracker = self._pod_activity.setdefault(device.gpu.uuid, PodActivity(self._proc))
        error: str | None = None
        samples: list[Any] = []
        try:
            samples = self._process_samples(device.handle, tracker.last_seen_us)
        except nvml.NVMLError_NotFound:
            pass  # no process sampled since the last read
        except nvml.NVMLError as e:
            error = error_reason(e, "NVML")
        if error != device.activity_error:
            gpu = device.gpu
            if error is None:
                log.info("per-process activity available", gpu=gpu.index, uuid=gpu.uuid)
            else:
                log.warning("no per-process activity", gpu=gpu.index, uuid=gpu.uuid, reason=error)
            device.activity_error = error
        if error is not None:
            return {}
        return dict(tracker.update((s.pid, s.timeStamp, s.smUtil) for s in samples))

    def _process_samples(self, handle: Any, last_seen_us: int) -> list[Any]:
        nvml = self._nvml
        if self._processes_info:
            try:
                return list(nvml.nvmlDeviceGetProcessesUtilizationInfo(handle, last_seen_us))
            except nvml.NVMLError_FunctionNotFound:
                self._processes_info = False
        return list(nvml.nvmlDeviceGetProcessUtilization(handle, last_seen_us))

    def _read_device(self, device: _Device) -> GpuSample:
        nvml = self._nvml
        gpu = device.gpu
        before = time.time()
        try:
            if device.integral is None:
                energy_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(device.handle)
                t = (before + time.time()) / 2.0
                power_w, _ = self._power(device)
                return GpuSample(gpu, t, energy_mj / 1000.0, power_w)
            power_w, power_t = self._power(device)
        except nvml.NVMLError as e:
            raise gpu_read_error(gpu, error_reason(e, "NVML"), e) from None
        return device.integral.sample(gpu, power_t, power_w)

    def _power(self, device: _Device) -> tuple[float | None, float]:
        """Instant power (W), or None where it has none, and the instant NVML read it."""
        nvml = self._nvml
        before = time.time()
        [value] = nvml.nvmlDeviceGetFieldValues(device.handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
        # `timestamp` is µs since 1970 by the host clock; some drivers leave it 0.
        t = value.timestamp / 1e6 if value.timestamp > 0 else (before + time.time()) / 2.0
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            return None, t
        return value.value.uiVal / 1000.0, t

    async def close(self) -> None:
        nvml = self._nvml
        with contextlib.suppress(nvml.NVMLError):
            await self._thread.call(nvml.nvmlShutdown)
        self._thread.close()


SOURCE = Registered(NvmlSource.name, NvmlSource.open, auto=True)
