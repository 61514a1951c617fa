"""Placement from the kubelet: the GPUs the device plugins allocated to each server's pod.

The kubelet serves the pod-resources API v1 (`PodResourcesLister`) on a unix socket. For one pod
we ask `Get`; where the kubelet refuses it (turned off: status UNKNOWN "PodResources API Get method
disabled"; before 1.27: UNIMPLEMENTED) or for several pods, `List` and keep ours. Pods are matched
by namespace and name. Every call opens its own connection, so a kubelet restart that recreates
the socket (a new inode) is followed at the next call, and has a deadline.

`KubeletRefresher` owns the state: the last good allocation (kept in force while the kubelet
fails) and the kubelet's `PlacementSourceState` (up, failures by reason, one log line per state
change). Its loop belongs to the daemon: `poll_once()`, then `wait()` for the interval or a
`wake()` (a server restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import grpc
import grpc.aio
import structlog

from exporter.config import Config, ServerConfig
from exporter.placement import Placement, Unmatched, place_static
from exporter.placement.dra import ClaimDevice
from exporter.placement.health import PlacementSourceState
from exporter.placement.podresources.api_pb2 import (
    GetPodResourcesRequest,
    GetPodResourcesResponse,
    ListPodResourcesRequest,
    ListPodResourcesResponse,
    PodResources,
)
from exporter.placement.podresources.api_pb2_grpc import PodResourcesListerStub
from exporter.values import Gpu, MigDevice, PodRef

log = structlog.get_logger("tokenwatt.placement")

GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpu.shared", "amd.com/gpu")
"""Resource names whose devices are GPUs, besides `nvidia.com/mig-*` and configured extra names."""
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""A List answer of a crowded node; larger answers fail (`response_too_large`)."""
MIN_WAKE_GAP_S = 1.0
"""Restarts seen by scrapes ask the kubelet again, at most this often."""
GET_DISABLED = "PodResources API Get method disabled"


