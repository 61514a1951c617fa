"""The dcgm_exporter source against a dcgm-exporter look-alike served over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from exporter.config import EnergyConfig
from exporter.energy import EnergyReadError, RefreshObserving
from exporter.energy.dcgm_exporter import DcgmExporterSource, parse_page
from exporter.pages.parser import ParseError
from exporter.values import GpuSample
from tests.conftest import free_port
from tests.energy.dcgm_exporter_server import ExporterGpu, ExporterStyle, FakeDcgmExporter, render

H100_0 = "GPU-1d6b2a3e-7c1f-4a0b-9e55-3f0c1b2a4d01"
H100_1 = "GPU-1d6b2a3e-7c1f-4a0b-9e55-3f0c1b2a4d02"
A100_MIG = "GPU-8f2e4c6a-1b3d-4e5f-a7b9-c0d1e2f3a4b5"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Serve = Callable[[FakeDcgmExporter], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners = []

    async def start(exporter: FakeDcgmExporter) -> str:
        runner, url = await exporter.start()
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


async def open_source(url: str, clock: Callable[[], float], **cfg: object) -> DcgmExporterSource:
    settings = {"dcgm_exporter": {"url": url, **cfg}}
    return await DcgmExporterSource.open(EnergyConfig.model_validate(settings), clock)


async def baseline_then_refresh(exporter: FakeDcgmExporter, source: DcgmExporterSource) -> list[GpuSample]:
    """The first read only sets the baseline; the values of the next collect are readings."""
    assert await source.read() == []
    for gpu in exporter.gpus:
        gpu.energy_mj += 1
    exporter.collect()
    return await source.read()


@pytest.mark.parametrize(
    "style",
    [
        ExporterStyle(),
        ExporterStyle(hostname_label="hostname"),
        ExporterStyle(old_namespace=True),
        ExporterStyle(hostname_label=None, power_field="DCGM_FI_DEV_BOARD_POWER_WATTS"),
    ],
    ids=["released", "hostname-lowercase", "old-namespace", "dcgm-4.6-power-name"],
)
async def test_reproduces_the_served_energy_exactly_in_joules(serve: Serve, style: ExporterStyle) -> None:
    exporter = FakeDcgmExporter(
        [
            ExporterGpu(0, H100_0, energy_mj=123_456_788, power_w=312.456, pod="vllm-0"),
            ExporterGpu(1, H100_1, energy_mj=98_765_431_999, power_w=71.5),
        ],
        style,
    )
    url = await serve(exporter)
    source = await open_source(url, Clock(1000.0))
    try:
        samples = await baseline_then_refresh(exporter, source)
    finally:
        await source.close()
    assert [(s.gpu.index, s.gpu.uuid, s.gpu.model) for s in samples] == [
        (0, H100_0, "NVIDIA H100 80GB HBM3"),
        (1, H100_1, "NVIDIA H100 80GB HBM3"),
    ]
    assert [s.energy_j for s in samples] == [123_456.789, 98_765_432.0]
    assert [s.power_w for s in samples] == [312.456, 71.5]


async def test_a_mig_gpu_is_counted_once(serve: Serve) -> None:
    exporter = FakeDcgmExporter(
        [
            ExporterGpu(
                0,
                A100_MIG,
                model="NVIDIA A100-SXM4-40GB",
                energy_mj=5_000_000,
                power_w=180.0,
                mig_instances=(("3g.20gb", 1), ("2g.10gb", 5), ("1g.5gb", 13)),
            ),
            ExporterGpu(1, H100_1, energy_mj=7_000_000),
        ]
    )
    page = render(exporter.gpus, exporter.style)
    assert page.count(f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="{A100_MIG}"') == 3
    url = await serve(exporter)
    source = await open_source(url, Clock(1000.0))
    samples = await baseline_then_refresh(exporter, source)
    await source.close()
    assert [(s.gpu.uuid, s.energy_j, s.power_w) for s in samples] == [
        (A100_MIG, 5_000.001, 180.0),
        (H100_1, 7_000.001, 70.0),
    ]


async def test_held_values_are_not_new_readings_and_the_refresh_period_is_observed(serve: Serve) -> None:
    gpu = ExporterGpu(0, H100_0, energy_mj=1_000_000)
    exporter = FakeDcgmExporter([gpu])
    url = await serve(exporter)
    clock = Clock(1000.0)
    source = await open_source(url, clock)
    assert isinstance(source, RefreshObserving)
    assert await source.read() == []  # baseline: the value's age is unknown
    clock.t = 1001.0
    assert await source.read() == []
    gpu.energy_mj = 1_009_000
    exporter.collect()  # between the reads at 1001 and 1002
    clock.t = 1002.0
    [first] = await source.read()
    assert (first.t, first.energy_j) == (1001.5, 1009.0)
    assert source.refresh_period_s is None
    for t in (1010.0, 1020.0, 1031.0):  # the exporter holds its values for 30 s
        clock.t = t
        [held] = await source.read()
        assert (held.t, held.energy_j) == (1001.5, 1009.0)
    gpu.energy_mj = 1_018_000
    exporter.collect()
    clock.t = 1032.0
    [second] = await source.read()
    assert (second.t, second.energy_j) == (1031.5, 1018.0)
    assert source.refresh_period_s == 30.0
    assert exporter.scrapes == 7
    await source.close()


async def test_counter_reset_is_a_new_reading_with_a_lower_value(serve: Serve) -> None:
    gpu = ExporterGpu(0, H100_0, energy_mj=50_000_000)
    exporter = FakeDcgmExporter([gpu])
    url = await serve(exporter)
    source = await open_source(url, Clock(1000.0))
    await baseline_then_refresh(exporter, source)
    gpu.energy_mj = 1_234  # driver reloaded
    exporter.collect()
    [after] = await source.read()
    assert after.energy_j == 1.234
    await source.close()


async def test_only_the_joules_field_of_dcgm_4_6(serve: Serve) -> None:
    style = ExporterStyle(energy_mj_field=False, energy_joules_field=True)
    exporter = FakeDcgmExporter([ExporterGpu(0, H100_0, energy_mj=2_500_499)], style)
    url = await serve(exporter)
    source = await open_source(url, Clock(1000.0))
    [sample] = await baseline_then_refresh(exporter, source)
    assert sample.energy_j == 2500.5
    await source.close()


async def test_node_name_keeps_this_nodes_rows_and_flags_another_nodes_exporter(serve: Serve) -> None:
    exporter = FakeDcgmExporter([ExporterGpu(0, H100_0, energy_mj=10)], ExporterStyle(hostname="gpu-node-7"))
    url = await serve(exporter)
    here = await open_source(url, Clock(1000.0), node_name="gpu-node-7")
    assert len(await baseline_then_refresh(exporter, here)) == 1
    await here.close()
    elsewhere = await open_source(url, Clock(1000.0), node_name="gpu-node-1")
    with pytest.raises(EnergyReadError) as failed:
        await elsewhere.read()
    assert failed.value.reason == "other_node"
    assert "serves gpu-node-7, not gpu-node-1" in str(failed.value)
    await elsewhere.close()


async def test_failures_are_errors_with_reasons_not_zero(serve: Serve) -> None:
    exporter = FakeDcgmExporter([ExporterGpu(0, H100_0, energy_mj=10)])
    url = await serve(exporter)
    source = await open_source(url, Clock(1000.0))
    exporter.status = 503
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "http_status"
    await source.close()

    no_energy = FakeDcgmExporter([ExporterGpu(0, H100_0)], ExporterStyle(energy_mj_field=False))
    source = await open_source(await serve(no_energy), Clock(1000.0))
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "no_energy_metric"
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in str(failed.value)
    await source.close()

    nothing_there = await open_source(f"http://127.0.0.1:{free_port()}/metrics", Clock(1000.0))
    with pytest.raises(EnergyReadError) as failed:
        await nothing_there.read()
    assert failed.value.reason == "connection"
    await nothing_there.close()


def test_malformed_wanted_line_is_a_parse_error_and_other_junk_is_ignored() -> None:
    good = f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="{H100_0}"}} 42\n'
    junk = "DCGM_FI_DEV_SOMETHING_ELSE{broken\n"
    [reading] = parse_page(junk + good)
    assert reading.energy_j == 0.042
    with pytest.raises(ParseError):
        parse_page(f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="{H100_0}"}} lots\n')


async def test_gpus_are_listed_from_the_first_read_and_a_frozen_page_is_stale(serve: Serve) -> None:
    exporter = FakeDcgmExporter([ExporterGpu(0, H100_0, energy_mj=10), ExporterGpu(1, H100_1, energy_mj=20)])
    url = await serve(exporter)
    clock = Clock(1000.0)
    source = await open_source(url, clock, collect_interval="30s")
    assert await source.read() == []  # the baseline: no reading yet, but the GPUs are known
    assert [(g.uuid, age) for g, age in source.unchanged_s(1000.0)] == [(H100_0, 0.0), (H100_1, 0.0)]
    clock.t = 1090.0  # three collect intervals: still within the limit
    assert await source.read() == []
    clock.t = 1091.0  # the exporter froze (its DCGM watch died): every value held for over 90 s
    with pytest.raises(EnergyReadError) as failed:
        await source.read()
    assert failed.value.reason == "stale"
    assert "no energy value changed for 91s" in str(failed.value)
    assert [age for _, age in source.unchanged_s(1091.0)] == [91.0, 91.0]
    exporter.gpus[0].energy_mj += 5
    exporter.collect()
    clock.t = 1092.0
    [sample] = await source.read()  # one GPU moved again: fresh
    assert sample.gpu.uuid == H100_0
    assert [age for _, age in source.unchanged_s(1092.0)] == [0.0, 92.0]
    await source.close()
