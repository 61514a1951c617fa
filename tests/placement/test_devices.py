"""Device IDs in every form the device plugins advertise resolve to the physical GPU (and MIG instance)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from exporter.energy import MigReporting
from exporter.placement import Holding, Unmatched, place_static
from exporter.placement.devices import DeviceResolver
from exporter.values import Gpu, MigDevice

A = "GPU-8f6a1c2e-0b1d-4c3e-9a7f-000000000000"
B = "GPU-8f6a1c2e-0b1d-4c3e-9a7f-111111111111"
GPUS = (Gpu(0, A, "NVIDIA A100-SXM4-80GB"), Gpu(1, B, "NVIDIA A100-SXM4-80GB"))
MIG_3G = "MIG-3a0c9a6e-5d2b-5a8e-8c1e-222222222222"
MIG_2G = "MIG-3a0c9a6e-5d2b-5a8e-8c1e-333333333333"


@dataclass(frozen=True)
class MigSource:
    """Stands in for an energy source that reports MIG devices (the `MigReporting` protocol)."""

    mig_devices: tuple[MigDevice, ...]


SOURCE = MigSource((MigDevice(MIG_3G, B, 1, "3g.40gb", 3), MigDevice(MIG_2G, B, 5, "2g.20gb", 2)))


@pytest.mark.parametrize(
    ("device_id", "held"),
    [
        (A, Holding(A)),
        (A.lower(), Holding(A)),
        (f"{A}::3", Holding(A)),  # time-slicing / MPS replica
        ("1", Holding(B)),  # the index device-ID strategy
        (MIG_3G, Holding(B, 1, 3)),
        (MIG_2G.upper(), Holding(B, 5, 2)),  # case-insensitive
        (f"{MIG_2G}::7", Holding(B, 5, 2)),  # AWS EKS
        (f"MIG-{B}/5/0", Holding(B, 5, 2)),  # older drivers: MIG-GPU-<uuid>/<gi>/<ci>
        ("nvidia0", Holding(A)),  # GKE
        ("nvidia1/gi1", Holding(B, 1, 3)),
        ("nvidia0/vgpu2", Holding(A)),
    ],
)
def test_every_form_resolves(device_id: str, held: Holding) -> None:
    assert isinstance(SOURCE, MigReporting)
    assert DeviceResolver(GPUS, SOURCE.mig_devices).resolve(device_id) == held


@pytest.mark.parametrize(
    "device_id", ["GPU-unknown", "MIG-unknown", "7", "nvidia9", "nvidia9/gi1", f"MIG-{A}", "", "gpu0", "0:1"]
)
def test_unknown_ids_resolve_to_nothing(device_id: str) -> None:
    assert DeviceResolver(GPUS, SOURCE.mig_devices).resolve(device_id) is None


def test_a_mig_instance_the_source_does_not_list_keeps_its_parent_without_slices() -> None:
    assert DeviceResolver(GPUS).resolve(f"MIG-{B}/4/0") == Holding(B, 4, None)
    assert DeviceResolver(GPUS).resolve("nvidia1/gi4") == Holding(B, 4, None)


def test_amd_gpus_by_pci_address() -> None:
    """AMD's device plugin names a GPU by its PCI address, as amdsmi reports it (domain optional)."""
    amd = (Gpu(0, "c2ff74a1-0000-1000-80a4-9ad5e3a1c001", "MI300X", pci_bus_id="0000:c1:00.0"),)
    assert DeviceResolver(amd).resolve("0000:C1:00.0") == Holding(amd[0].uuid)
    assert DeviceResolver(amd).resolve("c1:00.0") == Holding(amd[0].uuid)
    assert DeviceResolver(amd).resolve("0000:c2:00.0") is None


def test_static_placement_accepts_mig_uuids() -> None:
    selectors: dict[str, list[int | str] | None] = {"a": [MIG_3G, 0], "b": [MIG_2G, "MIG-nope"]}
    placement, unmatched = place_static(selectors, GPUS, SOURCE.mig_devices)
    assert placement.holdings["a"] == {Holding(B, 1, 3), Holding(A)}
    assert placement.holdings["b"] == {Holding(B, 5, 2)}
    assert placement.gpus["b"] == {B}
    assert unmatched == [Unmatched("b", "MIG-nope")]
