"""Activity readings that split shared GPUs: NVML per-process samples mapped to pods through a
`/proc` tree of real files, and MIG instances' engine activity on a dcgm-exporter page."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from exporter.config import EnergyConfig
from exporter.energy import ActivityReporting, EnergyReadError, MigReporting
from exporter.energy.activity import OUTSIDE_PODS, pod_uid_of
from exporter.energy.dcgm import DcgmSource
from exporter.energy.dcgm_exporter import DcgmExporterSource
from exporter.energy.nvml import NvmlSource
from exporter.values import MigDevice
from tests.energy.dcgm_exporter_server import ExporterGpu, FakeDcgmExporter

SHARED = "GPU-5a1b2c3d-0000-4000-8000-0000000000a1"
MIG = "GPU-5a1b2c3d-0000-4000-8000-0000000000a2"
POD_A = "0a0a0a0a-1111-4222-8333-00000000000a"
POD_B = "0b0b0b0b-1111-4222-8333-00000000000b"
T0_US = 1_700_000_000_000_000


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A host `/proc` with the cgroup files of two pods' processes (both cgroup drivers) and a
    process that is in no pod."""
    cgroups = {
        # cgroup v1, cgroupfs driver
        101: f"12:memory:/kubepods/burstable/pod{POD_A}/4f1c0d2a\n"
        f"11:cpu,cpuacct:/kubepods/burstable/pod{POD_A}/4f1c0d2a\n",
        102: f"12:memory:/kubepods/burstable/pod{POD_A}/4f1c0d2a\n",
        # cgroup v2, systemd driver: the UID's dashes are underscores
        201: "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{POD_B.replace('-', '_')}.slice/cri-containerd-9e8d.scope\n",
        301: "0::/system.slice/some-daemon.service\n",
    }
    for pid, text in cgroups.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    return tmp_path


def test_pod_uid_comes_from_either_cgroup_layout(proc: Path) -> None:
    assert pod_uid_of(proc, 101) == POD_A
    assert pod_uid_of(proc, 201) == POD_B
    assert pod_uid_of(proc, 301) is None  # a host process
    assert pod_uid_of(proc, 999) is None  # gone


async def test_nvml_sums_each_pods_processes_and_keeps_the_rest_unattributed(
    fake_nvml: ModuleType, proc: Path
) -> None:
    gpu = fake_nvml.FakeGpu(SHARED, energy_mj=1_000)
    mig = fake_nvml.FakeGpu(MIG, energy_mj=2_000, process_utilization_supported=False)
    fake_nvml.DRIVER.gpus = [gpu, mig]
    gpu.process_samples = [
        (101, T0_US + 100_000, 30),
        (101, T0_US + 266_000, 50),  # pid 101 averages 40 %
        (102, T0_US + 200_000, 10),
        (201, T0_US + 150_000, 35),
        (301, T0_US + 150_000, 5),
    ]
    source = await NvmlSource.open(EnergyConfig())
    source._proc = proc
    try:
        assert isinstance(source, ActivityReporting)
        samples = await source.read()
        assert {s.gpu.uuid for s in samples} == {SHARED, MIG}  # no activity on MIG, energy all the same
        [activity] = source.activity
        assert activity.uuid == SHARED
        assert activity.pods == pytest.approx({POD_A: 0.5, POD_B: 0.35, OUTSIDE_PODS: 0.05})

        await source.read()  # no newer sample: the last activity stands
        assert source.activity[0].pods == pytest.approx({POD_A: 0.5, POD_B: 0.35, OUTSIDE_PODS: 0.05})

        gpu.process_samples.append((201, T0_US + 400_000, 80))
        await source.read()  # only what is newer than the last sample seen counts
        assert source.activity[0].pods == pytest.approx({POD_B: 0.8})
    finally:
        await source.close()
    assert "nvmlDeviceGetProcessUtilization" not in fake_nvml.DRIVER.calls


async def test_nvml_falls_back_to_the_older_call_and_needs_the_host_pid_namespace(
    fake_nvml: ModuleType, proc: Path, tmp_path: Path
) -> None:
    gpu = fake_nvml.FakeGpu(SHARED, process_samples=[(101, T0_US + 1, 60), (201, T0_US + 2, 20)])
    fake_nvml.DRIVER.gpus = [gpu]
    fake_nvml.DRIVER.processes_utilization_info = False  # a driver before 550
    source = await NvmlSource.open(EnergyConfig())
    source._proc = proc
    try:
        await source.read()
        assert source.activity[0].pods == pytest.approx({POD_A: 0.6, POD_B: 0.2})
        assert "nvmlDeviceGetProcessUtilization" in fake_nvml.DRIVER.calls

        # Without the host's /proc no PID maps to a pod: no activity (shares fall back), not zeros.
        blind = await NvmlSource.open(EnergyConfig())
        blind._proc = tmp_path / "empty"
        await blind.read()
        assert blind.activity == ()
        await blind.close()
    finally:
        await source.close()