class KubeletError(Exception):
    """A call to the kubelet failed; `reason` becomes the `reason` label of the error counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PodResourcesClient:
    """Asks the kubelet which devices it allocated to pods."""

    def __init__(
        self, socket: Path, timeout_s: float, resources: Iterable[str] = (), dra_driver: str | None = None
    ) -> None:
        self.socket = socket
        self.timeout_s = timeout_s
        self.resources = frozenset((*GPU_RESOURCES, *resources))
        self.dra_driver = dra_driver
        """The DRA driver whose claim devices are GPUs; None to read no DRA claims."""
        self.get_refused: str | None = None
        """Why `Get` is not used (`get_disabled`, `get_unimplemented`); None while it is."""
        self.inode: int | None = None
        """Inode of the socket at the latest call: a kubelet restart makes a new one."""

    async def devices(self, pods: Sequence[PodRef]) -> dict[PodRef, frozenset[str | ClaimDevice]]:
        """The GPU device IDs allocated to each pod's containers by device plugins, and its DRA claim
        devices of `dra_driver`; a pod the kubelet does not run has none."""
        self._check_socket()
        options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
        async with grpc.aio.insecure_channel(f"unix://{self.socket}", options=options) as channel:
            stub = PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
            try:
                if len(pods) == 1 and self.get_refused is None:
                    found = await self._get(stub, pods[0])
                    if found is not None:
                        return {pods[0]: found}
                answer: ListPodResourcesResponse = await stub.List(
                    ListPodResourcesRequest(), timeout=self.timeout_s
                )
            except grpc.aio.AioRpcError as e:
                raise _error(e) from None
        wanted = {(pod.namespace, pod.name) for pod in pods}  # matched by namespace and name, not uid
        listed = {
            (p.namespace, p.name): self._gpu_ids(p)
            for p in answer.pod_resources
            if (p.namespace, p.name) in wanted
        }
        return {pod: listed.get((pod.namespace, pod.name), frozenset()) for pod in pods}

    async def _get(self, stub: PodResourcesListerStub, pod: PodRef) -> frozenset[str | ClaimDevice] | None:
        """The pod's devices by `Get`; None where the kubelet refuses Get (then List is used from now on)."""
        request = GetPodResourcesRequest(pod_name=pod.name, pod_namespace=pod.namespace)
        try:
            answer: GetPodResourcesResponse = await stub.Get(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.get_refused = "get_unimplemented"
            elif e.code() == grpc.StatusCode.UNKNOWN and GET_DISABLED in details:
                self.get_refused = "get_disabled"
            elif e.code() == grpc.StatusCode.UNKNOWN and details.endswith("not found"):
                return frozenset()
            else:
                raise
            return None
        return self._gpu_ids(answer.pod_resources)

    def _gpu_ids(self, pod: PodResources) -> frozenset[str | ClaimDevice]:
        ids = {
            device_id
            for container in pod.containers
            for devices in container.devices
            if devices.resource_name in self.resources
            or devices.resource_name.startswith(MIG_RESOURCE_PREFIX)
            for device_id in devices.device_ids
        }
        claimed = {
            ClaimDevice(r.driver_name, r.pool_name, r.device_name)
            for container in pod.containers
            for claim in container.dynamic_resources
            for r in claim.claim_resources
            if r.driver_name == self.dra_driver and r.device_name
        }
        return frozenset((*ids, *claimed))

    def _check_socket(self) -> None:
        try:
            inode = self.socket.stat().st_ino
        except FileNotFoundError:
            raise KubeletError("socket_missing", f"no kubelet socket at {self.socket}") from None
        except PermissionError:
            raise KubeletError("permission_denied", f"no permission to reach {self.socket}") from None
        except OSError as e:
            raise KubeletError("socket_error", f"{self.socket}: {e.strerror}") from None
        if inode != self.inode:
            self.get_refused = None  # a restarted kubelet may have Get turned on
        self.inode = inode


def _error(e: grpc.aio.AioRpcError) -> KubeletError:
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        reason = "timeout"
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        reason = "rate_limited" if "rate limit" in details else "response_too_large"
    elif code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details.lower():
        reason = "permission_denied"
    elif code == grpc.StatusCode.UNAVAILABLE:
        reason = "unavailable"
    else:
        reason = "rpc_error"
    return KubeletError(reason, f"kubelet answered {code.name}: {details}"[:300])


class KubeletRefresher:
    """The devices the kubelet allocated to each server's pod, refreshed; failures become state."""

    component = "placement"

    def __init__(
        self,
        pods: Mapping[str, PodRef],
        client: PodResourcesClient,
        interval_s: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_change` runs after a poll that found a server's devices changed."""
        self.pods = dict(pods)
        """Server name -> its pod."""
        self.client = client
        self.interval_s = interval_s
        self.devices: dict[str, frozenset[str]] = {}
        """Server name -> device IDs of its pod, as of the latest good answer (empty before one)."""
        self.claims: dict[str, frozenset[ClaimDevice]] = {}
        """Server name -> DRA claim devices of its pod, as of the latest good answer."""
        self.health = PlacementSourceState("kubelet")
        """The kubelet's state; its errors count Get refusals too, once each."""
        self._wake = asyncio.Event()
        self._inode: int | None = None
        self._get_refused: str | None = None
        self._missing: frozenset[str] = frozenset()
        self._on_change = on_change
        self._asked = False

    @property
    def deadline_s(self) -> float:
        """A poll waits out the interval (or a `wake()`), then makes one call within its timeout."""
        return self.interval_s + self.client.timeout_s

    def next_delay_s(self) -> float:
        return min(MIN_WAKE_GAP_S, self.interval_s)

    async def poll_once(self) -> None:
        """Ask the kubelet when the next poll is due (at once the first time); place anew on a change."""
        if self._asked:
            await self._due()
        self._asked = True
        if await self.refresh():
            self._on_change()

    def crashed(self) -> None:
        self.health.crashed()

    async def refresh(self) -> bool:
        """Ask the kubelet once; True when a server's devices changed. Never raises a kubelet failure."""
        pods = self.pods  # the daemon may swap in new pods while the kubelet answers
        by_pod: dict[PodRef, list[str]] = {}
        for server, pod in pods.items():
            by_pod.setdefault(pod, []).append(server)
        try:
            found = await self.client.devices(list(by_pod))
        except KubeletError as e:
            self._note_refusal()
            self.health.failed(e.reason, str(e))
            return False
        self._note_refusal()
        self._note_socket()
        self.health.succeeded(socket=str(self.client.socket), pods=len(by_pod))
        missing = frozenset(s for pod, servers in by_pod.items() if not found[pod] for s in servers)
        for server in sorted(missing - self._missing):
            pod = pods[server]
            log.warning("no GPU allocated to the pod on this node", server=server, pod=_name(pod))
        self._missing = missing
        devices = {
            server: frozenset(d for d in found[pod] if isinstance(d, str))
            for pod, servers in by_pod.items()
            for server in servers
        }
        claims = {
            server: frozenset(d for d in found[pod] if isinstance(d, ClaimDevice))
            for pod, servers in by_pod.items()
            for server in servers
        }
        changed = (devices, claims) != (self.devices, self.claims)
        self.devices, self.claims = devices, claims
        return changed

    def wake(self) -> None:
        """Ask again soon (a scrape saw a server restart: its pod may hold other devices now)."""
        self._wake.set()

    async def _due(self) -> None:
        """Until the next poll is due: the rest of the interval after `next_delay_s()`, or a `wake()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, self.interval_s - MIN_WAKE_GAP_S))
        self._wake.clear()

    def _note_refusal(self) -> None:
        refused = self.client.get_refused
        if refused is not None and refused != self._get_refused:
            self.health.errors[refused] += 1
            log.info("kubelet refuses Get, using List", reason=refused)
        self._get_refused = refused

    def _note_socket(self) -> None:
        inode = self.client.inode
        if self._inode is not None and inode != self._inode:
            log.info("kubelet socket recreated (a kubelet restart)", socket=str(self.client.socket))
        self._inode = inode


