"""The ResourceSlice watcher against the Kubernetes API stand-in on loopback (tests/fakes/kube_api.py):
list then watch, v1 with a fall back to v1beta1, 403, an expired watch, the API going away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exporter.kube.client import open_client
from exporter.placement.dra import ResourceSliceWatcher, SliceDevice
from tests.fakes.kube_api import (
    KINDS,
    RESOURCESLICES,
    RESOURCESLICES_V1BETA1,
    FakeKubeApi,
    Kind,
)
from tests.fakes.resource_slices import (
    DRIVER,
    PublishedGpu,
    PublishedMig,
    gpu_device,
    mig_device,
    resource_slice,
)

NODE = "gpu-node-1"
TOKEN = "tokenwatt-token"
READ_SLICES = {"resourceslices.resource.k8s.io": ["list", "watch"]}
G0 = PublishedGpu(0, "GPU-7a1b2c3d-0000-4000-8000-000000000000")
G1 = PublishedGpu(1, "GPU-7a1b2c3d-0000-4000-8000-000000000001")
M0 = PublishedMig(G1, 0, "MIG-8b2c3d4e-0000-5000-8000-000000000000")


def slices_on(version: str) -> list[dict[str, object]]:
    """This node's slice of the NVIDIA driver, another node's, and another driver's on this node."""
    return [
        resource_slice(NODE, [gpu_device(G0), mig_device(M0)], version),
        resource_slice("gpu-node-2", [gpu_device(PublishedGpu(0, "GPU-other-node"))], version),
        resource_slice(
            NODE, [gpu_device(PublishedGpu(0, "GPU-other-driver"))], version, driver="x.example.com"
        ),
    ]


async def api_with(kinds: tuple[Kind, ...], tmp_path: Path) -> tuple[FakeKubeApi, Path]:
    api = FakeKubeApi(kinds)
    api.grant(TOKEN, READ_SLICES)
    await api.start()
    return api, api.kubeconfig(tmp_path / "kubeconfig", TOKEN)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[FakeKubeApi, Path]]:
    fake, kubeconfig = await api_with(KINDS, tmp_path)
    yield fake, kubeconfig
    await fake.stop()


def watcher(kubeconfig: Path, on_change: Callable[[], None] = lambda: None) -> ResourceSliceWatcher:
    return ResourceSliceWatcher(lambda: open_client(kubeconfig, 2.0), DRIVER, NODE, on_change)


async def until(done: Callable[[], bool], failure: str, limit_s: float = 5.0) -> None:
    """Wait for `done` (a liveness bound, not a speed requirement)."""
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.02)


