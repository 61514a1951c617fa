"""The kubelet client and refresher against a real gRPC server on a unix socket (tests/fakes/kubelet.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from exporter.placement import Holding, Share, Unmatched
from exporter.placement.kubelet import KubeletError, KubeletRefresher, PodResourcesClient, place
from exporter.values import Gpu, GpuActivity, MigDevice, PodRef
from tests.fakes.kubelet import FakeKubelet, FakePod

A = "GPU-0c1a2b3c-0000-4000-8000-00000000000a"
B = "GPU-0c1a2b3c-0000-4000-8000-00000000000b"
C = "GPU-0c1a2b3c-0000-4000-8000-00000000000c"
MIG = "MIG-5e6f7a8b-0000-5000-8000-000000000001"
GPUS = (Gpu(0, A, "sim"), Gpu(1, B, "sim"), Gpu(2, C, "sim"))
MIGS = (MigDevice(MIG, C, 2, "3g.40gb", 3),)

LLM = PodRef("llm", "vllm-0")
CHAT = PodRef("llm", "chat-0")
UID_LLM = "3f6c0a52-0000-4000-8000-00000000000a"
UID_CHAT = "3f6c0a52-0000-4000-8000-00000000000b"
UID_STATIC = "3f6c0a52-0000-4000-8000-00000000000c"
EMBED = PodRef("embed", "tei-0")


def fleet() -> list[FakePod]:
    """Pods whose devices use every ID format, next to devices of other resources."""
    return [
        FakePod("llm", "vllm-0", {"nvidia.com/gpu": [A, f"{B}::1"]}),  # a whole GPU and a time-sliced replica
        FakePod("llm", "chat-0", {"nvidia.com/gpu.shared": [f"{B}::3"]}),  # renamed shared resource
        FakePod("embed", "tei-0", {"nvidia.com/mig-3g.40gb": [MIG]}),
        FakePod("gke", "job-0", {"nvidia.com/gpu": ["nvidia0", "nvidia2/gi2"]}),
        FakePod("idx", "job-1", {"nvidia.com/gpu": ["1"]}),
        FakePod("amd", "job-2", {"amd.com/gpu": ["0000:c1:00.0"]}),  # AMD names GPUs by PCI address
        FakePod("custom", "job-3", {"nvidia.com/a100": [C], "example.com/fpga": ["fpga0"]}),
    ]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def kubelet(socket_dir: Path) -> AsyncIterator[FakeKubelet]:
    fake = FakeKubelet(socket_dir / "kubelet.sock", fleet())
    await fake.start()
    yield fake
    await fake.stop()


def client(
    kubelet: FakeKubelet, timeout_s: float = 2.0, resources: tuple[str, ...] = ()
) -> PodResourcesClient:
    return PodResourcesClient(kubelet.socket, timeout_s, resources)


async def test_get_one_pod_keeps_only_gpu_devices(kubelet: FakeKubelet) -> None:
    assert await client(kubelet).devices([LLM]) == {LLM: {A, f"{B}::1"}}
    assert kubelet.calls == ["Get"]


async def test_several_pods_are_one_list(kubelet: FakeKubelet) -> None:
    found = await client(kubelet, resources=("nvidia.com/a100",)).devices(
        [LLM, CHAT, EMBED, PodRef("gke", "job-0"), PodRef("idx", "job-1"), PodRef("amd", "job-2"),
         PodRef("custom", "job-3"), PodRef("llm", "gone-0")]
    )  # fmt: skip
    assert found == {
        LLM: {A, f"{B}::1"},
        CHAT: {f"{B}::3"},
        EMBED: {MIG},
        PodRef("gke", "job-0"): {"nvidia0", "nvidia2/gi2"},
        PodRef("idx", "job-1"): {"1"},
        PodRef("amd", "job-2"): {"0000:c1:00.0"},
        PodRef("custom", "job-3"): {C},  # a configured extra name; example.com/fpga is not a GPU
        PodRef("llm", "gone-0"): frozenset(),
    }
    assert kubelet.calls == ["List"]


async def test_a_pod_the_kubelet_does_not_run_holds_nothing(kubelet: FakeKubelet) -> None:
    assert await client(kubelet).devices([PodRef("llm", "gone-0")]) == {PodRef("llm", "gone-0"): frozenset()}
    assert kubelet.calls == ["Get"]


@pytest.mark.parametrize(
    ("mode", "reason"), [("disabled", "get_disabled"), ("unimplemented", "get_unimplemented")]
)
async def test_get_refused_falls_back_to_list_once(kubelet: FakeKubelet, mode: str, reason: str) -> None:
    kubelet.get = mode
    refresher = KubeletRefresher({"llm": LLM}, client(kubelet), 10.0)
    with capture_logs() as logs:
        for _ in range(3):
            await refresher.refresh()
    assert refresher.devices == {"llm": {A, f"{B}::1"}}
    assert refresher.health.up is True
    assert kubelet.calls == ["Get", "List", "List", "List"]
    assert refresher.health.errors == {reason: 1}
    assert [e["event"] for e in logs] == ["kubelet refuses Get, using List", "placement up"]


async def test_rate_limit_is_a_state_and_the_last_placement_stays(socket_dir: Path) -> None:
    kubelet = FakeKubelet(socket_dir / "kubelet.sock", fleet(), qps=0.001, burst=2)
    await kubelet.start()
    try:
        refresher = KubeletRefresher({"llm": LLM, "chat": CHAT}, client(kubelet), 10.0)
        with capture_logs() as logs:
            assert await refresher.refresh() is True
            kubelet.pods = []
            assert await refresher.refresh() is True  # the second token: an answer without the pods
            kubelet.pods = fleet()
            for _ in range(3):
                assert await refresher.refresh() is False
    finally:
        await kubelet.stop()
    assert refresher.health.up is False
    assert refresher.health.reason == "rate_limited"
    assert refresher.health.failures == 3
    assert refresher.health.errors == {"rate_limited": 3}
    assert refresher.devices == {"llm": frozenset(), "chat": frozenset()}  # the last good answer
    events = [e["event"] for e in logs]
    assert events.count("placement down, keeping the last placement") == 1
    assert events.count("no GPU allocated to the pod on this node") == 2


async def test_kubelet_restart_on_a_new_socket(kubelet: FakeKubelet) -> None:
    refresher = KubeletRefresher({"llm": LLM}, client(kubelet), 10.0)
    kubelet.get = "disabled"
    await refresher.refresh()
    first_inode = os.stat(kubelet.socket).st_ino
    with capture_logs() as logs:
        await kubelet.stop()
        assert await refresher.refresh() is False
        assert (refresher.health.up, refresher.health.reason) == (False, "socket_missing")
        assert refresher.devices == {"llm": {A, f"{B}::1"}}
        kubelet.get = "enabled"  # the restarted kubelet has Get turned on
        kubelet.pods[0].gpus = {"nvidia.com/gpu": [C]}  # and the pod was given another GPU
        placeholder = kubelet.socket.with_suffix(".old")
        placeholder.touch()  # keeps the old inode number taken, so the new socket gets a new one
        await kubelet.start()
        assert os.stat(kubelet.socket).st_ino != first_inode
        assert await refresher.refresh() is True
    assert refresher.health.up is True
    assert refresher.devices == {"llm": {C}}
    assert kubelet.calls[-1] == "Get"  # Get is tried again after the restart
    assert [e["event"] for e in logs] == [
        "placement down, keeping the last placement",
        "kubelet socket recreated (a kubelet restart)",
        "placement up",
    ]


async def test_a_hung_kubelet_meets_the_deadline(kubelet: FakeKubelet) -> None:
    kubelet.delay_s = 5.0
    with pytest.raises(KubeletError) as e:
        await client(kubelet, timeout_s=0.2).devices([LLM])
    assert e.value.reason == "timeout"


async def test_a_socket_nobody_listens_on_is_unavailable(socket_dir: Path) -> None:
    import socket

    path = socket_dir / "kubelet.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: a kubelet that died without removing its socket
        with pytest.raises(KubeletError) as e:
            await PodResourcesClient(path, 2.0).devices([LLM])
    assert e.value.reason == "unavailable"


@pytest.mark.parametrize(
    ("directory_mode", "socket_mode"), [(0o755, 0o600), (0o700, 0o666)], ids=["socket", "directory"]
)
def test_permission_denied(socket_dir: Path, directory_mode: int, socket_mode: int) -> None:
    """A socket, or a directory, the process may not open (checked as an unprivileged user: root may
    open anything)."""
    path = socket_dir / "kubelet.sock"
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
        path.chmod(socket_mode)
        socket_dir.chmod(directory_mode)
        script = (
            "import asyncio, os, pathlib\n"
            "from exporter.values import PodRef\n"
            "from exporter.placement.kubelet import KubeletRefresher, PodResourcesClient\n"
            "if os.geteuid() == 0:\n"  # imports done as root (Python may live under /root), then drop
            "    os.setgid(65534)\n"
            "    os.setuid(65534)\n"
            f"client = PodResourcesClient(pathlib.Path({str(path)!r}), 2.0)\n"
            "r = KubeletRefresher({'a': PodRef('llm', 'vllm-0')}, client, 10.0)\n"
            "asyncio.run(r.refresh())\n"
            "print(r.health.up, r.health.reason)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[2],
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False permission_denied"


def test_place_resolves_every_format_and_reports_the_rest() -> None:
    placement, unmatched = place(
        {"static": [0]},
        {"llm": LLM, "chat": CHAT, "embed": EMBED, "gke": PodRef("gke", "job-0"), "gone": PodRef("x", "y")},
        {
            "llm": [A, f"{B}::1"],
            "chat": [f"{B}::3", "GPU-not-here"],
            "embed": [MIG],
            "gke": ["nvidia0", "nvidia2/gi2"],
        },
        GPUS,
        MIGS,
    )
    assert placement.holdings == {
        "static": {Holding(A)},
        "llm": {Holding(A), Holding(B)},
        "chat": {Holding(B)},
        "embed": {Holding(C, 2, 3)},
        "gke": {Holding(A), Holding(C, 2, 3)},
        "gone": frozenset(),
    }
    assert placement.pods["llm"] == LLM and "static" not in placement.pods
    # Two pods time-slicing B, nothing measured: equal shares.
    assert placement.shares(B, None) == (Share("chat", 0.5, "equal"), Share("llm", 0.5, "equal"))
    assert unmatched == [Unmatched("chat", "GPU-not-here")]


def test_pods_with_uids_split_a_time_sliced_gpu_by_activity_beside_static_servers() -> None:
    llm, chat = PodRef("llm", "vllm-0", UID_LLM), PodRef("llm", "chat-0", UID_CHAT)
    static = PodRef("", "", UID_STATIC)  # a server with gpus: and pod_uid: keeps its configured GPUs
    placement, unmatched = place(
        {"static": [1]},
        {"llm": llm, "chat": chat, "static": static},
        {"llm": [f"{B}::1"], "chat": [f"{B}::2"], "static": [A]},
        GPUS,
        MIGS,
    )
    assert unmatched == [] and placement.holdings["static"] == {Holding(B)}
    busy = GpuActivity(B, 1.0, pods={UID_LLM: 0.3, UID_CHAT: 0.1, UID_STATIC: 0.1})
    assert placement.shares(B, busy) == (
        Share("chat", 0.2, "activity"),
        Share("llm", 0.6, "activity"),
        Share("static", 0.2, "activity"),
    )


async def test_pods_are_matched_by_namespace_and_name_whatever_their_uid(kubelet: FakeKubelet) -> None:
    with_uid = PodRef("llm", "chat-0", "3f6c0a52-0000-4000-8000-000000000001")  # from the Downward API
    assert await client(kubelet).devices([with_uid, LLM]) == {with_uid: {f"{B}::3"}, LLM: {A, f"{B}::1"}}