def _name(pod: PodRef) -> str:
    return f"{pod.namespace}/{pod.name}"


def place(
    static: Mapping[str, Sequence[int | str] | None],
    pods: Mapping[str, PodRef],
    devices: Mapping[str, Iterable[str]],
    gpus: Sequence[Gpu],
    migs: Sequence[MigDevice] = (),
) -> tuple[Placement, list[Unmatched]]:
    """Every server's devices: configured (`static`: server -> gpus:) or, for a server not in `static`,
    its pod's, from the kubelet (`devices`: server -> device IDs). `pods` names each server's pod."""
    selectors: dict[str, Sequence[int | str] | None] = dict(static)
    selectors.update((server, sorted(devices.get(server, ()))) for server in pods if server not in static)
    return place_static(selectors, gpus, migs, pods)


def pods_of(servers: Iterable[ServerConfig]) -> dict[str, PodRef]:
    """Server name -> the pod it names (`servers[].pod`), for the servers that are pods."""
    return {s.name: PodRef.named(s.pod) for s in servers if s.pod is not None}


def refresher_of(config: Config, on_change: Callable[[], None]) -> KubeletRefresher | None:
    """The refresher of a config's pods; None with static placement, or no server that is a pod and no
    discovery of pods."""
    pods = pods_of(config.servers)
    if config.placement.source != "kubelet" or not (pods or config.discovery.source == "kubernetes"):
        return None
    k, dra = config.placement.kubelet, config.placement.dra
    client = PodResourcesClient(k.socket, k.timeout, k.resources, dra.driver if dra.enabled else None)
    return KubeletRefresher(pods, client, k.interval, on_change)
