"""DRA claim devices resolved through ResourceSlices, and the kubelet's `dynamic_resources` read."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lightkube.resources import resource_v1, resource_v1beta1
from structlog.testing import capture_logs

from exporter.config import ConfigError
from exporter.config_file import validate_config
from exporter.placement import Holding, Unmatched
from exporter.placement.dra import (
    ClaimDevice,
    PublishedSlice,
    ResourceSliceWatcher,
    SliceDevice,
    SliceView,
    published,
    slice_watcher_of,
)
from exporter.placement.kubelet import KubeletRefresher, PodResourcesClient, place, refresher_of
from exporter.values import Gpu, MigDevice, PodRef
from tests.fakes.kubelet import FakeKubelet, FakePod
from tests.fakes.resource_slices import (
    DRIVER,
    PublishedGpu,
    PublishedMig,
    gpu_device,
    mig_device,
    resource_slice,
)

NODE = "gpu-node-1"
G0 = PublishedGpu(0, "GPU-7a1b2c3d-0000-4000-8000-000000000000")
G1 = PublishedGpu(1, "GPU-7a1b2c3d-0000-4000-8000-000000000001")
G2 = PublishedGpu(2, "GPU-7a1b2c3d-0000-4000-8000-000000000002")
M0 = PublishedMig(G2, 0, "MIG-8b2c3d4e-0000-5000-8000-000000000000", "3g.71gb", 9, 0, 4)
M1 = PublishedMig(G2, 1, "MIG-8b2c3d4e-0000-5000-8000-000000000001", "2g.35gb", 14, 4, 2)
GPUS = tuple(Gpu(g.index, g.uuid, g.product) for g in (G0, G1, G2))
DEVICES = [gpu_device(G0), gpu_device(G1), mig_device(M0), mig_device(M1)]
LLM = PodRef("llm", "vllm-0")
CHAT = PodRef("llm", "chat-0")


def parse(version: str, obj: dict[str, object]) -> PublishedSlice:
    kind = resource_v1.ResourceSlice if version == "v1" else resource_v1beta1.ResourceSlice
    return published(kind.from_dict(obj))


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_a_slice_of_either_version_names_gpus_and_mig_devices(version: str) -> None:
    found = parse(version, resource_slice(NODE, DEVICES, version))
    assert (found.pool, found.generation) == (NODE, 1)
    assert found.devices == {
        "gpu-0": SliceDevice(G0.uuid, index=0),
        "gpu-1": SliceDevice(G1.uuid, index=1),
        "gpu-2-mig-9-0-4": SliceDevice(M0.uuid, G2.uuid, "3g.71gb", 0),
        "gpu-2-mig-14-4-2": SliceDevice(M1.uuid, G2.uuid, "2g.35gb", 1),
    }


def test_attribute_names_qualified_with_the_driver_domain_count_too() -> None:
    name, attributes, capacity = mig_device(M0)
    qualified = {f"{DRIVER}/{k}": v for k, v in attributes.items()}
    other = {"example.com/uuid": {"string": "GPU-not-this-one"}}  # another domain's attribute: not ours
    found = parse("v1", resource_slice(NODE, [(name, {**qualified, **other}, capacity)]))
    assert found.devices == {name: SliceDevice(M0.uuid, G2.uuid, "3g.71gb", 0)}


def test_a_device_without_a_uuid_is_left_out() -> None:
    name, attributes, capacity = gpu_device(G0)
    del attributes["uuid"]
    assert parse("v1", resource_slice(NODE, [(name, attributes, capacity)])).devices == {}


def test_only_the_newest_generation_of_a_pool_counts() -> None:
    old = parse("v1", resource_slice(NODE, [gpu_device(G0)], generation=1, suffix="aaaaa"))
    new = parse("v1", resource_slice(NODE, [gpu_device(G1)], generation=2, suffix="bbbbb"))
    view = SliceView({"a": old, "b": new})
    assert view.find(NODE, "gpu-1") == SliceDevice(G1.uuid, index=1)
    assert view.find(NODE, "gpu-0") is None  # the driver is replacing the old generation
    assert len(view) == 1


def watcher_with(*slices: dict[str, object]) -> ResourceSliceWatcher:
    """A watcher whose view holds these slices (its API client is never opened here)."""

    def no_client() -> resource_v1.ResourceSlice:
        raise AssertionError("not connected in these tests")

    watcher = ResourceSliceWatcher(no_client, DRIVER, NODE)  # type: ignore[arg-type]
    watcher.view = SliceView({str(i): parse("v1", s) for i, s in enumerate(slices)})
    watcher.api_version = "v1"  # as after a list
    return watcher


def claim(device: str, driver: str = DRIVER, pool: str = NODE) -> ClaimDevice:
    return ClaimDevice(driver, pool, device)


def test_claims_resolve_to_gpus_and_mig_instances_beside_device_plugin_ids() -> None:
    watcher = watcher_with(resource_slice(NODE, DEVICES))
    source_migs = (MigDevice(M0.uuid, G2.uuid, 7, "3g.71gb", 3),)  # the energy source knows M0 (GI 7)
    pods = {"llm": LLM, "chat": CHAT, "embed": PodRef("embed", "tei-0")}
    devices, migs = watcher.resolve(
        {"llm": {G1.uuid}, "chat": frozenset(), "embed": frozenset()},
        {"llm": {claim("gpu-0")}, "chat": {claim("gpu-2-mig-9-0-4")}, "embed": {claim("gpu-2-mig-14-4-2")}},
        pods,
        source_migs,
    )
    assert devices == {"llm": {G0.uuid, G1.uuid}, "chat": {M0.uuid}, "embed": {M1.uuid}}
    placement, unmatched = place({}, pods, devices, GPUS, migs)
    assert unmatched == []
    assert placement.holdings == {
        "llm": {Holding(G0.uuid), Holding(G1.uuid)},
        "chat": {Holding(G2.uuid, 7, 3)},  # as the energy source names it: GPU instance 7
        "embed": {Holding(G2.uuid, 1, 2)},  # only the slice knows it: told apart by its index
    }
    assert watcher.unresolved == frozenset()


def test_a_claim_device_in_no_slice_is_logged_once_and_counted() -> None:
    watcher = watcher_with(resource_slice(NODE, DEVICES))
    pods = {"llm": LLM, "chat": CHAT}
    claims = {
        "llm": {claim("gpu-0"), claim("gpu-7")},  # gpu-7: no slice publishes it
        "chat": {claim("gpu-1", pool="gpu-node-2")},  # another node's pool
    }
    with capture_logs() as logs:
        for _ in range(3):
            devices, _ = watcher.resolve({"llm": frozenset(), "chat": frozenset()}, claims, pods, ())
    assert devices == {"llm": {G0.uuid}, "chat": frozenset()}
    assert watcher.unresolved == {("llm", claim("gpu-7")), ("chat", claim("gpu-1", pool="gpu-node-2"))}
    assert sorted((e["server"], e["device"], e["pod"]) for e in logs) == [
        ("chat", f"{DRIVER}/gpu-node-2/gpu-1", "llm/chat-0"),
        ("llm", f"{DRIVER}/{NODE}/gpu-7", "llm/vllm-0"),
    ]
    assert {e["event"] for e in logs} == {"DRA device in no ResourceSlice"}
    # Once the pod lets go of it, it is no longer counted.
    watcher.resolve({"llm": frozenset(), "chat": frozenset()}, {"llm": {claim("gpu-0")}}, pods, ())
    assert watcher.unresolved == frozenset()


def test_a_device_plugin_id_the_source_does_not_know_stays_unmatched() -> None:
    placement, unmatched = place({}, {"llm": LLM}, {"llm": {"GPU-not-here"}}, GPUS)
    assert unmatched == [Unmatched("llm", "GPU-not-here")] and placement.holdings["llm"] == frozenset()


@pytest.fixture
async def kubelet() -> AsyncIterator[FakeKubelet]:
    folder = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
    fake = FakeKubelet(
        folder / "kubelet.sock",
        [
            FakePod(
                "llm", "vllm-0", claims={"vllm-0-gpus": [(DRIVER, NODE, "gpu-0"), (DRIVER, NODE, "gpu-1")]}
            ),
            FakePod(
                "llm",
                "chat-0",
                {"nvidia.com/gpu": [G2.uuid]},
                claims={"chat-nic": [("nic.example.com", NODE, "eth1")]},  # another driver's device
            ),
        ],
    )
    await fake.start()
    yield fake
    await fake.stop()
    shutil.rmtree(folder, ignore_errors=True)


async def test_the_kubelet_client_reads_claim_devices_of_the_driver(kubelet: FakeKubelet) -> None:
    client = PodResourcesClient(kubelet.socket, 2.0, dra_driver=DRIVER)
    assert await client.devices([LLM, CHAT]) == {
        LLM: {claim("gpu-0"), claim("gpu-1")},
        CHAT: {G2.uuid},
    }
    assert await client.devices([LLM]) == {LLM: {claim("gpu-0"), claim("gpu-1")}}  # by Get, too
    assert kubelet.calls == ["List", "Get"]


async def test_without_dra_claim_devices_are_not_read(kubelet: FakeKubelet) -> None:
    refresher = KubeletRefresher({"llm": LLM}, PodResourcesClient(kubelet.socket, 2.0), 10.0)
    with capture_logs() as logs:
        await refresher.refresh()
    assert refresher.devices == {"llm": frozenset()} and refresher.claims == {"llm": frozenset()}
    assert [e["event"] for e in logs] == ["placement up", "no GPU allocated to the pod on this node"]


async def test_the_refresher_keeps_claims_apart_and_sees_them_change(
    kubelet: FakeKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", NODE)
    config = validate_config(
        {
            "placement": {
                "source": "kubelet",
                "kubelet": {"socket": str(kubelet.socket)},
                "dra": {"enabled": True},
            },
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:1/metrics", "pod": "llm/vllm-0"},
                {"name": "b", "url": "http://127.0.0.1:2/metrics", "pod": "llm/chat-0"},
            ],
        }
    )
    refresher = refresher_of(config, lambda: None)
    assert refresher is not None
    with capture_logs() as logs:
        assert await refresher.refresh() is True
    assert refresher.devices == {"a": frozenset(), "b": {G2.uuid}}
    assert refresher.claims == {"a": {claim("gpu-0"), claim("gpu-1")}, "b": frozenset()}
    assert [e["event"] for e in logs] == ["placement up"]  # a pod with only DRA GPUs holds GPUs
    assert await refresher.refresh() is False
    kubelet.pods[0].claims = {"vllm-0-gpus": [(DRIVER, NODE, "gpu-1")]}
    assert await refresher.refresh() is True
    assert refresher.claims["a"] == {claim("gpu-1")}


@pytest.mark.parametrize(
    ("placement", "problem"),
    [
        ({"dra": {"enabled": True}}, "placement: dra.enabled: true needs source: kubelet (it is 'static')"),
        (
            {"source": "kubelet", "dra": {"enabled": True, "driver": "GPU.nvidia.com"}},
            "placement.dra.driver: expected a DRA driver name, a lower-case DNS subdomain",
        ),
        ({"source": "kubelet", "dra": {"enabled": "yes please"}}, "placement.dra.enabled"),
    ],
)
def test_bad_dra_config_names_the_field(
    placement: dict[str, object], problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", NODE)
    with pytest.raises(ConfigError) as e:
        validate_config({"placement": placement})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_dra_needs_the_node_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    with pytest.raises(ConfigError) as e:
        validate_config({"placement": {"source": "kubelet", "dra": {"enabled": True}}})
    assert e.value.problems == [
        "config: placement.dra.enabled: true needs this node's name to select its ResourceSlices: set "
        "discovery.kubernetes.node_name, or NODE_NAME from the Downward API (fieldRef spec.nodeName)"
    ]
    monkeypatch.setenv("NODE_NAME", NODE)
    assert validate_config(
        {"placement": {"source": "kubelet", "dra": {"enabled": True}}}
    ).placement.dra.enabled
    monkeypatch.delenv("NODE_NAME")
    named = validate_config(  # discovery's node name serves DRA too, with discovery off
        {"placement": {"source": "kubelet", "dra": {"enabled": True}},
         "discovery": {"kubernetes": {"node_name": NODE}}}
    )  # fmt: skip
    watcher = slice_watcher_of(named, lambda: None)
    assert watcher is not None and watcher.node_name == NODE


def test_a_slice_is_read_up_to_the_devices_the_api_allows() -> None:
    many = [gpu_device(PublishedGpu(i, f"GPU-7a1b2c3d-0000-4000-8000-{i:012d}")) for i in range(200)]
    assert len(parse("v1", resource_slice(NODE, many)).devices) == 128
