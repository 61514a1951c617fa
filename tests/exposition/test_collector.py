"""The page of a snapshot: names, labels, no sample where there is no number, valid text at every level."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.accounting.figures import GpuFigures, ModelFigures, ServerFigures, Snapshot, WindowFigures
from exporter.config import Derived
from exporter.exposition.collector import Health, SourceHealth, TargetHealth, families, window_label
from exporter.exposition.render import PageWriter, render_text
from exporter.values import Gpu, PodLabels
from tests.exposition.reference import prometheus_client_text
from tests.exposition.snapshots import steady_snapshot
from tests.helpers import Series, assert_promtool_accepts, samples

Samples = dict[Series, float]


def test_window_labels() -> None:
    assert [window_label(s) for s in (60, 300, 900, 90, 3600, 86400, 0.5, 1)] == [
        "1m", "5m", "15m", "90s", "1h", "1d", "500ms", "1s",
    ]  # fmt: skip


def parse(text: bytes) -> Samples:
    return samples(text.decode())


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
    found = parse(render_text(snapshot, health))
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


HOSTILE = 'a "quoted"\\back\nslash ünï'
"""A label value with every character the text format escapes, and some that it does not."""


def hostile_snapshot() -> tuple[Snapshot, Health]:
    snap, health = steady_snapshot(3, gpus=2, pods=(("server-0001", PodLabels("ns", HOSTILE)),))
    models = tuple(replace(m, model=HOSTILE) for m in snap.servers[0].models)
    servers = (replace(snap.servers[0], models=models), *snap.servers[1:])
    return replace(snap, servers=servers), replace(health, version=HOSTILE, internal_errors=(("energy", 2),))


@pytest.mark.parametrize("derived", list(Derived))
def test_the_page_is_what_prometheus_client_would_write(derived: Derived) -> None:
    """Byte for byte: HELP, TYPE, label escaping and order, Go's float format, pod labels."""
    snap, health = hostile_snapshot()
    expected = prometheus_client_text(families(snap, health, derived), dict(health.pods))
    writer = PageWriter()
    for _ in range(2):  # the first render builds each series' text, the second reuses it
        assert writer.write(families(snap, health, derived), dict(health.pods)) == expected


@pytest.mark.tools  # promtool
@pytest.mark.parametrize("derived", list(Derived))
def test_promtool_accepts_the_page(derived: Derived) -> None:
    snap, health = hostile_snapshot()
    assert_promtool_accepts(render_text(snap, health, derived).decode())


def test_kept_series_text_follows_the_page() -> None:
    """A series that leaves the page is forgotten; a server that becomes a pod gets its labels."""
    writer = PageWriter()
    big, big_health = steady_snapshot(5, gpus=2)
    small, small_health = steady_snapshot(2, gpus=2)
    pods = {"server-0001": PodLabels("ns", "p")}
    writer.write(families(big, big_health, Derived.ALL), {})
    kept_big = sum(len(s) for s in writer._series.values())
    page = writer.write(families(small, small_health, Derived.ALL), pods)
    kept_small = sum(len(s) for s in writer._series.values())
    assert kept_small == page.count(b"\n") - page.count(b"# ") < kept_big
    found = parse(page)
    idle = "tokenwatt_server_idle_seconds_total"
    assert (idle, (("namespace", "ns"), ("pod", "p"), ("server", "server-0001"))) in found
    assert (idle, (("server", "server-0000"),)) in found
    assert (idle, (("server", "server-0001"),)) not in found
    page = writer.write(families(small, small_health, Derived.ALL), {})  # no longer a pod
    assert (idle, (("server", "server-0001"),)) in parse(page)


WINDOWED = {
    Derived.NONE: set(),
    Derived.ESSENTIAL: {"tokenwatt_joules_per_token", "tokenwatt_server_power_watts"},
    Derived.ALL: {
        "tokenwatt_joules_per_token", "tokenwatt_tokens_per_joule", "tokenwatt_active_joules_per_token",
        "tokenwatt_server_power_watts", "tokenwatt_server_idle_power_watts",
        "tokenwatt_band_joules_per_token", "tokenwatt_cost_per_token", "tokenwatt_carbon_grams_per_token",
    },
}  # fmt: skip
"""The families with a `window` label each level emits (docs/metrics.md lists the same)."""


@pytest.mark.parametrize("derived", list(Derived))
def test_derived_levels_keep_every_counter_and_drop_windowed_ratios(derived: Derived) -> None:
    snap, health = steady_snapshot(2, gpus=2)
    page = parse(render_text(snap, health, derived))
    everything = parse(render_text(snap, health, Derived.ALL))
    windowed = {name for name, labels in page if "window" in dict(labels)}
    assert windowed == WINDOWED[derived]
    unwindowed = {k: v for k, v in everything.items() if "window" not in dict(k[1])}
    assert {k: v for k, v in page.items() if "window" not in dict(k[1])} == unwindowed
