"""The `amd` source: AMD Instinct GPUs through `amdsmi` (ROCm's AMD SMI library).

Energy is `amdsmi_get_energy_count`'s accumulator times its resolution, in µJ. That counter is known
to advance at the wrong rate on some parts, so at start-up each GPU's counter is checked against
its own power readings over a short stretch; a GPU whose counter disagrees by more than a factor
of two is read by integrating power instead, and says so (`method="power_integration"`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import time
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import structlog

from exporter.config import EnergyConfig
from exporter.energy import EnergySourceUnavailable, Registered, gap_limit_s, gpu_read_error, read_each
from exporter.energy.integration import PowerIntegral
from exporter.energy.library_thread import LibraryThread
from exporter.values import EnergyMethod, Gpu, GpuSample

log = structlog.get_logger("tokenwatt.energy")
SANE_RATIO = (0.5, 2.0)
"""Counter power over measured power, outside which the counter is not trusted."""
_POWER_KEYS = ("current_socket_power", "average_socket_power", "socket_power")


@dataclass(slots=True)
class _Device:
    handle: Any
    gpu: Gpu
    integral: PowerIntegral | None


@dataclass(frozen=True, slots=True)
class CounterCheck:
    """The start-up comparison of one GPU's energy counter with its power readings."""

    gpu: Gpu
    counter_w: float
    """Average power implied by the counter over the check."""
    measured_w: float
    """Average of the power readings over the same time."""

    @property
    def trusted(self) -> bool:
        if self.measured_w <= 0:
            return self.counter_w >= 0
        low, high = SANE_RATIO
        return low <= self.counter_w / self.measured_w <= high


def import_amdsmi() -> ModuleType:
    # Without libamd_smi.so the package prints two lines of its own and then fails with a KeyError;
    # the reason is said once, in our own words, below.
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return importlib.import_module("amdsmi")
    except Exception:
        raise EnergySourceUnavailable.of(
            "amd",
            "amdsmi is not importable (needs libamd_smi.so): install ROCm's amd-smi-lib and the "
            "amdsmi Python package of the same version",
        ) from None


class AmdSource:
    """Reads every AMD GPU amdsmi sees, one call at a time in the source's own thread."""

    name = "amd"
    reads_fresh = True

    def __init__(self, amdsmi: ModuleType, max_step_s: float) -> None:
        self._amdsmi = amdsmi
        self._max_step_s = max_step_s
        self._thread = LibraryThread("amd")
        self._devices: list[_Device] = []
        self.checks: list[CounterCheck] = []

    @classmethod
    async def open(cls, cfg: EnergyConfig, check_s: float = 0.5) -> AmdSource:
        """Initialise amdsmi, find the GPUs and check their counters over `check_s` seconds.

        Power is integrated over steps up to `gap_limit_s(cfg)` (see `PowerIntegral`).
        """
        amdsmi = import_amdsmi()
        source = cls(amdsmi, gap_limit_s(cfg))
        try:
            await source._thread.call(source._start, check_s)
        except amdsmi.AmdSmiException as e:
            source._thread.close()
            raise EnergySourceUnavailable.of("amd", f"amdsmi could not read the GPUs: {e}") from None
        if not source._devices:
            await source.close()
            raise EnergySourceUnavailable.of("amd", "amdsmi works but sees no AMD GPU")
        for check in source.checks:
            log.info(
                "energy counter check",
                source=cls.name,
                gpu=check.gpu.index,
                counter_watts=round(check.counter_w, 1),
                measured_watts=round(check.measured_w, 1),
                trusted=check.trusted,
            )
        return source

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(d.gpu for d in self._devices)

    def _start(self, check_s: float) -> None:
        smi = self._amdsmi
        smi.amdsmi_init()
        found = []
        for index, handle in enumerate(smi.amdsmi_get_processor_handles()):
            uuid = str(smi.amdsmi_get_gpu_device_uuid(handle))
            name = str(smi.amdsmi_get_gpu_asic_info(handle).get("market_name", "AMD GPU"))
            bdf = str(smi.amdsmi_get_gpu_device_bdf(handle))
            found.append((handle, Gpu(index, uuid, name, pci_bus_id=bdf)))
        self.checks = self._check_counters(found, check_s)
        for (handle, gpu), check in zip(found, self.checks, strict=True):
            if check.trusted:
                self._devices.append(_Device(handle, gpu, None))
            else:
                integrated = replace(gpu, energy_method=EnergyMethod.POWER_INTEGRATION)
                self._devices.append(_Device(handle, integrated, PowerIntegral(self._max_step_s)))

    def _check_counters(self, found: list[tuple[Any, Gpu]], check_s: float) -> list[CounterCheck]:
        if not found:
            return []
        steps = 5
        start = [(self._energy_uj(h), time.time()) for h, _ in found]
        powers: list[list[float]] = [[] for _ in found]
        for _ in range(steps):
            time.sleep(check_s / steps)
            for i, (h, _) in enumerate(found):
                power = self._power_w(h)
                if power is not None:
                    powers[i].append(power)
        checks = []
        for (h, gpu), (e0, t0), p in zip(found, start, powers, strict=True):
            e1, t1 = self._energy_uj(h), time.time()
            counter_w = (e1 - e0) / 1e6 / (t1 - t0)
            checks.append(CounterCheck(gpu, counter_w, sum(p) / len(p) if p else 0.0))
        return checks

    def _energy_uj(self, handle: Any) -> float:
        count = self._amdsmi.amdsmi_get_energy_count(handle)
        return float(count["energy_accumulator"]) * float(count["counter_resolution"])

    def _power_w(self, handle: Any) -> float | None:
        info = self._amdsmi.amdsmi_get_power_info(handle)
        for key in _POWER_KEYS:
            value = info.get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value)
        return None

    async def read(self) -> list[GpuSample]:
        return await self._thread.call(self._read)

    def _read(self) -> list[GpuSample]:
        return [sample for _, sample in read_each(self._devices, self._read_device)]

    def _read_device(self, device: _Device) -> GpuSample:
        gpu = device.gpu
        before = time.time()
        try:
            power_w = self._power_w(device.handle)
            if device.integral is None:
                energy_j = self._energy_uj(device.handle) / 1e6
                return GpuSample(gpu, (before + time.time()) / 2.0, energy_j, power_w)
        except self._amdsmi.AmdSmiException as e:
            raise gpu_read_error(gpu, "amdsmi_error", e) from None
        return device.integral.sample(gpu, (before + time.time()) / 2.0, power_w)

    async def close(self) -> None:
        smi = self._amdsmi
        with contextlib.suppress(smi.AmdSmiException):
            await self._thread.call(smi.amdsmi_shut_down)
        self._thread.close()


SOURCE = Registered(AmdSource.name, AmdSource.open, auto=True)
