"""GPUs allocated through Dynamic Resource Allocation (DRA), placed through the driver's ResourceSlices.

Where a pod's GPUs come from a ResourceClaim, the kubelet's pod-resources API names each one by the
triplet (driver, pool, device), e.g. (`gpu.nvidia.com`, `node-1`, `gpu-0`), not by a UUID. The DRA
driver publishes what each device is in ResourceSlices (API group `resource.k8s.io`): NVIDIA's
driver gives a whole GPU the attributes `type: gpu` and `uuid: GPU-…`, and a MIG device `type: mig`,
`uuid: MIG-…`, `parentUUID: GPU-…`, `profile: 3g.40gb` and `index` (its index on the parent).
Attribute names may also be qualified with the driver's domain (`gpu.nvidia.com/uuid`).

`ResourceSliceWatcher` keeps a bounded view of the driver's slices on this node: it lists them
(`resource.k8s.io/v1` first; a cluster that answers 404 for v1 is asked for `v1beta1`, where a
device's attributes sit under `basic:`), then watches from the list's resource version, relisting
when the watch expires (410 Gone). Only the newest generation of each pool counts, as the API asks.
Failures (API down, 403, a deadline) are a state (`PlacementSourceState`: a log line when it
changes, an error counter) and a back-off; the last good view stays in force meanwhile.

`resolve_claims` turns a pod's claim devices into device IDs the `DeviceResolver` knows: a GPU's
UUID, or a MIG device's UUID (with a `MigDevice` built from the slice, for energy sources that do
not report MIG devices themselves). A claim device no slice names is logged once and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import structlog
from lightkube import AsyncClient
from lightkube.core.client import FieldSelector
from lightkube.core.resource import GlobalResource
from lightkube.models import resource_v1beta1 as models_v1beta1
from lightkube.resources import resource_v1, resource_v1beta1

from exporter.backoff import backoff_s
from exporter.config import Config
from exporter.kube.client import API_ERRORS, KubeConfigError, KubeError, api_error, open_client
from exporter.placement import mig_profile_slices
from exporter.placement.health import PlacementSourceState
from exporter.values import MigDevice, PodRef

log = structlog.get_logger("tokenwatt.placement")

API_VERSIONS = ("v1", "v1beta1")
"""Versions of `resource.k8s.io` asked for, in this order (v1 since Kubernetes 1.34)."""
REQUEST_TIMEOUT_S = 10.0
"""Deadline of a list (a watch is bounded by its window, its connection by the client's timeout)."""
WATCH_WINDOW_S = 60
"""A watch is closed and reopened from its resource version after this long (one poll)."""
RETRY_S = 1.0
"""The first wait after a failure; it doubles with each failure in a row, up to the pollers' cap."""
MAX_SLICES = 512
"""Slices kept; the driver publishes one per node and pool, so more means a selector that did not hold."""
MAX_DEVICES_PER_SLICE = 128
"""Devices read from one slice: the most the API allows in one."""

_SLICE_TYPES: dict[str, type[GlobalResource]] = {
    "v1": resource_v1.ResourceSlice,
    "v1beta1": resource_v1beta1.ResourceSlice,
}
ResourceSlice = resource_v1.ResourceSlice | resource_v1beta1.ResourceSlice


@dataclass(frozen=True, slots=True, order=True)
class ClaimDevice:
    """One device of a DRA claim, as pod-resources names it: unique by driver, pool and device."""

    driver: str
    pool: str
    device: str

    def __str__(self) -> str:
        return f"{self.driver}/{self.pool}/{self.device}"


@dataclass(frozen=True, slots=True)
class SliceDevice:
    """What a ResourceSlice says one device is: a whole GPU, or a MIG device of a GPU."""

    uuid: str
    """`GPU-…` for a whole GPU, `MIG-…` for a MIG device."""
    parent_uuid: str | None = None
    """The GPU a MIG device is carved from; None for a whole GPU."""
    profile: str | None = None
    """A MIG device's profile, e.g. `3g.40gb`."""
    index: int | None = None
    """The `index` attribute: a GPU's index, or a MIG device's index on its parent GPU (which tells
    the parent's MIG devices apart)."""

    def mig_device(self) -> MigDevice | None:
        """The MIG device as an energy source would report it, where the slice says enough."""
        if self.parent_uuid is None or self.profile is None or self.index is None:
            return None
        try:
            slices = mig_profile_slices(self.profile)
        except ValueError:
            return None
        return MigDevice(self.uuid, self.parent_uuid, self.index, self.profile, slices)


@dataclass(frozen=True, slots=True)
class PublishedSlice:
    """The part of one ResourceSlice placement reads."""

    pool: str
    generation: int
    devices: Mapping[str, SliceDevice]
    """Device name -> what it is; devices without a `uuid` attribute are left out."""


def published(slice_: ResourceSlice) -> PublishedSlice:
    """Read a ResourceSlice of either API version."""
    spec = slice_.spec
    driver = spec.driver
    devices: dict[str, SliceDevice] = {}
    for device in (spec.devices or ())[:MAX_DEVICES_PER_SLICE]:
        if isinstance(device, models_v1beta1.Device):
            attributes = device.basic.attributes if device.basic is not None else None
        else:
            attributes = device.attributes
        found = _device(driver, attributes or {})
        if found is not None:
            devices[device.name] = found
    return PublishedSlice(spec.pool.name, spec.pool.generation, devices)


def _device(driver: str, attributes: Mapping[str, Any]) -> SliceDevice | None:
    values: dict[str, str | int] = {}
    for name, attribute in attributes.items():
        # lightkube leaves the values of a mapping as the JSON objects the API sent:
        # {"string": "GPU-…"}, {"int": 0}, {"version": "12.4.0"}, {"bool": true}.
        if not isinstance(attribute, Mapping):
            continue
        value = attribute.get("string", attribute.get("int"))
        if isinstance(value, str | int) and not isinstance(value, bool):
            values[name.removeprefix(f"{driver}/")] = value
    uuid, parent, profile, index = (values.get(k) for k in ("uuid", "parentUUID", "profile", "index"))
    if not isinstance(uuid, str):
        return None
    return SliceDevice(
        uuid,
        parent if isinstance(parent, str) else None,
        profile if isinstance(profile, str) else None,
        index if isinstance(index, int) else None,
    )


class SliceView:
    """The devices of the slices seen, looked up by pool and device name (newest pool generation only)."""

    def __init__(self, slices: Mapping[str, PublishedSlice] | None = None) -> None:
        self.slices = dict(slices or {})
        """Slice name -> what it publishes."""
        newest: dict[str, int] = {}
        for s in self.slices.values():
            newest[s.pool] = max(newest.get(s.pool, s.generation), s.generation)
        self._devices = {
            (s.pool, name): device
            for s in self.slices.values()
            if s.generation == newest[s.pool]
            for name, device in s.devices.items()
        }

    def __len__(self) -> int:
        return len(self._devices)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SliceView) and self._devices == other._devices

    __hash__ = None  # type: ignore[assignment]  # mutable-looking equality: not a dict key

    def find(self, pool: str, device: str) -> SliceDevice | None:
        return self._devices.get((pool, device))


