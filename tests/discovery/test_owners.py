"""Workloads through owner references (StatefulSets, LeaderWorkerSets, Jobs, bare pods too), read from
the API stand-in; and the roster's grace periods."""

from __future__ import annotations

import asyncio

import pytest
from lightkube import AsyncClient

from exporter.config import ServerConfig
from exporter.discovery import owners as owners_module
from exporter.discovery.owners import Owners
from exporter.discovery.pods import Owner, PodTarget
from exporter.discovery.roster import Roster
from exporter.discovery.watcher import DiscoveredServer
from exporter.values import PodLabels, PodRef
from tests.discovery.cluster import TOKEN
from tests.fakes.kube_api import (
    DEPLOYMENTS,
    JOBS,
    REPLICASETS,
    FakeKubeApi,
    deployment,
    job,
    owner,
    replicaset,
)


def target(name: str, owned_by: Owner | None, template_hash: str | None = None, lws: str | None = None,
           namespace: str = "llm") -> PodTarget:
    return PodTarget(PodRef(namespace, name, None), f"http://127.0.0.1:1/{name}", "auto", (), owned_by,
                     template_hash, lws)


def gets(api: FakeKubeApi) -> int:
    return sum(1 for r in api.requests if r.verb == "get")


async def test_replicasets_to_deployments(api: FakeKubeApi, client: AsyncClient) -> None:
    dep = api.put(DEPLOYMENTS, deployment("llm", "vllm"))
    api.put(REPLICASETS, replicaset("llm", "vllm-6c9d8", dep, "6c9d8"))
    api.put(REPLICASETS, replicaset("llm", "bare-77f6", None, "77f6"))
    owners = Owners(client)
    rs = Owner("ReplicaSet", "vllm-6c9d8")
    assert await owners.workload(target("vllm-6c9d8-a", rs, "6c9d8")) == "vllm"
    assert await owners.workload(target("vllm-6c9d8-b", rs, "6c9d8")) == "vllm"
    assert gets(api) == 1  # cached per ReplicaSet
    bare = Owner("ReplicaSet", "bare-77f6")
    assert await owners.workload(target("bare-77f6-a", bare, "77f6")) == "bare-77f6"
    # A ReplicaSet that is gone by now: named as the Deployment controller names ReplicaSets.
    assert await owners.workload(target("web-5f4-a", Owner("ReplicaSet", "web-5f4"), "5f4")) == "web"
    assert owners.errors == {"not_found": 1}


async def test_forbidden_owner_reads_derive_the_deployment(api: FakeKubeApi, client: AsyncClient) -> None:
    api.revoke(TOKEN, "replicasets.apps", "get")
    owners = Owners(client)
    rs = Owner("ReplicaSet", "vllm-6c9d8")
    assert await owners.workload(target("vllm-6c9d8-a", rs, "6c9d8")) == "vllm"
    assert await owners.workload(target("vllm-6c9d8-b", rs, "6c9d8")) == "vllm"
    assert owners.errors == {"forbidden": 1} and gets(api) == 1
    # Without the hash label the ReplicaSet's own name is the best there is.
    assert await owners.workload(target("odd-1", Owner("ReplicaSet", "odd"), None)) == "odd"


async def test_an_unreachable_api_pauses_owner_reads(api: FakeKubeApi, client: AsyncClient) -> None:
    owners = Owners(client)
    await api.stop()
    assert await owners.workload(target("vllm-6c9d8-a", Owner("ReplicaSet", "vllm-6c9d8"), "6c9d8")) == "vllm"
    await api.start()
    assert await owners.workload(target("chat-5b7-a", Owner("ReplicaSet", "chat-5b7"), "5b7")) == "chat"
    assert owners.errors == {"unavailable": 1} and gets(api) == 0  # paused: no read until PAUSE_S is over


async def test_other_owners(api: FakeKubeApi, client: AsyncClient) -> None:
    api.put(JOBS, job("batch", "nightly-29000000", [owner("CronJob", "nightly", "u-1", "batch/v1")]))
    api.put(JOBS, job("batch", "once", []))
    owners = Owners(client)
    nightly = Owner("Job", "nightly-29000000")
    assert await owners.workload(target("n-1", nightly, namespace="batch")) == "nightly"
    assert await owners.workload(target("o-1", Owner("Job", "once"), namespace="batch")) == "once"
    assert await owners.workload(target("chat-0", Owner("StatefulSet", "chat"))) == "chat"
    assert await owners.workload(target("big-0-1", Owner("StatefulSet", "big-0"), lws="big")) == "big"
    assert await owners.workload(target("r-1", Owner("Rollout", "canary"))) == "canary"
    assert await owners.workload(target("lonely", None)) == "lonely"
    assert gets(api) == 2 and not owners.errors


async def test_the_cache_is_bounded(
    api: FakeKubeApi, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(owners_module, "MAX_CACHED", 2)
    dep = api.put(DEPLOYMENTS, deployment("llm", "d"))
    for i in range(3):
        api.put(REPLICASETS, replicaset("llm", f"d-{i}", dep, str(i)))
    owners = Owners(client)
    for i in (0, 1, 2, 2, 1, 0):
        assert await owners.workload(target(f"p-{i}", Owner("ReplicaSet", f"d-{i}"), str(i))) == "d"
    assert len(owners._cache) == 2 and gets(api) == 4  # d-0 was evicted by d-2, then read again


def discovered(name: str, uid: str = "u") -> DiscoveredServer:
    t = target(name, None)
    server = ServerConfig(name="x", url=t.url).model_copy(update={"name": t.server})
    return DiscoveredServer(t, server, PodLabels("llm", name, name))


async def test_the_roster_keeps_a_gone_pod_for_its_grace_period() -> None:
    expired: list[str] = []
    roster = Roster(0.2, expired.append)
    a, b = discovered("a"), discovered("b")
    change = roster.update({"llm/a": a, "llm/b": b})
    assert change.added == (a, b) and not change.gone
    change = roster.update({"llm/a": a})
    assert change.gone == ("llm/b",)
    assert dict(roster.labels()) == {"llm/a": a.labels, "llm/b": b.labels}
    await asyncio.sleep(0.3)
    assert expired == ["llm/b"] and dict(roster.labels()) == {"llm/a": a.labels}

    # A pod of the same name back within the grace period continues the server.
    roster.update({})
    roster.update({"llm/a": a})
    await asyncio.sleep(0.3)
    assert expired == ["llm/b"] and not roster.departed
    roster.update({})
    roster.close()
    await asyncio.sleep(0.3)
    assert expired == ["llm/b"]
