"""The workload of a pod: the Deployment, StatefulSet, LeaderWorkerSet or Job that runs it.

From the pod's controller owner reference:
- ReplicaSet: the ReplicaSet's own controller (a Deployment, or another controller such as an Argo
  Rollout) is read with `get replicasets`; a ReplicaSet that nothing owns is the workload. Where the
  read fails (RBAC forbids it: 403; it is gone: 404; the API fails), the Deployment's name is the
  ReplicaSet's minus `-<pod-template-hash>`, as the Deployment controller names them.
- StatefulSet: its name, or the LeaderWorkerSet's where the pod carries its label.
- Job: the Job's CronJob where it has one (`get jobs`), else the Job.
- Any other controller: its name; no controller at all: the pod's own name.

Answers are cached per owner (at most `MAX_CACHED`, least recently used out). After a read that timed
out or found the API unreachable, no read is tried for `PAUSE_S`: names are derived meanwhile, so a
relist of a full node does not wait out one deadline per pod.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict

import structlog
from lightkube import AsyncClient
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.batch_v1 import Job

from exporter.discovery.pods import Owner, PodTarget, controller_of
from exporter.kube.client import API_ERRORS, KubeError, api_error

log = structlog.get_logger("tokenwatt.discovery")

MAX_CACHED = 4096
PAUSE_S = 30.0
_TRANSIENT = frozenset({"timeout", "unavailable", "server_error", "throttled"})


class Owners:
    """Resolves and caches the workloads of pods; failed reads are counted in `errors` by reason."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.errors: Counter[str] = Counter()
        self._cache: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._paused_until = 0.0
        self._refused: set[str] = set()
        """Owner kinds RBAC refused to us: logged once each."""

    async def workload(self, target: PodTarget) -> str:
        owner = target.owner
        if target.lws:
            return target.lws
        if owner is None:
            return target.pod.name
        if owner.kind not in ("ReplicaSet", "Job"):
            return owner.name
        key = (target.pod.namespace, owner.kind, owner.name)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        derived = _derived(owner, target.template_hash)
        if time.monotonic() < self._paused_until:
            return derived
        try:
            found = await self._read(target.pod.namespace, owner)
        except KubeError as e:
            self._failed(owner, e)
            if e.reason in _TRANSIENT:
                return derived  # not cached: the next pod of this owner asks again
            found = derived
        self._cache[key] = found
        if len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return found

    async def _read(self, namespace: str, owner: Owner) -> str:
        try:
            if owner.kind == "ReplicaSet":
                meta = (await self.client.get(ReplicaSet, owner.name, namespace=namespace)).metadata
            else:
                meta = (await self.client.get(Job, owner.name, namespace=namespace)).metadata
        except API_ERRORS as e:
            raise api_error(e) from None
        parent = controller_of(meta.ownerReferences if meta else None)
        return parent.name if parent is not None else owner.name

    def _failed(self, owner: Owner, e: KubeError) -> None:
        self.errors[e.reason] += 1
        if e.reason in _TRANSIENT:
            self._paused_until = time.monotonic() + PAUSE_S
            log.warning("cannot read a pod's owner: naming workloads from their pods for a while",
                        owner=f"{owner.kind}/{owner.name}", reason=e.reason, error=str(e), pause_s=PAUSE_S)
        elif e.reason == "forbidden" and owner.kind not in self._refused:
            self._refused.add(owner.kind)
            log.warning("not allowed to read pod owners: naming workloads from their pods",
                        owner_kind=owner.kind, error=str(e))


def _derived(owner: Owner, template_hash: str | None) -> str:
    """The workload's name without reading the owner: a ReplicaSet `NAME-HASH` is Deployment NAME."""
    suffix = f"-{template_hash}"
    if owner.kind == "ReplicaSet" and template_hash and owner.name.endswith(suffix):
        return owner.name.removesuffix(suffix)
    return owner.name
