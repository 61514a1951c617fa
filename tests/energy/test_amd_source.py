"""The AMD source against the fake `amdsmi`, and the real package on a machine without ROCm."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from exporter.config import EnergyConfig
from exporter.energy import EnergyReadError, EnergySourceUnavailable
from exporter.energy.amd import AmdSource

MI300X_0 = "c2ff74a1-0000-1000-80a4-9ad5e3a1c001"
MI300X_1 = "c2ff74a1-0000-1000-80a4-9ad5e3a1c002"


async def test_counter_in_joules_after_a_passing_check(fake_amdsmi: ModuleType) -> None:
    smi = fake_amdsmi.SMI
    smi.gpus = [
        fake_amdsmi.FakeGpu(MI300X_0, power_w=150.0),
        fake_amdsmi.FakeGpu(MI300X_1, bdf="0000:e1:00.0", power_w=400.0),
    ]
    source = await AmdSource.open(EnergyConfig(), check_s=0.1)
    assert [c.trusted for c in source.checks] == [True, True]
    assert source.checks[1].counter_w == pytest.approx(400.0, rel=0.05)
    at = smi.started + 10.0
    smi.clock = lambda: at
    samples = await source.read()
    await source.close()
    # 10 s at 150 W after 1 J: 1_501_000_000 µJ in counts of 15.3 µJ (floored), as amdsmi reports it.
    counts = int(1_501_000_000.0 / 15.3)
    assert samples[0].energy_j == counts * 15.3 / 1e6
    assert [(s.gpu.uuid, s.gpu.model, s.gpu.energy_method, s.power_w) for s in samples] == [
        (MI300X_0, "AMD Instinct MI300X", "counter", 150.0),
        (MI300X_1, "AMD Instinct MI300X", "counter", 400.0),
    ]
    # The PCI address names the GPU to AMD's device plugin (placement from the kubelet).
    assert [s.gpu.pci_bus_id for s in samples] == ["0000:c1:00.0", "0000:e1:00.0"]


async def test_a_lost_gpu_is_left_out_and_all_lost_is_an_amdsmi_error(fake_amdsmi: ModuleType) -> None:
    smi = fake_amdsmi.SMI
    smi.gpus = [fake_amdsmi.FakeGpu(MI300X_0), fake_amdsmi.FakeGpu(MI300X_1)]
    source = await AmdSource.open(EnergyConfig(), check_s=0.01)
    smi.gpus[0].lost = True
    assert [s.gpu.uuid for s in await source.read()] == [MI300X_1]
    smi.gpus[1].lost = True
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    await source.close()
    assert failed.value.reason == "amdsmi_error"
    assert str(failed.value).startswith(f"GPU 0 ({MI300X_0}): Error code:")
    assert "AMDSMI_STATUS_NOT_FOUND - Device Not found" in str(failed.value)


async def test_a_counter_at_the_wrong_rate_falls_back_to_power_integration(fake_amdsmi: ModuleType) -> None:
    smi = fake_amdsmi.SMI
    smi.gpus = [fake_amdsmi.FakeGpu(MI300X_0, power_w=200.0, counter_rate=15.0)]
    source = await AmdSource.open(EnergyConfig(), check_s=0.1)
    [check] = source.checks
    assert not check.trusted
    assert check.counter_w == pytest.approx(3000.0, rel=0.05)
    assert check.measured_w == 200.0
    [first] = await source.read()
    [second] = await source.read()
    await source.close()
    assert first.gpu.energy_method == second.gpu.energy_method == "power_integration"
    assert first.gpu.pci_bus_id == "0000:c1:00.0"
    assert second.energy_j - first.energy_j == pytest.approx(200.0 * (second.t - first.t))


async def test_no_gpu_is_unavailable(fake_amdsmi: ModuleType) -> None:
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await AmdSource.open(EnergyConfig(), check_s=0.01)
    assert unavailable.value.problems == ["amd: amdsmi works but sees no AMD GPU"]


async def test_real_amdsmi_without_rocm_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    if importlib.util.find_spec("amdsmi") is None:
        monkeypatch.setitem(sys.modules, "amdsmi", None)  # an import that fails, as without the package
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await AmdSource.open(EnergyConfig())
    [problem] = unavailable.value.problems
    assert problem.startswith("amd: amdsmi is not importable (needs libamd_smi.so): install ROCm")
