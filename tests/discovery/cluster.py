"""A node for discovery tests: the Kubernetes API stand-in, the fake kubelet, simulated GPUs, vLLM-format
servers on loopback as the pods' containers, and the real daemon with `discovery.source: kubernetes`.

Every GPU draws the power of its own load schedule, and a pod placed on GPU k serves the tokens of that
same schedule, so the energy a pod's server should be given is known exactly (its GPU's, between two of
its pages) and so are its token counts (the pages it served).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import ServedCounters, SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule, PowerModel, SimulatedFleet
from exporter.values import Gpu, GpuSample
from tests.fakes.kube_api import PODS, FakeKubeApi, pod
from tests.fakes.kubelet import FakeKubelet, FakePod
from tests.helpers import Samples, scrape, scrape_until

NODE = "gpu-node-1"
TOKEN = "tokenwatt-serviceaccount-token"
READ = {"pods": ["get", "list", "watch"], "replicasets.apps": ["get"], "jobs.batch": ["get"]}
"""What the chart's ClusterRole grants."""
POWER = PowerModel(idle_w=60.0, j_per_input_token=0.05, j_per_output_token=0.7)
GPU_COUNT = 8
UUIDS = tuple(f"GPU-7d3e1a52-0000-4000-8000-{i:012d}" for i in range(GPU_COUNT))
LOADS = tuple(
    (
        LoadPhase(0.9 + 0.1 * i, input_tps=600.0 + 150 * i, output_tps=120.0 + 40 * i, running=4 + i,
                  requests_ps=2.0 + i),
        LoadPhase(0.7, input_tps=2400.0 - 100 * i, output_tps=420.0 + 10 * i, running=30, requests_ps=7.0),
    )
    for i in range(GPU_COUNT)
)



class Gpus:
    """The node's GPUs, each drawing the power of its own load schedule (an energy source)."""

    name = "simulated"
    reads_fresh = True

    def __init__(self, start: float) -> None:
        self.schedules = tuple(LoadSchedule(load, start) for load in LOADS)
        self.fleets = tuple(SimulatedFleet(1, s, POWER) for s in self.schedules)
        self.gpus = tuple(Gpu(i, uuid, "Simulated GPU") for i, uuid in enumerate(UUIDS))

    async def read(self) -> list[GpuSample]:
        t = time.time()
        samples = zip(self.gpus, self.fleets, strict=True)
        return [GpuSample(g, t, f.energy_at(t), f.power_at(t)) for g, f in samples]

    async def close(self) -> None:
        return None

    def used(self, gpu: int, t0: float, t1: float) -> float:
        return self.fleets[gpu].energy_at(t1) - self.fleets[gpu].energy_at(t0)


@dataclass
class Cluster:
    api: FakeKubeApi
    kubelet: FakeKubelet
    gpus: Gpus
    daemon: Daemon
    metrics_url: str
    servers: dict[str, SimulatedVllmServer] = field(default_factory=dict)
    """The server each running pod's container serves, by NAMESPACE/POD."""
    deleted: dict[str, SimulatedVllmServer] = field(default_factory=dict)
    """The stopped servers of deleted pods."""

    async def run_pod(
        self,
        namespace: str,
        name: str,
        gpu: int | str,
        *,
        model: str = "llama",
        annotations: Mapping[str, str] | None = None,
        node: str = NODE,
        port_from: str = "tokenwatt.io/port",
        **spec: Any,
    ) -> SimulatedVllmServer:
        """Start a vLLM-format server on loopback as the pod's container, give the pod GPU `gpu` (an
        index, or a device ID) at the kubelet, and create the Running pod at the API server. The pod
        says its port in the annotation `port_from`, or in a container port of that name."""
        index = gpu if isinstance(gpu, int) else 0
        server = SimulatedVllmServer(self.gpus.schedules[index], model=model)
        await server.start()
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        notes = {"tokenwatt.io/scrape": "true"}
        if "/" in port_from:
            notes[port_from] = str(port)
        else:
            spec["ports"] = [("grpc", 50051), (port_from, port)]
        self.servers[f"{namespace}/{name}"] = server
        if node == NODE:
            device = UUIDS[gpu] if isinstance(gpu, int) else gpu
            self.kubelet.pods.append(FakePod(namespace, name, {"nvidia.com/gpu": [device]}))
        self.api.put(PODS, pod(namespace, name, node, annotations={**notes, **(annotations or {})}, **spec))
        return server

    async def delete_pod(self, namespace: str, name: str) -> None:
        """The pod is deleted: gone from the API server and the kubelet, its server stopped."""
        self.api.delete(PODS, name, namespace)
        self.kubelet.pods = [p for p in self.kubelet.pods if (p.namespace, p.name) != (namespace, name)]
        server = self.deleted[f"{namespace}/{name}"] = self.servers.pop(f"{namespace}/{name}")
        await server.stop()

    def served(self, server: str) -> list[ServedCounters]:
        """The pages a pod's server served, running or deleted."""
        return list((self.servers.get(server) or self.deleted[server]).served)

    async def scrape(self) -> Samples:
        return await scrape(self.metrics_url)

    async def until(self, done: Callable[[Samples], bool], failure: str, limit_s: float = 15.0) -> Samples:
        """Scrape /metrics until `done` holds (a liveness bound, not a speed requirement)."""
        return await scrape_until(self.metrics_url, done, failure, limit_s, every_s=0.1)


def servers_on_page(found: Samples) -> set[str]:
    """Every server named by any series."""
    return {dict(ls)["server"] for (_, ls) in found if "server" in dict(ls)}


def config(kubeconfig: Path, socket: Path, **discovery: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "energy": {"source": "simulated", "interval": "200ms"},
        "placement": {
            "source": "kubelet", "kubelet": {"socket": str(socket), "interval": "1s", "timeout": "2s"}
        },
        "discovery": {
            "source": "kubernetes",
            "kubernetes": {
                "node_name": NODE,
                "kubeconfig": str(kubeconfig),
                "interval": "300ms",
                "timeout": "2s",
                "grace_period": "2s",
                **discovery,
            },
        },
        "windows": ["1m"],
    }


@contextlib.asynccontextmanager
async def cluster(
    permissions: Mapping[str, list[str]] = READ, api_up: bool = True, **discovery: Any
) -> AsyncIterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="discovery-", dir="/tmp"))
    api = FakeKubeApi()
    api.grant(TOKEN, permissions)
    if api_up:
        await api.start()
    kubelet = FakeKubelet(folder / "kubelet.sock")
    await kubelet.start()
    gpus = Gpus(time.time())
    kubeconfig = api.kubeconfig(folder / "kubeconfig", TOKEN)
    settings = validate_config(config(kubeconfig, kubelet.socket, **discovery))
    servers: dict[str, SimulatedVllmServer] = {}
    try:
        async with Daemon(settings, gpus) as daemon:
            assert daemon.url is not None
            yield Cluster(api, kubelet, gpus, daemon, daemon.url, servers)
    finally:
        for s in servers.values():
            await s.stop()
        await kubelet.stop()
        await api.stop()
        shutil.rmtree(folder, ignore_errors=True)
