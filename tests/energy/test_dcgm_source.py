"""The DCGM source against the fake DCGM bindings of `tests/fakes/dcgm/`."""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from exporter.config import EnergyConfig
from exporter.energy import EnergyReadError, EnergySourceUnavailable
from exporter.energy.dcgm import DcgmSettings, DcgmSource, find_bindings
from tests.energy.conftest import DCGM_BINDINGS

H100_0 = "GPU-0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
H100_1 = "GPU-0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f1"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def two_gpus(engine: Any) -> Any:
    import fake_hostengine

    engine.gpus = [
        fake_hostengine.FakeGpu(H100_0, energy_mj=86_400_123_456, power_w=312.25, instant_power_w=330.5),
        fake_hostengine.FakeGpu(H100_1, energy_mj=1_000, power_w=69.75),
    ]
    engine.clock = Clock(1_700_000_000.0)
    return fake_hostengine


async def test_reads_energy_with_dcgms_own_timestamps(fake_dcgm: Any) -> None:
    two_gpus(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig())
    fake_dcgm.clock.t = 1_700_000_001.5
    fake_dcgm.sample()
    fake_dcgm.clock.t = 1_700_000_009.0  # reading later does not move the instant
    samples = await source.read()
    await source.close()
    assert [(s.gpu.index, s.gpu.uuid, s.gpu.model) for s in samples] == [
        (0, H100_0, "NVIDIA H100 80GB HBM3"),
        (1, H100_1, "NVIDIA H100 80GB HBM3"),
    ]
    assert [(s.t, s.energy_j, s.power_w) for s in samples] == [
        (1_700_000_001.5, 86_400_123.456, 312.25),
        (1_700_000_001.5, 1.0, 69.75),
    ]
    assert fake_dcgm.connects == ["localhost:5555"]
    # Watched by number, every interval (µs), on all GPUs.
    assert fake_dcgm.watches == [(0x7FFFFFFF, (155, 156, 157), 1_000_000, 30.0, 0)]


async def test_blank_and_failed_values_are_no_reading_never_zero(fake_dcgm: Any) -> None:
    two_gpus(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig())
    fake_dcgm.blank = {(1, 156), (0, 155)}
    fake_dcgm.sample()
    [sample] = await source.read()
    # GPU 1's energy is blank: left out. GPU 0's board power is blank: the instant power stands in.
    assert (sample.gpu.uuid, sample.energy_j, sample.power_w) == (H100_0, 86_400_123.456, 330.5)
    fake_dcgm.blank = {(0, 156), (1, 156)}
    fake_dcgm.sample()
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "no_data"
    await source.close()


async def test_unsupported_fields_are_left_out(fake_dcgm: Any) -> None:
    hostengine = two_gpus(fake_dcgm)
    fake_dcgm.gpus[0].energy_mj = hostengine.INT64_NOT_SUPPORTED  # a GPU before Volta
    fake_dcgm.gpus[1].instant_power_w = hostengine.FP64_NOT_SUPPORTED  # field 157 before DCGM 3.2
    source = await DcgmSource.open(EnergyConfig())
    samples = await source.read()
    await source.close()
    assert [(s.gpu.uuid, s.energy_j, s.power_w) for s in samples] == [(H100_1, 1.0, 69.75)]


async def test_host_engine_restart_reconnects_with_bounded_backoff_and_watches_again(fake_dcgm: Any) -> None:
    two_gpus(fake_dcgm)
    monotonic = Clock(100.0)
    source = await DcgmSource.open(EnergyConfig(), monotonic=monotonic)
    assert len(await source.read()) == 2
    fake_dcgm.stop()
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "connection_lost"
    delays = []
    for _ in range(8):
        with pytest.raises(EnergyReadError) as failed:
            await source.read()  # a connect attempt, which fails
        assert failed.value.reason == "connection_not_valid"
        attempts = len(fake_dcgm.connects)
        with pytest.raises(EnergyReadError) as failed:
            await source.read()  # too early: no attempt
        assert failed.value.reason == "disconnected"
        assert len(fake_dcgm.connects) == attempts
        delay = float(str(failed.value).rsplit("next attempt in ", 1)[1].removesuffix("s"))
        delays.append(delay)
        monotonic.t += delay
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    fake_dcgm.restart()
    assert fake_dcgm.watches == []
    fake_dcgm.gpus[0].energy_mj += 5_000
    samples = await source.read()
    assert [s.energy_j for s in samples] == [86_400_128.456, 1.0]
    assert fake_dcgm.watches == [(0x7FFFFFFF, (155, 156, 157), 1_000_000, 30.0, 0)]
    await source.close()


