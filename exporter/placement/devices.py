"""Device IDs, as device plugins and configs name them, resolved to the devices an energy source reads.

One resolver serves static placement (`gpus:` in the config) and the kubelet's allocations, so a
MIG UUID means the same in both. The forms, as the device plugins advertise them:

- `GPU-<uuid>`: a whole GPU (NVIDIA's default `uuid` device-ID strategy); any other UUID the
  energy source reports is matched as is.
- `0000:c1:00.0`: a GPU's PCI address (AMD's device plugin), where the source reports it; the
  domain may be left out (`c1:00.0`).
- `MIG-<uuid>`: a MIG device, mapped to its parent GPU and GPU instance through the MIG devices
  the energy source reports; `MIG-GPU-<uuid>/<gi>/<ci>`, the form of older drivers, names both.
- `<id>::<n>`: replica n of a time-sliced or MPS-shared device (and AWS EKS's MIG form).
- `<n>`: a GPU index (the `index` device-ID strategy).
- `nvidia<n>`, `nvidia<n>/gi<m>`, `nvidia<n>/vgpu<k>`: GKE's GPU n, its GPU instance m, a shared replica.

Matching is case-insensitive. An ID in none of these forms, or naming a device the source does not
see, resolves to None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from exporter.placement import Holding
from exporter.values import Gpu, MigDevice

_REPLICA = re.compile(r"(.+)::\d+")
_OLD_MIG = re.compile(r"mig-(gpu-[0-9a-f-]+)/(\d+)/\d+")
_GKE = re.compile(r"nvidia(\d+)(?:/gi(\d+)|/vgpu\d+)?")


class DeviceResolver:
    """Resolves device IDs against the GPUs and MIG devices an energy source sees."""

    def __init__(self, gpus: Iterable[Gpu], migs: Iterable[MigDevice] = ()) -> None:
        gpus = tuple(gpus)
        self._by_uuid = {g.uuid.lower(): g.uuid for g in gpus}
        self._by_index = {g.index: g.uuid for g in gpus}
        self._by_pci = {_pci(g.pci_bus_id): g.uuid for g in gpus if g.pci_bus_id}
        self._migs = {m.uuid.lower(): m for m in migs}
        self._mig_slices = {(m.parent_uuid.lower(), m.gpu_instance): m.slices for m in self._migs.values()}

    def resolve(self, device_id: str | int) -> Holding | None:
        """The device that `device_id` names, or None where no device seen answers to it."""
        if isinstance(device_id, int):
            return self._index(device_id)
        key = device_id.strip().lower()
        replica = _REPLICA.fullmatch(key)
        if replica:
            key = replica.group(1)
        if key in self._by_uuid:
            return Holding(self._by_uuid[key])
        if _pci(key) in self._by_pci:
            return Holding(self._by_pci[_pci(key)])
        if key in self._migs:
            mig = self._migs[key]
            return self._instance(mig.parent_uuid.lower(), mig.gpu_instance)
        old_mig = _OLD_MIG.fullmatch(key)
        if old_mig:
            return self._instance(old_mig.group(1), int(old_mig.group(2)))
        if key.isdigit():
            return self._index(int(key))
        gke = _GKE.fullmatch(key)
        if gke:
            whole = self._index(int(gke.group(1)))
            if whole is None or gke.group(2) is None:
                return whole
            return self._instance(whole.uuid.lower(), int(gke.group(2)))
        return None

    def _index(self, index: int) -> Holding | None:
        uuid = self._by_index.get(index)
        return Holding(uuid) if uuid is not None else None

    def _instance(self, parent: str, gpu_instance: int) -> Holding | None:
        uuid = self._by_uuid.get(parent)
        if uuid is None:
            return None
        return Holding(uuid, gpu_instance, self._mig_slices.get((parent, gpu_instance)))


def _pci(address: str) -> str:
    """A PCI address in amdsmi's form, `dddd:bb:dd.f` in lower case (domain 0000 when left out)."""
    address = address.lower()
    return address if address.count(":") == 2 else f"0000:{address}"
