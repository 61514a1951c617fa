"""Real-GPU check of the NVML source: the energy counter against integrated power, under load.

Run on a machine with an NVIDIA GPU: `python -m tests.gpu.energy_check` prints one line per GPU and
exits 1 if a counter went backwards or disagreed with integrated instant power by more than 5 %.
With torch installed (and CUDA working) GPU 0 runs matrix products during the measurement, so the
comparison is made under load; without it the GPUs are measured as they are.
`tests/gpu/test_gpu_energy.py` runs the same check under pytest and skips where there is no GPU.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from dataclasses import dataclass

from exporter.config import EnergyConfig
from exporter.energy import EnergySourceUnavailable
from exporter.energy.nvml import NvmlSource
from exporter.values import GpuSample

TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class EnergyCheck:
    uuid: str
    model: str
    seconds: float
    readings: int
    counter_j: float
    """Energy by the counter between the first and the last reading."""
    integrated_j: float
    """Instant power integrated (trapezoids) over the same readings."""
    monotonic: bool

    @property
    def relative_error(self) -> float:
        return abs(self.counter_j - self.integrated_j) / self.integrated_j if self.integrated_j else 1.0

    @property
    def passed(self) -> bool:
        return self.monotonic and self.readings >= 10 and self.relative_error <= TOLERANCE

    def line(self) -> str:
        mean_w = self.integrated_j / self.seconds if self.seconds else 0.0
        return (
            f"{'ok  ' if self.passed else 'FAIL'} {self.uuid} {self.model}: {self.seconds:.2f} s, "
            f"{self.readings} readings, mean {mean_w:.1f} W, counter {self.counter_j:.2f} J, "
            f"integrated power {self.integrated_j:.2f} J, difference {100 * self.relative_error:.2f} %, "
            f"monotonic {self.monotonic}"
        )


def nvidia_gpu_missing() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return f"no NVIDIA GPU here: nvmlInit failed ({e})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


def _load(stop: threading.Event) -> str:
    """Matrix products on GPU 0 until `stop` is set; says what load ran."""
    try:
        import torch
    except ImportError:
        return "no load (torch not installed)"
    if not torch.cuda.is_available():
        return "no load (torch sees no CUDA device)"
    a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)

    def run() -> None:
        while not stop.is_set():
            for _ in range(8):
                a @ b
            torch.cuda.synchronize()

    threading.Thread(target=run, daemon=True).start()
    return "torch bf16 8192x8192 matrix products on GPU 0"


async def measure(
    seconds: float = 5.0, warmup_s: float = 1.0, poll_s: float = 0.02
) -> tuple[str, list[EnergyCheck]]:
    source = await NvmlSource.open(EnergyConfig.model_validate({"gap_limit": "1s"}))
    stop = threading.Event()
    load = _load(stop)
    try:
        await asyncio.sleep(warmup_s)
        series: dict[str, list[GpuSample]] = {}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for sample in await source.read():
                series.setdefault(sample.gpu.uuid, []).append(sample)
            await asyncio.sleep(poll_s)
    finally:
        stop.set()
        await source.close()
    return load, [_check(samples) for samples in series.values()]


def _check(samples: list[GpuSample]) -> EnergyCheck:
    first, last = samples[0], samples[-1]
    integrated = 0.0
    for a, b in itertools.pairwise(samples):
        if a.power_w is not None and b.power_w is not None:
            integrated += (a.power_w + b.power_w) / 2.0 * (b.t - a.t)
    monotonic = all(b.energy_j >= a.energy_j for a, b in itertools.pairwise(samples))
    return EnergyCheck(
        first.gpu.uuid,
        first.gpu.model,
        last.t - first.t,
        len(samples),
        last.energy_j - first.energy_j,
        integrated,
        monotonic,
    )


def main() -> int:
    missing = nvidia_gpu_missing()
    if missing is not None:
        print(f"not run: {missing}")
        return 0
    try:
        load, checks = asyncio.run(measure())
    except EnergySourceUnavailable as e:
        print("\n".join(e.problems))
        return 1
    print(f"load: {load}")
    for check in checks:
        print(check.line())
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
