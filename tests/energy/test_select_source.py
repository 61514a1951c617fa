"""Choosing the energy source: `auto`, start-up failures as `tokenwatt run` reports them, the daemon."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.app import Daemon
from exporter.config import ConfigError, EnergyConfig
from exporter.config_file import validate_config
from exporter.energy import EnergySource, EnergySourceUnavailable, Registered
from exporter.energy.select import AUTO_ORDER, SOURCES, open_source
from tests.energy.dcgm_exporter_server import ExporterGpu, FakeDcgmExporter
from tests.helpers import get_text, run_cli, samples

GPU_A = "GPU-3a0c6e1f-2b4d-4c8e-9f10-111213141516"
GPU_B = "GPU-3a0c6e1f-2b4d-4c8e-9f10-111213141517"


def test_auto_tries_the_gpu_libraries_in_the_registry_order() -> None:
    assert AUTO_ORDER == ("dcgm", "nvml", "amd")


@pytest.mark.parametrize("entry", SOURCES, ids=lambda entry: entry.name)
def test_the_config_takes_each_registered_source_and_its_section(entry: Registered) -> None:
    sections = {entry.name: {}} if entry.settings else {}
    config = validate_config({"energy": {"source": entry.name, **sections}})
    assert config.energy.source == entry.name
    if entry.settings:
        assert config.energy.section(entry.name, entry.settings) == entry.settings()
    # A section that spells out the defaults is no change (a reload compares configs).
    assert config == validate_config({"energy": {"source": entry.name}})


def test_an_unregistered_source_or_section_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config(
            {
                "energy": {
                    "source": "gpu-magic",
                    "nvml": {},  # a registered source without settings has no section
                    "dcgm": {"adress": "localhost:5555"},
                    "simulated": {"gpus": 0},
                    "dcgm_exporter": {"url": "http://127.0.0.1:0/metrics"},
                }
            }
        )
    assert refused.value.problems == [
        "energy.source: 'gpu-magic' is not allowed; input should be 'auto', 'dcgm', 'nvml', 'amd', "
        "'dcgm_exporter' or 'simulated'",
        "energy.nvml: unknown key (check its spelling and its place in the file)",
        "energy.dcgm.adress: unknown key (check its spelling and its place in the file)",
        "energy.simulated.gpus: Input should be greater than or equal to 1 (got 0)",
        "energy.dcgm_exporter.url: 'http://127.0.0.1:0/metrics' is not a URL: it must start with http:// or "
        "https://, name a host and, if any, a port from 1 to 65535",
    ]


async def test_every_registered_source_opens_from_the_config_alone(
    fake_dcgm: Any, fake_nvml: ModuleType, fake_amdsmi: ModuleType
) -> None:
    import fake_hostengine

    fake_dcgm.gpus = [fake_hostengine.FakeGpu(GPU_A, energy_mj=7_000)]
    fake_nvml.DRIVER.gpus = [fake_nvml.FakeGpu(GPU_A, energy_mj=7_000)]
    fake_amdsmi.SMI.gpus = [fake_amdsmi.FakeGpu(GPU_A)]
    opened = {}
    for entry in SOURCES:
        config = validate_config({"energy": {"source": entry.name, "simulated": {"gpus": 1}}})
        source: EnergySource = await open_source(config.energy)
        opened[entry.name] = (source.name, [g.uuid for g in source.gpus])
        await source.close()
    assert opened == {
        "dcgm": ("dcgm", [GPU_A]),
        "nvml": ("nvml", [GPU_A]),
        "amd": ("amd", [GPU_A]),
        "dcgm_exporter": ("dcgm_exporter", []),  # its GPUs are known from the first page read
        "simulated": ("simulated", ["GPU-00000000-0000-4000-8000-000000000000"]),
    }


@pytest.mark.parametrize(
    ("energy", "limit_s"),
    [
        ({"source": "dcgm_exporter", "interval": "1s"}, 60.0),  # two of its 30 s collect intervals
        ({"source": "dcgm_exporter", "interval": "20s"}, 100.0),  # five intervals
        ({"source": "dcgm_exporter", "interval": "1s", "dcgm_exporter": {"collect_interval": "2s"}}, 5.0),
        ({"source": "dcgm_exporter", "interval": "1s", "gap_limit": "7s"}, 7.0),
        ({"source": "simulated", "interval": "1s", "dcgm_exporter": {"collect_interval": "30s"}}, 5.0),
    ],
)
async def test_the_daemons_gap_limit_is_five_intervals_or_two_refreshes_of_the_source(
    energy: dict[str, Any], limit_s: float
) -> None:
    config = validate_config({"energy": energy})
    source = await open_source(config.energy)
    try:
        assert Daemon(config, source).accountant.gap_limit_s == limit_s
    finally:
        await source.close()


def no_nvidia_gpu_here() -> bool:
    return not Path("/dev/nvidiactl").exists()


async def test_auto_skips_an_unreachable_host_engine_and_takes_nvml(
    fake_dcgm: Any, fake_nvml: ModuleType, fake_amdsmi: ModuleType
) -> None:
    fake_dcgm.running = False
    fake_nvml.DRIVER.gpus = [fake_nvml.FakeGpu(GPU_A, energy_mj=4_000)]
    with capture_logs() as logs:
        source = await open_source(EnergyConfig(source="auto"))
    try:
        assert source.name == "nvml"
        [sample] = await source.read()
        assert sample.energy_j == 4.0
    finally:
        await source.close()
    not_used = [entry for entry in logs if entry["event"] == "energy source not used"]
    assert [(e["source"], e["reason"]) for e in not_used] == [
        (
            "dcgm",
            "cannot connect to nv-hostengine at localhost:5555: start it (nv-hostengine -n -b ALL), "
            "point energy.dcgm.address at it, or set energy.dcgm.embedded: true",
        )
    ]
    [chosen] = [entry for entry in logs if entry["event"] == "energy source chosen"]
    assert (chosen["source"], chosen["tried"]) == ("nvml", ["dcgm", "nvml"])


async def test_auto_prefers_dcgm(fake_dcgm: Any, fake_nvml: ModuleType) -> None:
    import fake_hostengine

    fake_dcgm.gpus = [fake_hostengine.FakeGpu(GPU_A, energy_mj=7_000)]
    fake_nvml.DRIVER.gpus = [fake_nvml.FakeGpu(GPU_A, energy_mj=7_000)]
    source = await open_source(EnergyConfig(source="auto"))
    assert source.name == "dcgm"
    await source.close()


async def test_auto_with_nothing_usable_lists_every_source_tried(
    fake_dcgm: Any, fake_nvml: ModuleType, fake_amdsmi: ModuleType
) -> None:
    fake_dcgm.library_found = False
    fake_nvml.DRIVER.library_found = False
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await open_source(EnergyConfig(source="auto"))
    assert [p.split(":", 1)[0] for p in unavailable.value.problems] == ["dcgm", "nvml", "amd"]
    assert "libdcgm.so.4 not found" in unavailable.value.problems[0]
    assert "libnvidia-ml.so.1 not found" in unavailable.value.problems[1]
    assert unavailable.value.problems[2] == "amd: amdsmi works but sees no AMD GPU"


async def test_pre_volta_gpu_is_logged_and_labelled(fake_nvml: ModuleType) -> None:
    fake_nvml.DRIVER.gpus = [fake_nvml.FakeGpu(GPU_B, name="Tesla P40", has_energy_counter=False)]
    with capture_logs() as logs:
        source = await open_source(EnergyConfig(source="nvml"))
    await source.close()
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "no usable energy counter: integrating power"
    assert (warning["uuid"], warning["method"]) == (GPU_B, "power_integration")


def tokenwatt_run(tmp_path: Path, energy: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "tokenwatt.yml"
    config.write_text(f"energy: {energy}\n")
    return run_cli("run", "--config", str(config), timeout=10)  # the promise: a clear exit within 10 s


@pytest.mark.skipif(not no_nvidia_gpu_here(), reason="this machine has an NVIDIA GPU")
def test_run_with_dcgm_on_a_machine_without_it_exits_2_with_one_line(tmp_path: Path) -> None:
    result = tokenwatt_run(tmp_path, "{source: dcgm}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "tokenwatt: energy source dcgm: DCGM's Python bindings (pydcgm) not found in sys.path, "
        "/usr/share/datacenter-gpu-manager-4/bindings/python3, /usr/local/dcgm/bindings/python3: "
        "install datacenter-gpu-manager-4-core or set energy.dcgm.bindings_path"
    ]


@pytest.mark.skipif(not no_nvidia_gpu_here(), reason="this machine has an NVIDIA GPU")
def test_run_with_auto_on_a_machine_without_gpus_exits_2_listing_each_source(tmp_path: Path) -> None:
    result = tokenwatt_run(tmp_path, "{source: auto}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(":", 2)[1] for line in lines] == [
        " energy source dcgm",
        " energy source nvml",
        " energy source amd",
    ]
    assert "libnvidia-ml.so.1 not found" in lines[1]


async def test_daemon_on_a_dcgm_exporter_exposes_refresh_period_and_counts_mig_once() -> None:
    exporter = FakeDcgmExporter(
        [
            ExporterGpu(0, GPU_A, energy_mj=10_000_000, mig_instances=(("3g.40gb", 1), ("3g.40gb", 2))),
            ExporterGpu(1, GPU_B, energy_mj=20_000_000),
        ]
    )
    runner, url = await exporter.start()
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "dcgm_exporter", "interval": "50ms", "dcgm_exporter": {"url": url}},
        }
    )
    try:
        async with Daemon(config, await open_source(config.energy)) as daemon:
            for _ in range(4):  # four collects, 0.4 s apart: one joule more per GPU each time
                await asyncio.sleep(0.4)
                for gpu in exporter.gpus:
                    gpu.energy_mj += 1_000
                exporter.collect()
            await asyncio.sleep(0.3)
            assert daemon.url is not None
            found = samples(await get_text(daemon.url))
    finally:
        await runner.cleanup()
    energy = {
        dict(labels)["uuid"]: (v, dict(labels)["method"])
        for (name, labels), v in found.items()
        if name == "tokenwatt_gpu_energy_joules_total"
    }
    # The first collect only sets the baseline; three changes follow, one joule each, one series per GPU.
    assert energy == {GPU_A: (3.0, "counter"), GPU_B: (3.0, "counter")}
    refresh = found[("tokenwatt_energy_source_refresh_seconds", (("source", "dcgm_exporter"),))]
    assert 0.2 < refresh < 1.0
    assert found[("tokenwatt_energy_source_up", (("source", "dcgm_exporter"),))] == 1.0
