"""The pods of this node, kept in view through the Kubernetes API: a supervised poller.

One poll lists the node's pods (`spec.nodeName` field selector, and the configured label selector),
then watches from the list's resource version for `WATCH_WINDOW_S`; the next poll lists again, which
also proves the API server still answers (a watch on a quiet node looks the same whether the API
server is fine or hung). A watch event changes the view at once. `410 Gone` (the resource version is
too old) lists again at once; any other failure keeps the last good view, marks discovery down, counts
the failure by request and reason, logs once per change of state, and lists again after a back-off.

Every change of the discovered servers is handed to `on_change` (the daemon), which starts and stops
their pollers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
from lightkube import AsyncClient
from lightkube.core.client import FieldSelector
from lightkube.resources.core_v1 import Pod
from pydantic import ValidationError

from exporter.backoff import backoff_s
from exporter.config import Config, KubernetesDiscoveryConfig, ServerConfig
from exporter.discovery.owners import Owners
from exporter.discovery.pods import PodRejected, PodTarget, target_of
from exporter.kube.client import API_ERRORS, KubeError, api_error, open_client
from exporter.kube.selector import parse_label_selector
from exporter.values import PodLabels

log = structlog.get_logger("tokenwatt.discovery")

WATCH_WINDOW_S = 300.0
"""How long one watch runs before the pods are listed again."""
RETRY_S = 0.5
"""The first wait after a failure; it doubles with each failure in a row, up to the pollers' cap."""


@dataclass(frozen=True, slots=True)
class DiscoveredServer:
    """A pod that is a server, as the daemon runs it."""

    target: PodTarget
    server: ServerConfig
    labels: PodLabels


OnChange = Callable[[Mapping[str, DiscoveredServer]], Awaitable[None]]


