"""ResourceSlices as NVIDIA's DRA driver for GPUs publishes them and a Kubernetes API server returns them.

Shapes from the Kubernetes API reference (`resource.k8s.io` v1 and v1beta1) and the driver's
kubelet plugin: one slice per node, its pool named after the node; a whole GPU is `gpu-<index>`
with `type: gpu`, `uuid`, `index`, `minor` and product attributes; a MIG device is
`gpu-<parent index>-mig-<GI profile ID>-<placement start>-<size>` with `type: mig`, `uuid` (`MIG-…`),
`parentUUID`, `parentIndex`, `index` and `profile`. In v1 a device's `attributes` and `capacity` sit
on the device; in v1beta1 under `basic`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

DRIVER = "gpu.nvidia.com"


@dataclass(frozen=True)
class PublishedGpu:
    """A whole GPU the driver publishes."""

    index: int
    uuid: str
    product: str = "NVIDIA H200"
    memory: str = "143771Mi"


@dataclass(frozen=True)
class PublishedMig:
    """A MIG device the driver publishes."""

    parent: PublishedGpu
    index: int
    """Its index among the parent's MIG devices (NVML's MIG device handle index)."""
    uuid: str
    profile: str = "3g.71gb"
    gi_profile_id: int = 9
    start: int = 0
    size: int = 4

    @property
    def name(self) -> str:
        return f"gpu-{self.parent.index}-mig-{self.gi_profile_id}-{self.start}-{self.size}"


def _common(gpu: PublishedGpu) -> dict[str, Any]:
    return {
        "architecture": {"string": "Hopper"},
        "brand": {"string": "Nvidia"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "cudaDriverVersion": {"version": "12.8.0"},
        "driverVersion": {"version": "570.124.6"},
        "productName": {"string": gpu.product},
    }


def gpu_device(gpu: PublishedGpu) -> tuple[str, dict[str, Any], dict[str, Any]]:
    attributes = {
        **_common(gpu),
        "index": {"int": gpu.index},
        "minor": {"int": gpu.index},
        "type": {"string": "gpu"},
        "uuid": {"string": gpu.uuid},
    }
    return f"gpu-{gpu.index}", attributes, {"memory": {"value": gpu.memory}}


def mig_device(mig: PublishedMig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    attributes = {
        **_common(mig.parent),
        "index": {"int": mig.index},
        "parentIndex": {"int": mig.parent.index},
        "parentUUID": {"string": mig.parent.uuid},
        "profile": {"string": mig.profile},
        "type": {"string": "mig"},
        "uuid": {"string": mig.uuid},
    }
    capacity = {
        "multiprocessors": {"value": "60"},
        "copyEngines": {"value": "3"},
        "memory": {"value": "71Gi"},
        **{f"memorySlice{i}": {"value": "1"} for i in range(mig.start, mig.start + mig.size)},
    }
    return mig.name, attributes, capacity


def resource_slice(
    node: str,
    devices: list[tuple[str, dict[str, Any], dict[str, Any]]],
    version: str = "v1",
    generation: int = 1,
    suffix: str = "x7k2p",
    driver: str = DRIVER,
    resource_version: str = "1",
) -> dict[str, Any]:
    """One slice of the driver's pool on `node`, as the API returns it in `version`."""
    if version == "v1":
        shaped = [{"name": n, "attributes": a, "capacity": c} for n, a, c in devices]
    else:
        shaped = [{"name": n, "basic": {"attributes": a, "capacity": c}} for n, a, c in devices]
    name = f"{node}-{driver}-{suffix}"
    return {
        "apiVersion": f"resource.k8s.io/{version}",
        "kind": "ResourceSlice",
        "metadata": {
            "name": name,
            "generateName": f"{node}-{driver}-",
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"resourceslice/{name}")),
            "resourceVersion": resource_version,
            "generation": 1,
            "creationTimestamp": "2026-11-29T09:00:00Z",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": node,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{node}")),
                    "controller": True,
                }
            ],
        },
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": shaped,
        },
    }