class ResourceSliceWatcher:
    """The driver's ResourceSlices on this node, listed then watched; failures become state."""

    component = "dra"

    def __init__(
        self,
        connect: Callable[[], AsyncClient],
        driver: str,
        node_name: str,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """`connect` opens the API client (at the first poll); `on_change` runs when the view changed."""
        self.driver = driver
        self.node_name = node_name
        self.view = SliceView()
        """The latest good view: kept while the API fails."""
        self.api_version: str | None = None
        """The `resource.k8s.io` version the API serves slices in; None until a list succeeded."""
        self.health = PlacementSourceState("dra")
        self.unresolved: frozenset[tuple[str, ClaimDevice]] = frozenset()
        """(Server, claim device) pairs no slice names, as of the latest placement."""
        self._connect = connect
        self._client: AsyncClient | None = None
        self._versions = list(API_VERSIONS)
        self._resource_version: str | None = None
        self._on_change = on_change
        self._full_logged = False

    @property
    def deadline_s(self) -> float:
        return WATCH_WINDOW_S + REQUEST_TIMEOUT_S

    def next_delay_s(self) -> float:
        failures = self.health.failures
        return backoff_s(RETRY_S, failures - 1) if failures else 0.0

    def crashed(self) -> None:
        self.health.crashed()
        self._resource_version = None

    async def poll_once(self) -> None:
        """List (the first time, and after a watch expired), else watch for one window."""
        try:
            if self._client is None:
                self._client = self._connect()
            if self._resource_version is None:
                await self._list(self._client)
            else:
                await self._watch(self._client)
        except KubeConfigError as e:
            self._fail("no_credentials", str(e))
        except API_ERRORS as e:
            self._api_error(api_error(e))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _list(self, client: AsyncClient) -> None:
        version = self._versions[0]
        listed = client.list(_SLICE_TYPES[version], fields=self._selector())
        slices: dict[str, PublishedSlice] = {}
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async for item in listed:
                self._keep(slices, item)
        self._resource_version = listed.resourceVersion
        if self.api_version != version:
            log.info("reading ResourceSlices", api_version=f"resource.k8s.io/{version}", driver=self.driver)
        self.api_version = version
        self.health.succeeded(driver=self.driver, node=self.node_name)
        self._apply(slices)

    async def _watch(self, client: AsyncClient) -> None:
        # lightkube types the watch as an iterable; it is an async generator, closed here so that
        # its HTTP stream is released when the window ends.
        watch = cast(
            AsyncGenerator[tuple[str, GlobalResource], None],
            client.watch(
                _SLICE_TYPES[self._versions[0]],
                fields=self._selector(),
                resource_version=self._resource_version,
                server_timeout=WATCH_WINDOW_S,
            ),
        )
        # The end of the window is no failure: the next poll watches on from the latest version.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WATCH_WINDOW_S), contextlib.aclosing(watch) as events:
                async for kind, item in events:
                    if not isinstance(item, resource_v1.ResourceSlice | resource_v1beta1.ResourceSlice):
                        continue
                    slices = dict(self.view.slices)
                    if kind == "DELETED":
                        slices.pop(_name(item), None)
                    else:
                        self._keep(slices, item)
                    if item.metadata is not None and item.metadata.resourceVersion:
                        self._resource_version = item.metadata.resourceVersion
                    self.health.succeeded(driver=self.driver, node=self.node_name)
                    self._apply(slices)

    def _keep(self, slices: dict[str, PublishedSlice], item: GlobalResource) -> None:
        if not isinstance(item, resource_v1.ResourceSlice | resource_v1beta1.ResourceSlice):
            return
        name = _name(item)
        if name not in slices and len(slices) >= MAX_SLICES:
            if not self._full_logged:
                log.warning("too many ResourceSlices: ignoring the rest", kept=MAX_SLICES, driver=self.driver)
                self._full_logged = True
            self.health.errors["too_many_slices"] += 1
            return
        slices[name] = published(item)

    def _apply(self, slices: dict[str, PublishedSlice]) -> None:
        view, before = SliceView(slices), self.view
        self.view = view
        if view != before:  # the devices changed, not only the slices that hold them
            log.info("ResourceSlices changed", driver=self.driver, devices=len(view))
            self._on_change()

    def _selector(self) -> FieldSelector:
        return {"spec.driver": self.driver, "spec.nodeName": self.node_name}

    def _api_error(self, e: KubeError) -> None:
        if e.code == 404 and len(self._versions) > 1 and self._resource_version is None:
            gone = self._versions.pop(0)
            log.info("resource.k8s.io version not served, trying the next", api_version=gone)
            return
        if e.code == 410:
            log.info("ResourceSlice watch expired (410 Gone): listing again", driver=self.driver)
            self.health.errors["expired"] += 1
            self._resource_version = None
            return
        self._fail(e.reason, str(e))

    def _fail(self, reason: str, message: str) -> None:
        self.health.failed(reason, message)
        self._resource_version = None  # list again once the API answers

    def resolve(
        self,
        devices: Mapping[str, Iterable[str]],
        claims: Mapping[str, Iterable[ClaimDevice]],
        pods: Mapping[str, PodRef],
        migs: Iterable[MigDevice],
    ) -> tuple[dict[str, frozenset[str]], tuple[MigDevice, ...]]:
        """Each server's device IDs (`devices`) with its claim devices (`claims`) added as the UUIDs
        the slices give them; the MIG devices to resolve them against (`migs`, plus those only the
        slices describe). Logs each claim device no slice names, once."""
        ids, extra, unresolved = resolve_claims(claims, self.driver, self.view)
        if self.api_version is None:
            unresolved = frozenset()  # no list yet: nothing can be told unresolvable
        merged = {s: frozenset((*devices.get(s, ()), *ids.get(s, ()))) for s in devices.keys() | ids.keys()}
        migs = tuple(migs)
        known = {m.uuid.lower() for m in migs}
        added = tuple(m for m in extra if m.uuid.lower() not in known)
        for server, device in sorted(unresolved - self.unresolved):
            pod = pods.get(server)
            log.warning(
                "DRA device in no ResourceSlice",
                server=server,
                pod=f"{pod.namespace}/{pod.name}" if pod else None,
                device=str(device),
                slices_up=self.health.up,
            )
        self.unresolved = unresolved
        return merged, (*migs, *added)


def resolve_claims(
    claims: Mapping[str, Iterable[ClaimDevice]], driver: str, view: SliceView
) -> tuple[dict[str, frozenset[str]], list[MigDevice], frozenset[tuple[str, ClaimDevice]]]:
    """Each server's claim devices as the UUIDs the slices give them; the MIG devices the slices
    describe; the (server, claim device) pairs no slice names."""
    ids: dict[str, frozenset[str]] = {}
    migs: list[MigDevice] = []
    unresolved: set[tuple[str, ClaimDevice]] = set()
    for server, held in claims.items():
        found: set[str] = set()
        for device in held:
            published_as = view.find(device.pool, device.device) if device.driver == driver else None
            if published_as is None:
                unresolved.add((server, device))
                continue
            found.add(published_as.uuid)
            mig = published_as.mig_device()
            if mig is not None:
                migs.append(mig)
        ids[server] = frozenset(found)
    return ids, migs, frozenset(unresolved)


def _name(item: ResourceSlice) -> str:
    return (item.metadata.name if item.metadata else None) or ""


def slice_watcher_of(config: Config, on_change: Callable[[], None]) -> ResourceSliceWatcher | None:
    """The watcher of a config with `placement.dra.enabled`; None without. Node and credentials are the
    ones discovery uses: `discovery.kubernetes.node_name` (else `NODE_NAME`), and the kubeconfig it names
    (else in-cluster credentials, else `$KUBECONFIG`)."""
    dra = config.placement.dra
    if not dra.enabled:
        return None
    kubeconfig = config.discovery.kubernetes.kubeconfig
    return ResourceSliceWatcher(
        lambda: open_client(kubeconfig, REQUEST_TIMEOUT_S), dra.driver, config.discovery.node, on_change
    )
