"""The daemon placed by a kubelet: two vLLM-format pods on simulated GPUs, one GPU time-sliced between
them, placement from the fake kubelet over its unix socket; then a pod moves to another GPU, then goes.

Each simulated GPU's energy has a closed form, so the energy each server should be given is known
exactly: its whole GPUs' energy plus an equal share of the time-sliced one, between its first and
its latest applied scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import ServedCounters, SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule, PowerModel, SimulatedFleet
from exporter.placement import Holding
from exporter.values import Gpu, GpuSample, MigDevice
from tests.fakes.kubelet import FakeKubelet, FakePod
from tests.helpers import Samples, assert_promtool_accepts, get_text, scrape, scrape_until, value

POWER = PowerModel(idle_w=60.0, j_per_input_token=0.05, j_per_output_token=0.7)
LOAD_A = (
    LoadPhase(1.3, input_tps=1200.0, output_tps=250.0, running=12, requests_ps=4.0),
    LoadPhase(0.7, input_tps=3000.0, output_tps=520.0, running=40, requests_ps=9.0),
)
LOAD_B = (
    LoadPhase(0.9, input_tps=500.0, output_tps=120.0, running=5, requests_ps=2.0),
    LoadPhase(1.1, input_tps=2200.0, output_tps=400.0, running=30, requests_ps=6.0),
)
LOAD_C = (LoadPhase(1.0, input_tps=800.0, output_tps=150.0, running=8, requests_ps=3.0),)
UUIDS = tuple(f"GPU-51b0c3d2-0000-4000-8000-{i:012d}" for i in range(3))
REFRESH_S = 1.0


class PhysicalGpus:
    """Three simulated GPUs, each drawing the power of its own load schedule (an energy source)."""

    name = "simulated"
    reads_fresh = True

    def __init__(self, fleets: tuple[SimulatedFleet, ...]) -> None:
        self.fleets = fleets
        self.gpus = tuple(Gpu(i, uuid, "Simulated GPU") for i, uuid in enumerate(UUIDS))

    async def read(self) -> list[GpuSample]:
        t = time.time()
        return [
            GpuSample(g, t, f.energy_at(t), f.power_at(t))
            for g, f in zip(self.gpus, self.fleets, strict=True)
        ]

    async def close(self) -> None:
        return None

    def used(self, gpu: int, t0: float, t1: float) -> float:
        return self.fleets[gpu].energy_at(t1) - self.fleets[gpu].energy_at(t0)


MIG_UUID = "MIG-7c1d2e3f-0000-5000-8000-000000000001"


class MigGpus(PhysicalGpus):
    """The same GPUs, with GPU 1 in MIG mode: the source reports its MIG devices (`MigReporting`)."""

    @property
    def mig_devices(self) -> tuple[MigDevice, ...]:
        return (MigDevice(MIG_UUID, UUIDS[1], 2, "3g.40gb", 3),)


@dataclass
class Rig:
    daemon: Daemon
    gpus: PhysicalGpus
    kubelet: FakeKubelet
    servers: dict[str, SimulatedVllmServer]
    metrics_url: str


@contextlib.asynccontextmanager
async def placed_rig(refresh_s: float = REFRESH_S, mig: bool = False) -> AsyncIterator[Rig]:
    start = time.time()
    folder = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
    kubelet = FakeKubelet(
        folder / "kubelet.sock",
        [
            FakePod("llm", "vllm-0", {"nvidia.com/gpu": [UUIDS[0], f"{UUIDS[2]}::1"]}),
            FakePod("llm", "chat-0", {"nvidia.com/gpu": [f"{UUIDS[2]}::2"]}),
            FakePod("batch", "train-0", {"nvidia.com/gpu": ["GPU-elsewhere"]}),
        ],
    )
    await kubelet.start()
    servers = {
        "a": SimulatedVllmServer(LoadSchedule(LOAD_A, start), model="llama-a"),
        "b": SimulatedVllmServer(LoadSchedule(LOAD_B, start), model="llama-b"),
    }
    urls = {name: await s.start() for name, s in servers.items()}
    fleets = tuple(SimulatedFleet(1, LoadSchedule(load, start), POWER) for load in (LOAD_A, LOAD_C, LOAD_B))
    gpus = MigGpus(fleets) if mig else PhysicalGpus(fleets)
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "200ms"},
            "placement": {
                "source": "kubelet",
                "kubelet": {"socket": str(kubelet.socket), "interval": f"{refresh_s}s", "timeout": "2s"},
            },
            "servers": [
                {"name": "a", "url": urls["a"], "interval": "300ms", "pod": "llm/vllm-0"},
                {"name": "b", "url": urls["b"], "interval": "300ms", "pod": "llm/chat-0"},
            ],
            "windows": ["1m"],
        }
    )
    try:
        async with Daemon(config, gpus) as daemon:
            assert daemon.url is not None
            yield Rig(daemon, gpus, kubelet, servers, daemon.url)
    finally:
        for s in servers.values():
            await s.stop()
        await kubelet.stop()
        shutil.rmtree(folder, ignore_errors=True)


def gpus_of(found: Samples, server: str) -> set[str]:
    return {
        dict(labels)["gpu"]
        for (name, labels), _ in found.items()
        if name == "tokenwatt_server_gpu_info" and dict(labels)["server"] == server
    }


POD = {"a": {"namespace": "llm", "pod": "vllm-0"}, "b": {"namespace": "llm", "pod": "chat-0"}}


def measured_span(
    found: Samples, server: str, model: str, served: list[ServedCounters]
) -> tuple[float, float, float]:
    """The start and end of the server's measured intervals, and the output tokens in them.

    The intervals end at the latest page its exported counters stand for. They start at the first
    page, or at the second where the first interval was unmeasured: energy before the kubelet's first
    answer belongs to no pod (it is unattributed), so only that interval may be.
    """
    out = value(
        found, "tokenwatt_server_tokens_total", server=server, model=model, token_type="output", **POD[server]
    )
    last = next(s for s in served if s.output_tokens - served[0].output_tokens == out)
    unmeasured = value(found, "tokenwatt_server_unmeasured_seconds_total", server=server, **POD[server])
    first = served[0] if unmeasured == 0 else served[1]
    assert unmeasured == pytest.approx(first.t - served[0].t, abs=0.05)
    return first.t, last.t, last.output_tokens - first.output_tokens


def assert_invariant(daemon: Daemon) -> None:
    snap = daemon.accountant.snapshot(time.time())
    for g in snap.gpus:
        assert g.attributed_j + g.unattributed_j == pytest.approx(g.settled_energy_j, rel=1e-9, abs=1e-6)
    given = sum(m.energy_j for s in snap.servers for m in s.models)
    attributed = sum(g.attributed_j for g in snap.gpus)
    pending = sum(ledger.pending_j() for ledger in daemon.accountant.gpu_ledgers.values())
    assert given == pytest.approx(attributed + pending, rel=1e-9, abs=1e-6)


@pytest.mark.tools  # promtool
async def test_pods_placed_by_the_kubelet_and_a_pod_that_moves() -> None:
    async with placed_rig() as rig:
        await asyncio.sleep(5.0)
        found = await scrape(rig.metrics_url)
        assert_invariant(rig.daemon)

        # Placed by the kubelet: a holds GPU 0 and a replica of GPU 2, b the other replica of GPU 2.
        assert value(found, "tokenwatt_placement_up", source="kubelet") == 1.0
        assert gpus_of(found, "a") == {"0", "2"} and gpus_of(found, "b") == {"2"}
        assert rig.kubelet.calls[0] == "List"  # two pods: one List, never a Get per pod
        truths = {
            "a": lambda t0, t1: rig.gpus.used(0, t0, t1) + rig.gpus.used(2, t0, t1) / 2,
            "b": lambda t0, t1: rig.gpus.used(2, t0, t1) / 2,
        }
        for server, model in (("a", "llama-a"), ("b", "llama-b")):
            labels = {"server": server, "model": model, **POD[server]}
            t0, t1, out_tokens = measured_span(found, server, model, list(rig.servers[server].served))
            truth = truths[server](t0, t1)
            energy = value(found, "tokenwatt_server_energy_joules_total", **labels)
            jpt = value(found, "tokenwatt_joules_per_token", token_type="output", window="1m", **labels)
            true_jpt = truth / out_tokens
            error = jpt / true_jpt - 1
            print(f"{server}: J/output token {jpt:.6f}, ground truth {true_jpt:.6f}, error {error:.4%}")
            assert energy == pytest.approx(truth, rel=0.01)
            assert jpt == pytest.approx(true_jpt, rel=0.01)
            assert value(found, "tokenwatt_target_up", server=server, **POD[server]) == 1.0

        # b's pod moves to GPU 1: the placement follows at the kubelet's first answer after the move
        # (or the one after it, where a call was already under way when the pod moved).
        rig.kubelet.pods[1].gpus = {"nvidia.com/gpu": [UUIDS[1]]}
        calls = len(rig.kubelet.calls)
        await scrape_until(
            rig.metrics_url,
            lambda found: gpus_of(found, "b") == {"1"},
            "the placement did not follow the pod",
        )
        assert len(rig.kubelet.calls) - calls <= 2
        await asyncio.sleep(1.5)
        after_move = await scrape(rig.metrics_url)
        assert gpus_of(after_move, "a") == {"0", "2"}
        assert_invariant(rig.daemon)
        b = {"server": "b", "model": "llama-b", **POD["b"]}
        moved_energy = value(after_move, "tokenwatt_server_energy_joules_total", **b)
        assert moved_energy > value(found, "tokenwatt_server_energy_joules_total", **b)

        # b's pod is gone: it holds no GPU, and keeps its cumulative counters.
        rig.kubelet.pods = rig.kubelet.pods[:1]
        final = await scrape_until(
            rig.metrics_url, lambda found: not gpus_of(found, "b"), "the placement did not see the pod go"
        )
        assert value(final, "tokenwatt_server_energy_joules_total", **b) >= moved_energy
        assert value(final, "tokenwatt_server_tokens_total", token_type="output", **b) > 0
        assert_invariant(rig.daemon)

        # The kubelet goes away: placement is down, says why, and the last placement stays.
        await rig.kubelet.stop()
        failed = await scrape_until(
            rig.metrics_url,
            lambda found: value(found, "tokenwatt_placement_up", source="kubelet") == 0,
            "still up",
        )
        assert (
            value(failed, "tokenwatt_placement_errors_total", source="kubelet", reason="socket_missing") >= 1
        )
        assert gpus_of(failed, "a") == {"0", "2"}
        text = await get_text(rig.metrics_url)
    assert_promtool_accepts(text)
    assert 'tokenwatt_joules_per_token{model="llama-a",namespace="llm",pod="vllm-0",server="a"' in text


async def test_a_server_restart_asks_the_kubelet_at_once() -> None:
    """A restarted pod may hold other GPUs: the daemon does not wait for the next refresh."""
    async with placed_rig(refresh_s=600.0) as rig:
        await scrape_until(rig.metrics_url, lambda found: gpus_of(found, "b") == {"2"}, "no first placement")
        calls = len(rig.kubelet.calls)
        server = rig.servers["b"]
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        await server.stop()
        rig.kubelet.pods[1].gpus = {"nvidia.com/gpu": [UUIDS[1]]}
        await asyncio.sleep(1.0)  # scrapes of b fail meanwhile
        await server.start(port=port)
        await scrape_until(
            rig.metrics_url,
            lambda found: gpus_of(found, "b") == {"1"},
            "the restart did not refresh the placement",
        )
        assert len(rig.kubelet.calls) > calls


async def test_a_mig_device_is_placed_on_its_parent_gpu() -> None:
    async with placed_rig(mig=True) as rig:
        rig.kubelet.pods[1].gpus = {"nvidia.com/mig-3g.40gb": [MIG_UUID]}
        await scrape_until(
            rig.metrics_url, lambda found: gpus_of(found, "b") == {"1"}, "the MIG device was not placed"
        )
        assert rig.daemon.accountant.placement.holdings["b"] == {Holding(UUIDS[1], 2, 3)}


def test_an_answer_before_the_first_energy_reading_waits_for_the_gpus(tmp_path: Path) -> None:
    """No GPU is known yet: placing then would find none of the pod's devices and log each as missing."""
    config = validate_config(
        {
            "placement": {"source": "kubelet", "kubelet": {"socket": str(tmp_path / "kubelet.sock")}},
            "servers": [{"name": "a", "url": "http://127.0.0.1:1/metrics", "pod": "llm/vllm-0"}],
        }
    )
    fleets = tuple(SimulatedFleet(1, LoadSchedule(LOAD_C, 0.0), POWER) for _ in UUIDS)
    daemon = Daemon(config, PhysicalGpus(fleets))
    assert daemon.kubelet is not None
    daemon.kubelet.devices = {"a": frozenset({UUIDS[0]})}
    with capture_logs() as logs:
        daemon._place(set())
        daemon._place({Gpu(0, UUIDS[0], "Simulated GPU")})
    assert [e["event"] for e in logs] == ["placement"]
    assert daemon.accountant.placement.gpus["a"] == {UUIDS[0]}


async def test_a_counter_reset_asks_the_kubelet_at_once() -> None:
    """A server restarted between two scrapes shows only as counters that went back."""
    async with placed_rig(refresh_s=600.0) as rig:
        await scrape_until(rig.metrics_url, lambda found: gpus_of(found, "b") == {"2"}, "no first placement")
        await asyncio.sleep(1.0)
        rig.kubelet.pods[1].gpus = {"nvidia.com/gpu": [UUIDS[1]]}
        rig.servers["b"].schedule = LoadSchedule(LOAD_B, time.time())  # its counters start again from 0
        await scrape_until(
            rig.metrics_url,
            lambda found: gpus_of(found, "b") == {"1"},
            "the reset did not refresh the placement",
        )
