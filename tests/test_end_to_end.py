"""The daemon end to end: simulated GPUs, a simulated vLLM server over real HTTP, /metrics over HTTP.

The simulator knows the ground truth exactly (energy integrates power in closed form; the vLLM
look-alike logs every page it served and when), so the exported figures are checked against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule, PowerModel, SimulatedFleet, SimulatedSource
from tests.helpers import assert_promtool_accepts, get_text, samples, value

# Always busy (so every served page has a distinct count) but changing load every second or so,
# off the energy sampling grid, so interpolation is exercised across load steps.
PHASES = (
    LoadPhase(1.3, input_tps=1200.0, output_tps=250.0, running=12, requests_ps=4.0),
    LoadPhase(0.7, input_tps=3000.0, output_tps=520.0, running=40, requests_ps=9.0),
    LoadPhase(1.1, input_tps=400.0, output_tps=90.0, running=3, requests_ps=1.0),
)
POWER = PowerModel(idle_w=65.0, j_per_input_token=0.05, j_per_output_token=0.7)
SERVER = "llm"


@dataclass
class Rig:
    daemon: Daemon
    fleet: SimulatedFleet
    inference: SimulatedVllmServer
    metrics_url: str


@contextlib.asynccontextmanager
async def running_rig(gpus: int = 2) -> AsyncIterator[Rig]:
    schedule = LoadSchedule(PHASES, start=time.time())
    inference = SimulatedVllmServer(schedule, model="llama-test")
    url = await inference.start()
    fleet = SimulatedFleet(gpus, schedule, POWER)
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "200ms"},
            "servers": [{"name": SERVER, "url": url, "kind": "auto", "interval": "300ms"}],
            "windows": ["1m"],
        }
    )
    try:
        async with Daemon(config, SimulatedSource(fleet)) as daemon:
            assert daemon.url is not None
            yield Rig(daemon, fleet, inference, daemon.url)
    finally:
        await inference.stop()


async def test_joules_per_token_matches_simulator_ground_truth() -> None:
    async with running_rig() as rig:
        await asyncio.sleep(6.0)
        text = await get_text(rig.metrics_url)

    found = samples(text)
    model = {"server": SERVER, "model": "llama-test"}
    out_tokens = value(found, "tokenwatt_server_tokens_total", token_type="output", **model)
    in_tokens = value(found, "tokenwatt_server_tokens_total", token_type="input", **model)
    energy = value(found, "tokenwatt_server_energy_joules_total", **model)

    # The served pages tell which instants the exported counters stand for: the first page is the
    # baseline, the last one applied is the page whose count matches what was exported.
    served = list(rig.inference.served)
    first = served[0]
    last = next(s for s in served if s.output_tokens - first.output_tokens == out_tokens)
    assert in_tokens == last.input_tokens - first.input_tokens
    assert value(found, "tokenwatt_server_requests_total", **model) == last.requests - first.requests

    true_energy = len(rig.fleet.gpus) * (rig.fleet.energy_at(last.t) - rig.fleet.energy_at(first.t))
    assert out_tokens > 1000
    assert energy == pytest.approx(true_energy, rel=0.01)

    # The test ran for less than the 1m window, so the window holds every interval.
    truth = true_energy / out_tokens
    jpt = value(found, "tokenwatt_joules_per_token", token_type="output", window="1m", **model)
    assert jpt == pytest.approx(truth, rel=0.01)
    error = abs(jpt - truth) / truth
    print(f"J/output token: exported {jpt:.6f}, ground truth {truth:.6f}, error {error:.4%}")
    assert value(
        found, "tokenwatt_joules_per_token", token_type="all", window="1m", **model
    ) == pytest.approx(true_energy / (out_tokens + in_tokens), rel=0.01)
    assert value(
        found, "tokenwatt_tokens_per_joule", token_type="output", window="1m", **model
    ) == pytest.approx(1 / truth, rel=0.01)
    assert value(found, "tokenwatt_target_up", server=SERVER) == 1.0
    assert value(found, "tokenwatt_energy_source_up", source="simulated") == 1.0
    placed = {
        dict(labels)["gpu"] for (name, labels), v in found.items() if name == "tokenwatt_server_gpu_info"
    }
    assert placed == {"0", "1"}
    gpu_energy = [v for (name, _), v in found.items() if name == "tokenwatt_gpu_energy_joules_total"]
    assert len(gpu_energy) == 2 and all(e > 0 for e in gpu_energy)


async def test_unreachable_target_is_down_and_keeps_its_counters() -> None:
    async with running_rig() as rig:
        await asyncio.sleep(2.0)
        before = samples(await get_text(rig.metrics_url))
        await rig.inference.stop()
        await asyncio.sleep(1.5)
        after = samples(await get_text(rig.metrics_url))

    model = {"server": SERVER, "model": "llama-test"}
    assert value(after, "tokenwatt_target_up", server=SERVER) == 0.0
    assert value(after, "tokenwatt_target_scrape_errors_total", server=SERVER, reason="connection") >= 1
    for token_type in ("input", "output"):
        kept = value(after, "tokenwatt_server_tokens_total", token_type=token_type, **model)
        assert kept >= value(before, "tokenwatt_server_tokens_total", token_type=token_type, **model) > 0


@pytest.mark.tools  # promtool
async def test_metrics_pass_promtool_and_are_all_documented() -> None:
    async with running_rig() as rig:
        await asyncio.sleep(2.0)
        text = await get_text(rig.metrics_url)
    assert "tokenwatt_joules_per_token{" in text
    assert_promtool_accepts(text)

    documented = documented_metric_names()
    emitted = {f.name for f in text_string_to_metric_families(text)}
    assert emitted, "no metric families"
    assert emitted <= documented, f"undocumented metrics: {sorted(emitted - documented)}"


def documented_metric_names() -> set[str]:
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(tokenwatt_[a-z0-9_]+)` \|", doc, flags=re.MULTILINE))


def test_no_nan_or_inf_when_windows_have_no_tokens() -> None:
    from exporter.accounting.figures import WindowFigures

    empty = WindowFigures(60.0, energy_j=120.0, input_tokens=0.0, output_tokens=0.0)
    assert all(empty.joules_per_token(t) is None for t in ("output", "input", "all"))
    some = WindowFigures(60.0, energy_j=120.0, input_tokens=0.0, output_tokens=40.0)
    assert some.joules_per_token("output") == 3.0 and some.joules_per_token("input") is None
    assert math.isfinite(some.joules_per_token("all") or math.nan)