async def test_a_counter_reset_reads_as_the_lower_value(fake_dcgm: Any) -> None:
    two_gpus(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig.model_validate({"interval": "500ms"}))
    fake_dcgm.gpus[0].energy_mj = 42  # the driver was reloaded
    fake_dcgm.clock.t += 1
    fake_dcgm.sample()
    samples = await source.read()
    assert samples[0].energy_j == 0.042
    assert fake_dcgm.watches[0][2] == 500_000
    await source.close()


async def test_every_binding_call_runs_in_one_worker_thread(fake_dcgm: Any) -> None:
    two_gpus(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig())
    for _ in range(3):
        await source.read()
    await source.close()
    threads = {thread for _, thread in fake_dcgm.calls}
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert [name for name, _ in fake_dcgm.calls][-1] == "dcgmDisconnect"


@pytest.mark.parametrize(
    ("cfg", "connected", "call"),
    [
        (
            DcgmSettings(address="/run/nvidia/nv-hostengine"),
            ["unix:///run/nvidia/nv-hostengine"],
            "dcgmConnect_v2",
        ),
        (DcgmSettings(address="unix:///tmp/nv-hostengine"), ["unix:///tmp/nv-hostengine"], "dcgmConnect_v2"),
        (
            DcgmSettings(address="nvidia-dcgm.gpu-operator.svc:5555"),
            ["nvidia-dcgm.gpu-operator.svc:5555"],
            "dcgmConnect_v2",
        ),
        (DcgmSettings(embedded=True), [], "dcgmStartEmbedded"),
    ],
)
async def test_host_engine_address_or_embedded(
    fake_dcgm: Any, cfg: DcgmSettings, connected: list[str], call: str
) -> None:
    two_gpus(fake_dcgm)
    source = await DcgmSource.open(EnergyConfig(dcgm=cfg))
    assert len(await source.read()) == 2
    await source.close()
    assert fake_dcgm.connects == connected
    assert call in [name for name, _ in fake_dcgm.calls]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            {"library_found": False},
            "dcgm: libdcgm.so.4 not found: install datacenter-gpu-manager-4-core, or set "
            "energy.dcgm.library_path to the directory that holds it",
        ),
        (
            {"version_mismatch": True},
            "dcgm: the DCGM library here and the host engine at localhost:5555 are different versions: "
            "install the host engine's DCGM version next to tokenwatt",
        ),
        (
            {"running": False},
            "dcgm: cannot connect to nv-hostengine at localhost:5555: start it (nv-hostengine -n -b ALL), "
            "point energy.dcgm.address at it, or set energy.dcgm.embedded: true",
        ),
    ],
)
async def test_start_up_failures_say_what_to_install_or_start(
    fake_dcgm: Any, breakage: dict[str, bool], expected: str
) -> None:
    two_gpus(fake_dcgm)
    for key, value in breakage.items():
        setattr(fake_dcgm, key, value)
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        await DcgmSource.open(EnergyConfig())
    assert unavailable.value.problems == [expected]


async def test_bindings_from_the_configured_path(dcgm_bindings_clean: None) -> None:
    assert str(DCGM_BINDINGS) not in sys.path
    source_cfg = DcgmSettings(bindings_path=str(DCGM_BINDINGS))
    found = find_bindings(source_cfg.bindings_path)
    assert Path(found.pydcgm.__file__ or "").parent == DCGM_BINDINGS
    engine = importlib.import_module("fake_hostengine").ENGINE
    two_gpus(engine)
    source = await DcgmSource.open(EnergyConfig(dcgm=source_cfg))
    assert len(await source.read()) == 2
    await source.close()


def test_bindings_from_a_standard_location(dcgm_bindings_clean: None, tmp_path: Path) -> None:
    found = find_bindings(None, standard=(tmp_path / "dcgm-4", DCGM_BINDINGS))
    assert Path(found.agent.__file__ or "").parent == DCGM_BINDINGS


def test_no_bindings_anywhere_names_every_place_tried(dcgm_bindings_clean: None, tmp_path: Path) -> None:
    with pytest.raises(EnergySourceUnavailable) as unavailable:
        find_bindings(str(tmp_path / "mine"), standard=(tmp_path / "dcgm-4", tmp_path / "dcgm-3"))
    assert unavailable.value.problems == [
        f"dcgm: DCGM's Python bindings (pydcgm) not found in sys.path, {tmp_path}/mine, {tmp_path}/dcgm-4, "
        f"{tmp_path}/dcgm-3: install datacenter-gpu-manager-4-core or set energy.dcgm.bindings_path"
    ]
