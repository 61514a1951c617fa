"""The Kubernetes API client (exporter/kube.py, lightkube) against the API stand-in on loopback
(tests/fakes/kube_api.py): credentials, list and watch with resource versions, 410, 401/403, deadlines."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest
from lightkube import AsyncClient
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from exporter.kube.client import API_ERRORS, KubeConfigError, KubeError, api_error, kube_config, open_client
from tests.conftest import free_port
from tests.discovery.cluster import TOKEN
from tests.fakes.kube_api import (
    DEPLOYMENTS,
    JOBS,
    PODS,
    REPLICASETS,
    FakeKubeApi,
    deployment,
    job,
    owner,
    pod,
    replicaset,
)


async def call(coro: object) -> KubeError:
    """The KubeError a client call ends in."""
    try:
        await coro  # type: ignore[misc]
    except API_ERRORS as e:
        return api_error(e)
    raise AssertionError("the call succeeded")


async def test_list_selects_by_node_and_labels(api: FakeKubeApi, client: AsyncClient) -> None:
    api.put(PODS, pod("llm", "a", "node-1", labels={"app": "vllm"}))
    api.put(PODS, pod("llm", "b", "node-2", labels={"app": "vllm"}))
    api.put(PODS, pod("chat", "c", "node-1", labels={"app": "tgi"}))
    listed = client.list(Pod, namespace="*", fields={"spec.nodeName": "node-1"})
    names = [p.metadata.name async for p in listed if p.metadata is not None]
    assert names == ["c", "a"]  # by namespace, then name
    assert listed.resourceVersion == str(api.revision)
    only_vllm = client.list(Pod, namespace="*", fields={"spec.nodeName": "node-1"}, labels={"app": "vllm"})
    assert [p.metadata.name async for p in only_vllm if p.metadata is not None] == ["a"]
    first = (await asyncio.wait_for(anext(aiter(client.list(Pod, namespace="llm"))), 2))
    assert first.status is not None and first.status.podIP == "127.0.0.1"
    assert first.spec is not None and first.spec.containers[0].name == "server"


async def test_watch_from_a_resource_version(api: FakeKubeApi, client: AsyncClient) -> None:
    api.put(PODS, pod("llm", "old", "node-1"))
    listed = client.list(Pod, namespace="*", fields={"spec.nodeName": "node-1"})
    assert [p.metadata.name async for p in listed if p.metadata is not None] == ["old"]
    seen: list[tuple[str, str, str]] = []

    async def watch() -> None:
        async for kind, p in client.watch(Pod, namespace="*", fields={"spec.nodeName": "node-1"},
                                          resource_version=listed.resourceVersion):
            assert p.metadata is not None and p.metadata.name is not None
            seen.append((kind, p.metadata.name, str(p.metadata.resourceVersion)))
            if len(seen) == 4:
                return

    task = asyncio.create_task(watch())
    api.put(PODS, pod("llm", "new", "node-1", phase="Pending", ip=None))
    api.put(PODS, pod("llm", "elsewhere", "node-2"))  # another node: never seen
    api.put(PODS, pod("llm", "new", "node-1"))
    api.delete(PODS, "old", "llm")
    moved = api.put(PODS, pod("llm", "new", "node-2"))  # leaves the selection: DELETED
    await asyncio.wait_for(task, 5)
    assert [(k, n) for k, n, _ in seen] == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old"),
                                            ("DELETED", "new")]
    assert seen[-1][2] == moved["metadata"]["resourceVersion"]
    versions = [int(v) for _, _, v in seen]
    assert versions == sorted(versions) and versions[0] > int(listed.resourceVersion)


async def test_watch_from_a_compacted_version_is_410_expired(api: FakeKubeApi, client: AsyncClient) -> None:
    api.put(PODS, pod("llm", "a", "node-1"))
    stale = str(api.revision)
    api.put(PODS, pod("llm", "b", "node-1"))
    api.compact()
    error = await call(anext(aiter(client.watch(Pod, namespace="*", resource_version=stale))))
    assert (error.reason, error.code) == ("expired", 410)
    assert "too old resource version" in str(error)


async def test_forbidden_and_unauthorized(api: FakeKubeApi, client: AsyncClient, tmp_path: Path) -> None:
    api.put(REPLICASETS, replicaset("llm", "vllm-5d8f7", None, "5d8f7"))
    rs = await client.get(ReplicaSet, "vllm-5d8f7", namespace="llm")
    assert rs.metadata is not None and rs.metadata.labels == {"pod-template-hash": "5d8f7"}
    api.revoke(TOKEN, "replicasets.apps", "get")
    error = await call(client.get(ReplicaSet, "vllm-5d8f7", namespace="llm"))
    assert (error.reason, error.code) == ("forbidden", 403)
    assert 'cannot get resource "replicasets" in API group "apps" in the namespace "llm"' in str(error)
    missing = await call(client.get(Pod, "nope", namespace="llm"))
    assert (missing.reason, missing.code) == ("not_found", 404)
    stranger = open_client(api.kubeconfig(tmp_path / "other", "unknown-token"), timeout_s=2.0)
    try:
        error = await call(anext(aiter(stranger.list(Pod, namespace="*"))))
    finally:
        await stranger.close()
    assert (error.reason, error.code) == ("unauthorized", 401)


async def test_server_errors_and_an_api_server_that_is_gone(api: FakeKubeApi, client: AsyncClient) -> None:
    api.fail_next(503)
    error = await call(anext(aiter(client.list(Pod, namespace="*"))))
    assert (error.reason, error.code) == ("server_error", 503)
    await api.stop()
    error = await call(anext(aiter(client.list(Pod, namespace="*"))))
    assert error.reason == "unavailable"


async def test_a_request_has_a_deadline(tmp_path: Path) -> None:
    """An API server that accepts the connection and never answers: the request ends at the deadline."""
    port = free_port()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", port))
        silent.listen()
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }))
        client = open_client(kubeconfig, timeout_s=0.3)
        try:
            error = await asyncio.wait_for(call(anext(aiter(client.list(Pod, namespace="*")))), 5)
        finally:
            await client.close()
    assert error.reason == "timeout"


async def test_bookmarks_and_dropped_watches_on_the_wire(api: FakeKubeApi) -> None:
    """What lightkube does not ask for, checked on the wire: BOOKMARK events, a watch the server ends."""
    api.put(PODS, pod("llm", "a", "node-1"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    params = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": str(api.revision),
              "fieldSelector": "spec.nodeName=node-1"}
    async with aiohttp.ClientSession(headers=headers) as session, \
            session.get(f"{api.url}/api/v1/pods", params=params) as response:
        assert response.status == 200
        while not api.watchers:
            await asyncio.sleep(0.01)
        api.bookmark()
        line = json.loads(await asyncio.wait_for(response.content.readline(), 2))
        assert line == {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                      "metadata": {"resourceVersion": str(api.revision)}}}
        api.drop_watches()
        assert await asyncio.wait_for(response.content.read(), 2) == b""


async def test_selectors_the_api_server_refuses(api: FakeKubeApi) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for query, message in (({"fieldSelector": "spec.schedulerName=x"}, "field label not supported"),
                               ({"labelSelector": "a in b"}, "unable to parse requirement")):
            async with session.get(f"{api.url}/api/v1/pods", params=query) as response:
                body = await response.json()
                assert response.status == 400 and body["reason"] == "BadRequest"
                assert message in body["message"]
        async with session.get(f"{api.url}/api/v1/pods", params={"labelSelector": "a in (x, y),!b"}) as r:
            assert r.status == 200


def test_credentials_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The named kubeconfig, else in-cluster (the service account), else $KUBECONFIG."""
    api = FakeKubeApi()
    named = api.kubeconfig(tmp_path / "named", "named-token")
    from_env = api.kubeconfig(tmp_path / "env", "env-token")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("in-cluster-token")
    (account / "namespace").write_text("monitoring")
    (account / "ca.crt").write_text("")
    monkeypatch.setenv("KUBECONFIG", str(from_env))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    def token(kubeconfig: Path | None) -> str | None:
        user = kube_config(kubeconfig, service_account=account).get().user
        assert user is not None
        return user.token

    assert token(named) == "named-token"
    assert token(None) == "in-cluster-token"
    assert kube_config(None, service_account=account).get().cluster.server == "https://10.96.0.1:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert token(None) == "env-token"
    monkeypatch.delenv("KUBECONFIG")
    with pytest.raises(KubeConfigError, match="KUBECONFIG is not set"):
        kube_config(None)
    with pytest.raises(KubeConfigError, match="not found"):
        kube_config(tmp_path / "missing")
    (tmp_path / "broken").write_text("clusters: 3\n")
    with pytest.raises(KubeConfigError, match="cannot load Kubernetes credentials"):
        kube_config(tmp_path / "broken")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(KubeConfigError, match="no-account/token"):
        kube_config(None, service_account=tmp_path / "no-account")


