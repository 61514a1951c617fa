"""A kubelet's pod-resources API v1 for tests: a real grpc.aio server on a unix socket, built from the
same vendored api.proto as the client, answering as the kubelet does.

What it imitates, from the kubelet's own server (pkg/kubelet/apis/podresources):
- `List` answers every pod; `Get` one pod, or a plain Go error (gRPC status UNKNOWN) "pod NAME in
  namespace NS not found"; with the KubeletPodResourcesGet gate off, UNKNOWN "PodResources API Get
  method disabled"; a kubelet before 1.27 has no Get at all (UNIMPLEMENTED).
- A token-bucket rate limit on every call (100 calls/s, burst 10 by default), refusing with
  RESOURCE_EXHAUSTED "rejected by rate limit".
- A restart: the socket is removed, and the new kubelet listens on a new socket file (a new inode).
- GPUs allocated through DRA: the container's `dynamic_resources`, one per ResourceClaim, each device
  named by driver, pool and device, with the CDI devices NVIDIA's DRA driver generates for it
  (`k8s.gpu.nvidia.com/claim=<claim UID>-<device>`), and no `devices` entry for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from exporter.placement.podresources import api_pb2, api_pb2_grpc

OTHER_DEVICES = (("example.com/nic", ("0000:3b:00.1",)), ("smarter-devices/fuse", ("fuse",)))
"""Devices of resources that are not GPUs, which placement must ignore."""


@dataclass
class FakePod:
    namespace: str
    name: str
    gpus: dict[str, list[str]] = field(default_factory=dict)
    """Resource name -> device IDs, all in the pod's first container."""
    claims: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    """DRA: ResourceClaim name -> its devices as (driver, pool, device), all in the first container."""

    def message(self) -> api_pb2.PodResources:
        gpu_devices = [
            api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in self.gpus.items()
        ]
        others = [api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in OTHER_DEVICES]
        claims = [
            api_pb2.DynamicResource(
                claim_name=claim,
                claim_namespace=self.namespace,
                claim_resources=[
                    api_pb2.ClaimResource(
                        cdi_devices=[api_pb2.CDIDevice(name=f"k8s.{driver}/claim={_uid(claim)}-{device}")],
                        driver_name=driver,
                        pool_name=pool,
                        device_name=device,
                    )
                    for driver, pool, device in devices
                ],
            )
            for claim, devices in self.claims.items()
        ]
        return api_pb2.PodResources(
            name=self.name,
            namespace=self.namespace,
            containers=[
                api_pb2.ContainerResources(
                    name="server", devices=gpu_devices, cpu_ids=[2, 3], dynamic_resources=claims
                ),
                api_pb2.ContainerResources(name="sidecar", devices=others),
            ],
        )


def _uid(name: str) -> str:
    """A stable UUID-shaped claim UID for a claim name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"resourceclaim/{name}"))


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    async def List(
        self, request: api_pb2.ListPodResourcesRequest, context: grpc.aio.ServicerContext
    ) -> object:
        await self.kubelet.admit("List", context)
        return api_pb2.ListPodResourcesResponse(pod_resources=[p.message() for p in self.kubelet.pods])

    async def Get(self, request: api_pb2.GetPodResourcesRequest, context: grpc.aio.ServicerContext) -> object:
        await self.kubelet.admit("Get", context)
        if self.kubelet.get == "unimplemented":
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "unknown method Get for service v1.PodResourcesLister"
            )
        if self.kubelet.get == "disabled":
            await context.abort(grpc.StatusCode.UNKNOWN, "PodResources API Get method disabled")
        for pod in self.kubelet.pods:
            if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name):
                return api_pb2.GetPodResourcesResponse(pod_resources=pod.message())
        await context.abort(
            grpc.StatusCode.UNKNOWN, f"pod {request.pod_name} in namespace {request.pod_namespace} not found"
        )
        raise AssertionError("abort returns only by raising")


class FakeKubelet:
    """The pod-resources server; change `pods`, `get`, `delay_s` at any time."""

    def __init__(
        self, socket: Path, pods: Iterable[FakePod] = (), qps: float = 100.0, burst: int = 10
    ) -> None:
        self.socket = socket
        self.pods = list(pods)
        self.get = "enabled"
        """`enabled`, `disabled` (the feature gate off) or `unimplemented` (a kubelet before 1.27)."""
        self.delay_s = 0.0
        """Time each answer takes (a kubelet that hangs)."""
        self.calls: list[str] = []
        self.qps, self.burst = qps, burst
        self._tokens, self._refilled = float(burst), time.monotonic()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(self), self._server)
        self._server.add_insecure_port(f"unix:{self.socket}")
        await self._server.start()

    async def stop(self) -> None:
        """Go away as a stopped kubelet does: the socket file is gone."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self.socket.unlink(missing_ok=True)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.qps)
        self._refilled = now
        if self._tokens < 1.0:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
        self._tokens -= 1.0
        self.calls.append(method)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