class PodWatcher:
    """Lists and watches the node's pods; `servers` is the latest good view, by server name."""

    component = "discovery"

    def __init__(
        self, cfg: KubernetesDiscoveryConfig, node: str, client: AsyncClient, on_change: OnChange
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.client = client
        self.owners = Owners(client)
        self._on_change = on_change
        self._selector = parse_label_selector(cfg.label_selector)
        self.servers: dict[str, DiscoveredServer] = {}
        self.rejected: dict[str, str] = {}
        """Pods chosen for scraping whose annotations are wrong, and why (a reason label value)."""
        self.resource_version: str | None = None
        """Where the next watch starts; None: list first."""
        self.listed = False
        """A list has succeeded (the view is the API server's, not empty for want of an answer)."""
        self.up: bool | None = None
        self.failures = 0
        self.errors: Counter[tuple[str, str]] = Counter()
        """Failed requests so far, by request (`list`, `watch`) and reason."""
        self.last_failure: str | None = None

    @property
    def deadline_s(self) -> float:
        """A list, the owner reads of new pods, and one watch window."""
        return WATCH_WINDOW_S + 4 * self.cfg.timeout

    def next_delay_s(self) -> float:
        return backoff_s(RETRY_S, self.failures) if self.failures else 0.0

    async def poll_once(self) -> None:
        request = "list"
        try:
            if self.resource_version is None:
                await self._list()
            request = "watch"
            await self._watch()
        except KubeError as e:
            self.resource_version = None
            self.errors[(request, e.reason)] += 1
            if e.reason == "expired":  # 410 Gone: list again at once; nothing failed
                log.info("watch expired: listing the pods again", resource_version_error=str(e))
                return
            self._failed(f"{request} {e.reason}: {e}")

    def crashed(self) -> None:
        self.resource_version = None
        self._failed("unexpected: the poll raised an unexpected error (see the log)")

    def error_counts(self) -> tuple[tuple[str, str, int], ...]:
        """Failed requests so far: (request, reason, count), owner reads as request `owner`."""
        owners = [(("owner", reason), n) for reason, n in self.owners.errors.items()]
        return tuple(sorted((request, reason, n) for (request, reason), n in [*self.errors.items(), *owners]))

    async def close(self) -> None:
        await self.client.close()

    async def _list(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.timeout):
                listed = self.client.list(Pod, namespace="*", fields=self._fields(), labels=self._selector)
                pods = [p async for p in listed]
        except API_ERRORS as e:
            raise api_error(e) from None
        servers: dict[str, DiscoveredServer] = {}
        for pod in pods:
            found = await self._server_of(pod)
            if found is not None:
                servers[found.target.server] = found
        keys = {_key(p) for p in pods}
        for gone in self.rejected.keys() - keys:
            del self.rejected[gone]
        self.resource_version = listed.resourceVersion
        if not self.listed or self.up is not True:
            log.info("discovery up", node=self.node, pods=len(pods), servers=len(servers))
        self.listed, self.up, self.failures, self.last_failure = True, True, 0, None
        await self._publish(servers)

    async def _watch(self) -> None:
        events = self.client.watch(
            Pod, namespace="*", fields=self._fields(), labels=self._selector,
            resource_version=self.resource_version, server_timeout=int(WATCH_WINDOW_S),
        )
        assert isinstance(events, AsyncGenerator), "lightkube's watch is an async generator: closed when done"
        loop = asyncio.get_running_loop()
        ends = loop.time() + WATCH_WINDOW_S
        async with contextlib.aclosing(events) as stream:
            while (left := ends - loop.time()) > 0:
                try:
                    kind, pod = await asyncio.wait_for(anext(stream), left)
                except TimeoutError:
                    break
                except StopAsyncIteration:
                    return
                except API_ERRORS as e:
                    raise api_error(e) from None
                await self._take(kind, pod)
                self.resource_version = (pod.metadata.resourceVersion if pod.metadata else None) or (
                    self.resource_version
                )
        self.resource_version = None  # the window is over: list again

    async def _take(self, kind: str, pod: Pod) -> None:
        key = _key(pod)
        servers = dict(self.servers)
        if kind == "DELETED":
            servers.pop(key, None)
            self.rejected.pop(key, None)
        else:
            found = await self._server_of(pod)
            if found is None:
                servers.pop(key, None)
            else:
                servers[key] = found
        await self._publish(servers)

    async def _server_of(self, pod: Pod) -> DiscoveredServer | None:
        """The pod as a server (its earlier one where nothing about it changed), or None; a rejected
        pod is logged once per reason and kept in `rejected`."""
        key = _key(pod)
        try:
            target = target_of(pod, self.cfg.require_annotation, self.cfg.pod_labels)
            if target is None:
                self.rejected.pop(key, None)
                return None
            known = self.servers.get(key)
            if known is not None and known.target == target:
                return known
            server = ServerConfig.model_validate({
                "name": "discovered",  # named NAMESPACE/POD below: a config file may not use "/"
                "url": target.url,
                "kind": target.kind,
                "interval": f"{self.cfg.interval}s",
                "timeout": f"{self.cfg.timeout}s",
                "pod": key,
                "pod_uid": target.pod.uid,
            }).model_copy(update={"name": key})
        except PodRejected as e:
            self._reject(key, e.reason, str(e))
            return None
        except ValidationError as e:
            self._reject(key, "invalid", "; ".join(str(err["msg"]) for err in e.errors())[:300])
            return None
        self.rejected.pop(key, None)
        workload = await self.owners.workload(target)
        return DiscoveredServer(target, server, PodLabels(target.pod.namespace, target.pod.name, workload,
                                                          target.labels))

    def _reject(self, key: str, reason: str, message: str) -> None:
        if self.rejected.get(key) != reason:
            log.warning("pod skipped: its annotations are wrong", pod=key, reason=reason, error=message)
        self.rejected[key] = reason

    async def _publish(self, servers: dict[str, DiscoveredServer]) -> None:
        if servers == self.servers and self.listed:
            return
        self.servers = servers
        await self._on_change(dict(servers))

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_failure = why
        if self.up is not False:
            log.warning("discovery down, keeping the last view of the pods", node=self.node, error=why)
        self.up = False

    def _fields(self) -> FieldSelector:
        return {"spec.nodeName": self.node}


def _key(pod: Pod) -> str:
    meta = pod.metadata
    return f"{meta.namespace}/{meta.name}" if meta is not None else "/"


def watcher_of(config: Config, on_change: OnChange) -> PodWatcher | None:
    """The watcher of a config with `discovery.source: kubernetes`, else None. Raises `KubeConfigError`
    when there are no credentials to reach the API server."""
    if config.discovery.source != "kubernetes":
        return None
    cfg = config.discovery.kubernetes
    return PodWatcher(cfg, config.discovery.node, open_client(cfg.kubeconfig, cfg.timeout), on_change)