async def test_dcgm_exporter_gives_each_mig_instance_its_part_of_the_gpu() -> None:
    exporter = FakeDcgmExporter(
        [
            ExporterGpu(0, SHARED, energy_mj=5_000),
            ExporterGpu(
                1,
                MIG,
                model="NVIDIA A100-SXM4-80GB",
                energy_mj=7_000,
                mig_instances=(("3g.40gb", 1), ("2g.20gb", 5), ("1g.10gb", 13)),
                engine_active={1: 0.7, 5: 0.35, 13: 1.5},  # 1.5 is no ratio: left out
            ),
        ]
    )
    runner, url = await exporter.start()
    source = await DcgmExporterSource.open(EnergyConfig.model_validate({"dcgm_exporter": {"url": url}}))
    try:
        assert isinstance(source, ActivityReporting)
        await source.read()
    finally:
        await source.close()
        await runner.cleanup()
    [activity] = source.activity
    assert activity.uuid == MIG and activity.pods == {}
    assert activity.instances == pytest.approx({1: 0.7 * 3 / 7, 5: 0.35 * 2 / 7})


async def test_nvml_lists_the_mig_devices_of_mig_enabled_gpus(fake_nvml: ModuleType) -> None:
    mig_a, mig_b = "MIG-6f0e1d2c-3b4a-5968-8776-a5b4c3d2e1f0", "MIG-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f9"
    fake_nvml.DRIVER.gpus = [
        fake_nvml.FakeGpu(SHARED),  # no MIG at all: GetMigMode is not supported
        fake_nvml.FakeGpu(
            MIG,
            name="NVIDIA A100-SXM4-80GB",
            mig_capable=True,
            migs=[fake_nvml.FakeMig(mig_a, 1, "3g.40gb", 3), fake_nvml.FakeMig(mig_b, 5, "1g.10gb+me", 1)],
        ),
        fake_nvml.FakeGpu("GPU-5a1b2c3d-0000-4000-8000-0000000000a3", mig_capable=True),  # MIG off
    ]
    source = await NvmlSource.open(EnergyConfig())
    try:
        assert isinstance(source, MigReporting)
        assert source.mig_devices == (
            MigDevice(mig_a, MIG, 1, "3g.40gb", 3),
            MigDevice(mig_b, MIG, 5, "1g.10gb+me", 1),
        )
    finally:
        await source.close()


def _mig_host(engine: Any, profiling: bool = True) -> None:
    import fake_hostengine

    engine.profiling = profiling
    engine.clock = lambda: 1_700_000_000.0
    engine.gpus = [
        fake_hostengine.FakeGpu(SHARED, energy_mj=5_000),
        fake_hostengine.FakeGpu(
            MIG,
            energy_mj=7_000,
            instances=[
                fake_hostengine.FakeInstance(1, 3, engine_active=0.7),
                fake_hostengine.FakeInstance(5, 2, engine_active=0.35),
            ],
        ),
    ]


async def test_dcgm_watches_each_mig_instances_engine_and_weights_it_by_slices(fake_dcgm: Any) -> None:
    _mig_host(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig())
    try:
        assert isinstance(source, ActivityReporting)
        fake_dcgm.sample()
        assert len(await source.read()) == 2
        [activity] = source.activity
        assert (activity.uuid, activity.t) == (MIG, 1_700_000_000.0)
        assert activity.instances == pytest.approx({1: 0.7 * 3 / 7, 5: 0.35 * 2 / 7})
        # Watched on the group of every GPU instance, by number, every interval.
        assert (1001,) in [fields for _, fields, *_ in fake_dcgm.watches]
        assert fake_dcgm.groups == {1: 3}  # DCGM_GROUP_DEFAULT_INSTANCES

        fake_dcgm.restart()  # a new host engine forgot the watch: the reconnect watches again
        with pytest.raises(EnergyReadError):
            await source.read()
        fake_dcgm.gpus[1].instances[0].engine_active = 0.1
        await source.read()
        fake_dcgm.sample()
        await source.read()
        assert source.activity[0].instances == pytest.approx({1: 0.1 * 3 / 7, 5: 0.35 * 2 / 7})
    finally:
        await source.close()


async def test_dcgm_without_profiling_reads_energy_and_no_activity(fake_dcgm: Any) -> None:
    _mig_host(fake_dcgm, profiling=False)
    source = await DcgmSource.open(EnergyConfig())
    try:
        fake_dcgm.sample()
        assert len(await source.read()) == 2
        assert source.activity == ()
    finally:
        await source.close()