def _without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_the_stand_ins_objects_are_the_api_references() -> None:
    """Every object the stand-in builds reads into lightkube's models (generated from the Kubernetes
    OpenAPI document) and back unchanged: no field name, nesting or type the API does not have."""
    api = FakeKubeApi()
    owned_by = api.put(DEPLOYMENTS, deployment("llm", "vllm"))
    rs = api.put(REPLICASETS, replicaset("llm", "vllm-5d8f7", owned_by, "5d8f7"))
    objects = [
        (Deployment, owned_by),
        (ReplicaSet, rs),
        (Job, api.put(JOBS, job("batch", "eval", [owner("CronJob", "nightly", "u-1", "batch/v1")]))),
        (Pod, api.put(PODS, pod("llm", "vllm-5d8f7-x2x9q", "node-1",
                                annotations={"tokenwatt.io/scrape": "true"},
                                labels={"app": "vllm", "pod-template-hash": "5d8f7"},
                                owners=[owner("ReplicaSet", "vllm-5d8f7", rs["metadata"]["uid"])],
                                ports=[("http", 8000)]))),
        (Pod, api.put(PODS, pod("llm", "starting", "node-1", ip=None, phase="Pending"))),
    ]
    for model, obj in objects:
        assert model.from_dict(obj).to_dict() == _without_nulls(obj)
