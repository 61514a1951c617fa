"""Placement: which GPUs serve which server.

Today placement is static (config: GPU indices or UUIDs, or every GPU when omitted). A GPU that
serves several servers has its energy split between them in equal shares, so that for every GPU
the shares add up to one and no joule is counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.model import Gpu, MigDevice, PodRef


@dataclass(frozen=True, slots=True, order=True)
class Holding:
    """One device a server holds on one physical GPU: the whole GPU (or a time-sliced replica of it),
    or one MIG GPU instance of it. Energy is measured per physical GPU, so `uuid` is always the
    physical GPU's UUID as the energy source reports it."""

    uuid: str
    mig_instance: int | None = None
    """The MIG GPU instance ID; None when the server holds the whole GPU or a replica of it."""
    mig_slices: int | None = None
    """Compute slices of that MIG instance's profile (3 for `3g.40gb`, of 7); None without MIG."""


@dataclass(frozen=True, slots=True)
class Placement:
    """The devices each server holds, and each server's share of each GPU."""

    holdings: Mapping[str, frozenset[Holding]]
    """Server name -> the devices serving it."""

    pods: Mapping[str, PodRef] = field(default_factory=dict)
    """Server name -> the pod it runs in, for servers that are Kubernetes pods."""

    gpus: Mapping[str, frozenset[str]] = field(init=False, compare=False)
    """Server name -> UUIDs of the physical GPUs serving it (derived from `holdings`)."""

    def __post_init__(self) -> None:
        gpus = {server: frozenset(h.uuid for h in held) for server, held in self.holdings.items()}
        object.__setattr__(self, "gpus", gpus)

    def share(self, server: str, uuid: str) -> float:
        """The fraction of GPU `uuid`'s energy that belongs to `server` (equal split)."""
        if uuid not in self.gpus.get(server, frozenset()):
            return 0.0
        return 1.0 / sum(1 for uuids in self.gpus.values() if uuid in uuids)


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A configured GPU selector that no GPU of the energy source answers to."""

    server: str
    selector: int | str


def place_static(
    selectors: Mapping[str, Sequence[int | str] | None], gpus: Sequence[Gpu], migs: Sequence[MigDevice] = ()
) -> tuple[Placement, list[Unmatched]]:
    """Resolve each server's configured GPUs (indices, GPU or MIG UUIDs; None means all) against the
    GPUs and MIG devices seen."""
    from exporter.placement.devices import DeviceResolver  # it builds Holdings: imported once both exist

    resolver = DeviceResolver(gpus, migs)
    placed: dict[str, frozenset[Holding]] = {}
    unmatched: list[Unmatched] = []
    for server, wanted in selectors.items():
        if wanted is None:
            placed[server] = frozenset(Holding(g.uuid) for g in gpus)
            continue
        held: set[Holding] = set()
        for selector in wanted:
            holding = resolver.resolve(selector)
            if holding is None:
                unmatched.append(Unmatched(server, selector))
            else:
                held.add(holding)
        placed[server] = frozenset(held)
    return Placement(placed), unmatched