async def test_lists_this_nodes_slices_of_the_driver_then_watches(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    for s in slices_on("v1"):
        fake.put(RESOURCESLICES, s)
    changes: list[int] = []
    w = watcher(kubeconfig, lambda: changes.append(len(w.view)))
    try:
        with capture_logs() as logs:
            await w.poll_once()
        assert (w.health.up, w.api_version, len(w.view), changes) == (True, "v1", 2, [2])
        assert w.view.find(NODE, "gpu-0") == SliceDevice(G0.uuid, index=0)
        assert w.view.find(NODE, M0.name) == SliceDevice(M0.uuid, G1.uuid, "3g.71gb", 0)
        assert [e["event"] for e in logs][:2] == ["reading ResourceSlices", "placement up"]
        listed = fake.requests[-1]
        assert (listed.verb, listed.query["fieldSelector"]) == (
            "list",
            f"spec.driver={DRIVER},spec.nodeName={NODE}",
        )

        watching = asyncio.create_task(w.poll_once())
        # The driver republishes its pool: a new generation without the MIG device, then gpu-1 added.
        fake.put(RESOURCESLICES, resource_slice(NODE, [gpu_device(G0)], "v1", generation=2))
        await until(lambda: w.view.find(NODE, M0.name) is None, "the watch did not see the new generation")
        fake.put(RESOURCESLICES, resource_slice("gpu-node-2", [gpu_device(G1)], "v1", suffix="zzzzz"))
        fake.put(RESOURCESLICES, resource_slice(NODE, [gpu_device(G0), gpu_device(G1)], "v1", generation=3))
        await until(lambda: len(w.view) == 2, "the watch did not see gpu-1")
        fake.delete(RESOURCESLICES, f"{NODE}-{DRIVER}-x7k2p")
        await until(lambda: len(w.view) == 0, "the watch did not see the slice go")
        assert changes == [2, 1, 2, 0]  # another node's slice changed nothing
        assert fake.requests[-1].verb == "watch" and w.health.up is True
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
    finally:
        await w.close()


async def test_falls_back_to_v1beta1_where_v1_is_not_served(tmp_path: Path) -> None:
    fake, kubeconfig = await api_with(tuple(k for k in KINDS if k != RESOURCESLICES), tmp_path)
    for s in slices_on("v1beta1"):
        fake.put(RESOURCESLICES_V1BETA1, s)
    w = watcher(kubeconfig)
    try:
        with capture_logs() as logs:
            await w.poll_once()  # v1: 404
            assert w.health.up is None and w.next_delay_s() == 0.0  # no failure: the next version at once
            await w.poll_once()
        assert (w.health.up, w.api_version, len(w.view), dict(w.health.errors)) == (True, "v1beta1", 2, {})
        assert w.view.find(NODE, M0.name) == SliceDevice(M0.uuid, G1.uuid, "3g.71gb", 0)
        assert [r.code for r in fake.requests] == [404, 200]
        assert logs[0]["event"] == "resource.k8s.io version not served, trying the next"
    finally:
        await w.close()
        await fake.stop()


async def test_forbidden_is_a_state_until_the_permission_comes(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    fake.put(RESOURCESLICES, slices_on("v1")[0])
    fake.grant(TOKEN, {"pods": ["list", "watch"]})  # the ClusterRole lacks resourceslices
    w = watcher(kubeconfig)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                await w.poll_once()
            health = w.health
            assert (health.up, health.reason, health.failures, dict(health.errors)) == (
                False,
                "forbidden",
                3,
                {"forbidden": 3},
            )
            assert w.next_delay_s() == 4.0  # backing off: 1s, 2s, 4s
            assert len(w.view) == 0
            fake.grant(TOKEN, READ_SLICES)
            await w.poll_once()
        assert (w.health.up, w.health.reason, w.health.failures, len(w.view)) == (True, None, 0, 2)
        down = [e for e in logs if e["event"] == "placement down, keeping the last placement"]
        assert len(down) == 1 and down[0]["reason"] == "forbidden" and "403" in down[0]["error"]
        assert "resourceslices" in down[0]["error"]
    finally:
        await w.close()


async def test_a_failure_is_logged_once_per_reason(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    fake.grant(TOKEN, {"pods": ["list", "watch"]})  # 403 on resourceslices
    w = watcher(kubeconfig)
    try:
        with capture_logs() as logs:
            for _ in range(2):
                await w.poll_once()
            await fake.stop()  # still down, now for another reason
            for _ in range(2):
                await w.poll_once()
    finally:
        await w.close()
    down = [
        (e["source"], e["reason"]) for e in logs if e["event"] == "placement down, keeping the last placement"
    ]
    assert down == [("dra", "forbidden"), ("dra", "unavailable")]
    assert (w.health.failures, dict(w.health.errors)) == (4, {"forbidden": 2, "unavailable": 2})


async def test_an_expired_watch_lists_again(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    fake.put(RESOURCESLICES, slices_on("v1")[0])
    w = watcher(kubeconfig)
    try:
        await w.poll_once()
        fake.put(RESOURCESLICES, resource_slice(NODE, [gpu_device(G0)], "v1", generation=2))
        fake.compact()  # the history since the list is gone
        await asyncio.wait_for(w.poll_once(), 5)  # the watch ends in 410 Expired
        assert (w.health.up, dict(w.health.errors), len(w.view)) == (True, {"expired": 1}, 2)
        await w.poll_once()
        assert fake.requests[-1].verb == "list" and len(w.view) == 1
    finally:
        await w.close()


async def test_the_api_going_away_keeps_the_last_view(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    fake.put(RESOURCESLICES, slices_on("v1")[0])
    w = watcher(kubeconfig)
    try:
        await w.poll_once()
        view = w.view
        watching = asyncio.create_task(w.poll_once())
        await until(lambda: bool(fake.watchers), "no watch opened")
        with capture_logs() as logs:
            await fake.stop()
            await asyncio.wait_for(watching, 5)
            assert (w.health.up, w.health.reason) == (False, "unavailable")
            await w.poll_once()  # a list now, refused too
            assert w.health.failures == 2 and w.view is view and len(view) == 2
            await fake.start()  # back on the same port
            await w.poll_once()
        assert (w.health.up, w.health.failures, len(w.view)) == (True, 0, 2)
        assert [e["event"] for e in logs] == ["placement down, keeping the last placement", "placement up"]
    finally:
        await w.close()


async def test_an_api_that_does_not_answer_meets_the_deadline(tmp_path: Path) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never answers
        port = listener.getsockname()[1]
        silent = FakeKubeApi()
        silent.port = port  # a kubeconfig naming the listener that never answers
        kubeconfig = silent.kubeconfig(tmp_path / "kubeconfig", TOKEN)
        w = ResourceSliceWatcher(lambda: open_client(kubeconfig, 0.3), DRIVER, NODE)
        try:
            await asyncio.wait_for(w.poll_once(), 5)
        finally:
            await w.close()
    assert (w.health.up, w.health.reason) == (False, "timeout")


async def test_no_credentials_is_a_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    w = ResourceSliceWatcher(lambda: open_client(None, 2.0), DRIVER, NODE)
    await w.poll_once()
    assert (w.health.up, w.health.reason) == (False, "no_credentials")


async def test_slices_beyond_the_bound_are_left_out_and_counted(api: tuple[FakeKubeApi, Path]) -> None:
    fake, kubeconfig = api
    for i in range(520):
        gpu = PublishedGpu(0, f"GPU-7a1b2c3d-0000-4000-8000-{i:012d}")
        fake.put(RESOURCESLICES, resource_slice(NODE, [gpu_device(gpu)], suffix=f"{i:05d}"))
    w = watcher(kubeconfig)
    try:
        with capture_logs() as logs:
            await w.poll_once()
    finally:
        await w.close()
    assert (w.health.up, len(w.view.slices), w.health.errors["too_many_slices"]) == (True, 512, 8)
    assert [e["event"] for e in logs].count("too many ResourceSlices: ignoring the rest") == 1
