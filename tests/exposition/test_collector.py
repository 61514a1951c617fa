"""The collector renders a snapshot: names, labels, and no sample where there is no number."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from exporter.accounting.book import GpuFigures, ModelFigures, ServerFigures, Snapshot, WindowFigures
from exporter.exposition.collector import (
    Health,
    SourceHealth,
    TargetHealth,
    TokenwattCollector,
    window_label,
)
from exporter.values import Gpu
from tests.helpers import samples


def test_window_labels() -> None:
    assert [window_label(s) for s in (60, 300, 900, 90, 3600, 86400, 0.5, 1)] == [
        "1m", "5m", "15m", "90s", "1h", "1d", "500ms", "1s",
    ]  # fmt: skip


def render(snapshot: Snapshot, health: Health) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TokenwattCollector(lambda: (snapshot, health)))
    return samples(generate_latest(registry).decode())


def test_snapshot_rendering() -> None:
    gpu = Gpu(0, "GPU-x", "H100")
    windows = (
        WindowFigures(60.0, energy_j=300.0, input_tokens=1000.0, output_tokens=200.0),
        WindowFigures(300.0, energy_j=50.0, input_tokens=0.0, output_tokens=0.0),  # idle: no ratio
    )
    model = ModelFigures("m", 900.0, 3000.0, 600.0, requests=None, running=2.0, windows=windows)
    snapshot = Snapshot(
        gpus=(GpuFigures(gpu, 1234.5, None, 1700000000.0),),
        servers=(ServerFigures("s", 40.0, 8.0, 1.5, (model,)),),
    )
    health = Health(
        "9.9.9",
        SourceHealth("nvml", False, None, (("timeout", 3),)),
        (TargetHealth("s", True, 0.01, 1700000001.0, ()),),
    )
    found = render(snapshot, health)
    g = (("gpu", "0"), ("gpu_model", "H100"), ("uuid", "GPU-x"))
    assert found[("tokenwatt_gpu_energy_joules_total", (*g[:2], ("method", "counter"), g[2]))] == 1234.5
    assert ("tokenwatt_gpu_power_watts", g) not in found  # no power reading, no sample
    assert found[("tokenwatt_server_energy_joules_total", (("model", "m"), ("server", "s")))] == 900.0
    jpt = {k[1]: v for k, v in found.items() if k[0] == "tokenwatt_joules_per_token"}
    assert jpt == {
        (("model", "m"), ("server", "s"), ("token_type", "output"), ("window", "1m")): 1.5,
        (("model", "m"), ("server", "s"), ("token_type", "input"), ("window", "1m")): 0.3,
        (("model", "m"), ("server", "s"), ("token_type", "all"), ("window", "1m")): 0.25,
    }
    assert not any(k[0] == "tokenwatt_server_requests_total" for k in found)  # unknown, not zero
    assert found[("tokenwatt_server_idle_energy_joules_total", (("server", "s"),))] == 40.0
    assert found[("tokenwatt_energy_source_up", (("source", "nvml"),))] == 0.0
    assert found[("tokenwatt_energy_read_errors_total", (("reason", "timeout"), ("source", "nvml")))] == 3
    assert found[("tokenwatt_target_up", (("server", "s"),))] == 1.0
    assert found[("tokenwatt_build_info", (("version", "9.9.9"),))] == 1.0
