"""The daemon placing pods whose GPUs come only through DRA: the fake kubelet reports ResourceClaim devices
(driver, pool, device) and no device IDs; the API stand-in serves the NVIDIA driver's ResourceSlice
for the node, which says what each device is: a whole GPU, or a MIG device of a GPU the energy
source reports no MIG devices for (placed by its profile's slices).

Each simulated GPU's energy has a closed form, so the energy each pod should be given is known
exactly: pod a holds GPUs 0 and 2 whole, pod b a `3g.71gb` MIG device of GPU 1 (3 of its 7 slices).
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
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import LoadSchedule, SimulatedFleet
from exporter.placement import Holding
from tests.fakes.kube_api import RESOURCESLICES, FakeKubeApi
from tests.fakes.kubelet import FakeKubelet, FakePod
from tests.fakes.resource_slices import (
    DRIVER,
    PublishedGpu,
    PublishedMig,
    gpu_device,
    mig_device,
    resource_slice,
)
from tests.helpers import assert_promtool_accepts, get_text, scrape, scrape_until, value
from tests.placement.test_kubelet_end_to_end import (
    LOAD_A,
    LOAD_B,
    LOAD_C,
    POD,
    POWER,
    UUIDS,
    PhysicalGpus,
    assert_invariant,
    gpus_of,
    measured_span,
)
from tests.test_end_to_end import documented_metric_names

NODE = "gpu-node-1"
TOKEN = "tokenwatt-token"
GPU0, GPU1, GPU2 = (PublishedGpu(i, uuid) for i, uuid in enumerate(UUIDS))
MIG = PublishedMig(GPU1, 0, "MIG-9c3d4e5f-0000-5000-8000-000000000000", "3g.71gb", 9, 0, 4)


@dataclass
class Rig:
    daemon: Daemon
    gpus: PhysicalGpus
    kubelet: FakeKubelet
    api: FakeKubeApi
    servers: dict[str, SimulatedVllmServer]
    metrics_url: str


@contextlib.asynccontextmanager
async def dra_rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    start = time.time()
    folder = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
    api = FakeKubeApi()
    api.grant(TOKEN, {"resourceslices.resource.k8s.io": ["list", "watch"]})
    api.put(RESOURCESLICES, resource_slice(NODE, [gpu_device(GPU0), mig_device(MIG), gpu_device(GPU2)]))
    api.put(
        RESOURCESLICES, resource_slice("gpu-node-2", [gpu_device(PublishedGpu(0, UUIDS[1]))], suffix="q2w3e")
    )
    await api.start()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(folder / "kubeconfig", TOKEN)))
    monkeypatch.setenv("NODE_NAME", NODE)
    kubelet = FakeKubelet(
        folder / "kubelet.sock",
        [
            FakePod(
                "llm", "vllm-0", claims={"vllm-0-gpus": [(DRIVER, NODE, "gpu-0"), (DRIVER, NODE, "gpu-2")]}
            ),
            FakePod("llm", "chat-0", claims={"chat-0-mig": [(DRIVER, NODE, MIG.name)]}),
        ],
    )
    await kubelet.start()
    servers = {
        "a": SimulatedVllmServer(LoadSchedule(LOAD_A, start), model="llama-a"),
        "b": SimulatedVllmServer(LoadSchedule(LOAD_B, start), model="llama-b"),
    }
    urls = {name: await s.start() for name, s in servers.items()}
    fleets = tuple(SimulatedFleet(1, LoadSchedule(load, start), POWER) for load in (LOAD_A, LOAD_B, LOAD_C))
    gpus = PhysicalGpus(fleets)
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "200ms"},
            "placement": {
                "source": "kubelet",
                "kubelet": {"socket": str(kubelet.socket), "interval": "1s", "timeout": "2s"},
                "dra": {"enabled": True},
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
            yield Rig(daemon, gpus, kubelet, api, servers, daemon.url)
    finally:
        for s in servers.values():
            await s.stop()
        await kubelet.stop()
        await api.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.tools  # promtool
async def test_pods_with_gpus_only_through_dra_get_their_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with dra_rig(monkeypatch) as rig:
        await asyncio.sleep(5.0)
        found = await scrape(rig.metrics_url)
        assert_invariant(rig.daemon)

        assert value(found, "tokenwatt_placement_up", source="kubelet") == 1.0
        assert value(found, "tokenwatt_placement_up", source="dra") == 1.0
        assert value(found, "tokenwatt_placement_dra_devices") == 3.0  # this node's slice only
        assert value(found, "tokenwatt_placement_dra_unresolved_devices") == 0.0
        assert gpus_of(found, "a") == {"0", "2"} and gpus_of(found, "b") == {"1"}
        assert rig.daemon.accountant.placement.holdings["b"] == {Holding(UUIDS[1], 0, 3)}
        truths = {
            "a": lambda t0, t1: rig.gpus.used(0, t0, t1) + rig.gpus.used(2, t0, t1),
            "b": lambda t0, t1: rig.gpus.used(1, t0, t1) * 3 / 7,  # 3 of the GPU's 7 slices
        }
        for server, model in (("a", "llama-a"), ("b", "llama-b")):
            labels = {"server": server, "model": model, **POD[server]}
            t0, t1, out_tokens = measured_span(found, server, model, list(rig.servers[server].served))
            truth = truths[server](t0, t1)
            energy = value(found, "tokenwatt_server_energy_joules_total", **labels)
            jpt = value(found, "tokenwatt_joules_per_token", token_type="output", window="1m", **labels)
            error = jpt / (truth / out_tokens) - 1
            true_jpt = truth / out_tokens
            print(f"{server}: J/output token {jpt:.6f}, ground truth {true_jpt:.6f}, error {error:.4%}")
            assert energy == pytest.approx(truth, rel=0.01)
            assert jpt == pytest.approx(truth / out_tokens, rel=0.01)

        # b is given a device no slice publishes: it is counted, and b holds no GPU meanwhile.
        rig.kubelet.pods[1].claims = {"chat-0-mig": [(DRIVER, NODE, "gpu-7")]}
        unresolved = await scrape_until(
            rig.metrics_url,
            lambda f: value(f, "tokenwatt_placement_dra_unresolved_devices") == 1.0,
            "the unresolvable claim device was not counted",
        )
        assert gpus_of(unresolved, "b") == set()
        # The driver publishes it (a new generation of its pool): b is placed on it.
        rig.api.put(
            RESOURCESLICES,
            resource_slice(NODE, [gpu_device(GPU0), gpu_device(GPU2), gpu_device(PublishedGpu(7, UUIDS[1]))],
                           generation=2),
        )  # fmt: skip
        placed = await scrape_until(
            rig.metrics_url, lambda f: gpus_of(f, "b") == {"1"}, "the new slice was not used"
        )
        assert value(placed, "tokenwatt_placement_dra_unresolved_devices") == 0.0
        assert rig.daemon.accountant.placement.holdings["b"] == {Holding(UUIDS[1])}

        # The API server goes away: DRA placement is down, and the last view stays in force.
        await rig.api.stop()
        failed = await scrape_until(
            rig.metrics_url, lambda f: value(f, "tokenwatt_placement_up", source="dra") == 0.0, "DRA still up"
        )
        assert value(failed, "tokenwatt_placement_errors_total", source="dra", reason="unavailable") >= 1
        assert value(failed, "tokenwatt_placement_dra_devices") == 3.0
        assert gpus_of(failed, "a") == {"0", "2"} and gpus_of(failed, "b") == {"1"}
        assert_invariant(rig.daemon)
        text = await get_text(rig.metrics_url)
    assert_promtool_accepts(text)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"tokenwatt_placement_dra_devices", "tokenwatt_placement_dra_unresolved_devices"} <= families
    assert families <= documented_metric_names()
