"""On a machine with an NVIDIA GPU: the NVML energy counter rises monotonically and agrees with
integrated instant power within 5 %. Skipped, with the reason, where there is no NVIDIA GPU."""

from __future__ import annotations

import pytest

from tests.gpu.energy_check import TOLERANCE, measure, nvidia_gpu_missing

pytestmark = pytest.mark.gpu


async def test_nvml_counter_is_monotonic_and_agrees_with_integrated_power() -> None:
    missing = nvidia_gpu_missing()
    if missing is not None:
        pytest.skip(missing)
    load, checks = await measure()
    assert checks, "NVML returned no readings"
    report = "\n".join([f"load: {load}", *(c.line() for c in checks)])
    print(report)
    for check in checks:
        assert check.monotonic, report
        assert check.readings >= 10, report
        assert check.relative_error <= TOLERANCE, report
