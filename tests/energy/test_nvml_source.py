"""The NVML source against the fake `pynvml`, and the real `nvidia-ml-py` on a machine without a GPU."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from exporter.config import EnergyConfig
from exporter.energy import EnergyReadError, EnergySourceUnavailable, error_reason
from exporter.energy.nvml import NvmlSource

H100 = "GPU-5a1b2c3d-0000-4000-8000-000000000001"
V100 = "GPU-5a1b2c3d-0000-4000-8000-000000000002"
P100 = "GPU-5a1b2c3d-0000-4000-8000-000000000003"


def machine(nvml: ModuleType, *gpus: object) -> object:
    driver = nvml.DRIVER
    driver.gpus = list(gpus)
    return driver


async def test_reads_energy_in_joules_and_instant_power_in_watts(fake_nvml: ModuleType) -> None:
    driver = machine(
        fake_nvml,
        fake_nvml.FakeGpu(H100, energy_mj=123_456_789, power_mw=312_500),
        fake_nvml.FakeGpu(V100, name="Tesla V100-SXM2-16GB", energy_mj=1_000, power_mw=45_250),
    )
    driver.clock = lambda: 1_700_000_000.25
    source = await NvmlSource.open(EnergyConfig())
    try:
        samples = await source.read()
    finally:
        await source.close()
    by_uuid = {s.gpu.uuid: s for s in samples}
    assert by_uuid[H100].energy_j == 123_456.789
    assert by_uuid[H100].power_w == 312.5
    assert by_uuid[V100].energy_j == 1.0
    assert by_uuid[V100].power_w == 45.25
    assert [(s.gpu.index, s.gpu.model, s.gpu.energy_method) for s in samples] == [
        (0, "NVIDIA H100 80GB HBM3", "counter"),
        (1, "Tesla V100-SXM2-16GB", "counter"),
    ]
    lifecycle = [c for c in driver.calls if not c.startswith("nvmlDeviceGetProcess")]
    assert lifecycle == ["nvmlInit", "nvmlShutdown"]


async def test_pre_volta_gpu_integrates_instant_power_and_says_so(fake_nvml: ModuleType) -> None:
    driver = machine(
        fake_nvml,
        fake_nvml.FakeGpu(P100, name="Tesla P100-PCIE-16GB", has_energy_counter=False, power_mw=100_000),
    )
    now = [1_700_000_000.0]
    driver.clock = lambda: now[0]
    source = await NvmlSource.open(EnergyConfig())
    energies = []
    for power_mw in (100_000, 200_000, 200_000):
        driver.gpus[0].power_mw = power_mw
        [sample] = await source.read()
        energies.append(sample.energy_j)
        assert sample.gpu.energy_method == "power_integration"
        assert sample.t == now[0]
        now[0] += 0.5
    # Trapezoids over 0.5 s steps: (100+200)/2*0.5 = 75 J, then 200*0.5 = 100 J.
    assert energies == [0.0, 75.0, 175.0]
    # A step longer than max_step_s is a gap: no energy is invented across it.
    now[0] += 10.0
    [sample] = await source.read()
    assert sample.energy_j == 175.0
    await source.close()


async def test_one_lost_gpu_is_left_out_and_all_lost_is_an_error_with_reason(fake_nvml: ModuleType) -> None:
    driver = machine(
        fake_nvml, fake_nvml.FakeGpu(H100, energy_mj=5_000), fake_nvml.FakeGpu(V100, energy_mj=7_000)
    )
    source = await NvmlSource.open(EnergyConfig())
    driver.gpus[0].lost = True
    samples = await source.read()
    assert [(s.gpu.uuid, s.energy_j) for s in samples] == [(V100, 7.0)]
    driver.gpus[1].lost = True
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "gpu_is_lost"
    await source.close()


async def test_driver_reload_reinitialises_and_the_counter_restarts(fake_nvml: ModuleType) -> None:
    driver = machine(fake_nvml, fake_nvml.FakeGpu(H100, energy_mj=900_000))
    source = await NvmlSource.open(EnergyConfig())
    [before] = await source.read()
    assert before.energy_j == 900.0
    driver.reload_driver()
    driver.gpus[0].energy_mj = 2_500
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "gpu_is_lost"
    [after] = await source.read()
    # A decrease: the accountant treats it as a reset, never as negative energy.
    assert after.energy_j == 2.5
    assert driver.calls.count("nvmlInit") == 2
    await source.close()


async def test_missing_power_field_leaves_power_unknown_not_zero(fake_nvml: ModuleType) -> None:
    machine(fake_nvml, fake_nvml.FakeGpu(H100, energy_mj=10_000, power_supported=False))
    source = await NvmlSource.open(EnergyConfig())
    [sample] = await source.read()
    assert (sample.energy_j, sample.power_w) == (10.0, None)
    await source.close()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"library_found": False}, "libnvidia-ml.so.1 not found"),
        ({"driver_loaded": False}, "NVIDIA kernel driver is not loaded"),
        ({}, "sees no GPU"),
    ],
)
async def test_unusable_nvml_is_unavailable_with_a_fix(
    fake_nvml: ModuleType, setup: dict[str, bool], expected: str
) -> None:
    for key, value in setup.items():
        setattr(fake_nvml.DRIVER, key, value)
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await NvmlSource.open(EnergyConfig())
    [problem] = unavailable.value.problems
    assert problem.startswith("nvml: ")
    assert expected in problem


def test_error_reasons_are_snake_case_names_of_the_error(fake_nvml: ModuleType) -> None:
    assert error_reason(fake_nvml.NVMLError(fake_nvml.NVML_ERROR_GPU_IS_LOST), "NVML") == "gpu_is_lost"
    assert error_reason(fake_nvml.NVMLError(fake_nvml.NVML_ERROR_NOT_SUPPORTED), "NVML") == "not_supported"
    assert error_reason(fake_nvml.NVMLError(12345), "NVML") == "nvml_error"


async def test_real_nvidia_ml_py_without_a_driver_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real package imports without a GPU; `nvmlInit` raises `NVMLError_LibraryNotFound`."""
    if importlib.util.find_spec("pynvml") is None:
        pytest.fail("nvidia-ml-py is part of the dev extra: pip install -e '.[dev]'")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    real = importlib.import_module("pynvml")
    assert "fakes" not in str(real.__file__)
    try:
        real.nvmlInit()
    except real.NVMLError_LibraryNotFound:
        pass
    else:
        real.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; tests/gpu/ covers it")
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await NvmlSource.open(EnergyConfig())
    assert unavailable.value.problems == [
        "nvml: libnvidia-ml.so.1 not found: run where the NVIDIA driver is installed; in a container use "
        "the NVIDIA runtime with NVIDIA_DRIVER_CAPABILITIES including utility"
    ]
