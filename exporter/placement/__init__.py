"""Placement: which GPUs serve which server, and each server's share of each GPU.

Today placement is static (config: GPU indices, GPU UUIDs or MIG device UUIDs, or every GPU when
omitted). The share of a GPU's energy that belongs to each server is decided per stretch between
two energy readings, by one of these methods:

- `exclusive`: one server holds the whole GPU: all of it.
- `activity`: several servers share the whole GPU (time-slicing, MPS): in proportion to the
  measured activity of their pods' processes; energy of pods no server stands for is unattributed.
- `mig_activity`: servers hold MIG instances: the parent GPU's energy in proportion to each
  instance's measured activity times its slices; energy of instances nobody holds is unattributed.
- `mig_slices`: MIG without activity: each instance's compute slices of the GPU's seven
  (`3g.40gb` -> 3/7); slices no server holds are unattributed, never given to a server.
- `equal`: the fallback where nothing is measured: equal shares.

For every GPU the shares add up to at most one, so no joule is counted twice.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.values import Gpu, GpuActivity, MigDevice, PodRef

_K = TypeVar("_K")

MIG_SLICES_PER_GPU = 7
"""Compute slices of a MIG-capable GPU (A100, H100, H200): a `3g.40gb` instance has 3 of them."""
SHARE_METHODS = ("exclusive", "activity", "mig_activity", "mig_slices", "equal")

_PROFILE = re.compile(r"(?:^|\.)([1-7])g\.\d+gb")


def mig_profile_slices(profile: str) -> int:
    """Compute slices of a MIG profile's GPU instance: `3g.40gb` -> 3, `1c.3g.40gb` -> 3,
    `1g.10gb+me` -> 1. ValueError for anything else."""
    found = _PROFILE.search(profile)
    if found is None:
        raise ValueError(f"not a MIG profile: {profile!r} (expected e.g. 3g.40gb)")
    return int(found.group(1))


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

    def shares(self, uuid: str, activity: GpuActivity | None) -> tuple[Share, ...]:
        """Each holder's share of GPU `uuid`'s energy over a stretch whose measured activity is
        `activity` (None where the source measured none)."""
        held = {server: [h for h in hs if h.uuid == uuid] for server, hs in self.holdings.items()}
        held = {server: hs for server, hs in held.items() if hs}
        if not held:
            return ()
        if all(h.mig_instance is not None for hs in held.values() for h in hs):
            return _mig_shares(held, activity)
        if len(held) == 1:
            return tuple(Share(server, 1.0, "exclusive") for server in held)
        uids = {server: self.pods[server].uid if server in self.pods else None for server in held}
        pods = _measured(activity.pods) if activity is not None else {}
        if not pods or any(uid is None for uid in uids.values()):
            return tuple(Share(server, 1.0 / len(held), "equal") for server in sorted(held))
        total = sum(pods.values())
        if total <= 0:  # nobody ran anything: the idle GPU's energy in equal shares
            return tuple(Share(server, 1.0 / len(held), "activity") for server in sorted(held))
        servers_of = Counter(uids.values())
        return tuple(
            Share(server, pods.get(uid or "", 0.0) / total / servers_of[uid], "activity")
            for server, uid in sorted(uids.items())
        )


@dataclass(frozen=True, slots=True)
class Share:
    """A server's share of one GPU's energy, and the method that decided it."""

    server: str
    share: float
    method: str
    """One of `SHARE_METHODS`."""


def _mig_shares(held: Mapping[str, list[Holding]], activity: GpuActivity | None) -> tuple[Share, ...]:
    """Shares of a MIG GPU whose holders each hold one or more GPU instances."""
    holders = Counter(h.mig_instance for hs in held.values() for h in hs)
    weights = _measured(activity.instances) if activity is not None else {}
    total = sum(weights.values())
    weight_of: dict[int | None, float]
    if total > 0:
        method, weight_of = "mig_activity", {gi: w / total for gi, w in weights.items()}
    elif all(h.mig_slices is not None for hs in held.values() for h in hs):
        method = "mig_slices"
        slices = {h.mig_instance: h.mig_slices or 0 for hs in held.values() for h in hs}
        # More slices than the GPU has cannot be: scale down rather than count a joule twice.
        whole = max(MIG_SLICES_PER_GPU, sum(slices.values()))
        weight_of = {gi: n / whole for gi, n in slices.items()}
    else:
        return tuple(Share(server, 1.0 / len(held), "equal") for server in sorted(held))
    return tuple(
        Share(server, sum(weight_of.get(h.mig_instance, 0.0) / holders[h.mig_instance] for h in hs), method)
        for server, hs in sorted(held.items())
    )


def _measured(values: Mapping[_K, float]) -> dict[_K, float]:
    """The readings that can be activity: finite and not negative."""
    return {k: v for k, v in values.items() if math.isfinite(v) and v >= 0}


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A configured GPU selector that no GPU of the energy source answers to."""

    server: str
    selector: int | str


def place_static(
    selectors: Mapping[str, Sequence[int | str] | None],
    gpus: Sequence[Gpu],
    migs: Sequence[MigDevice] = (),
    pods: Mapping[str, PodRef] | None = None,
) -> tuple[Placement, list[Unmatched]]:
    """Resolve each server's configured GPUs (indices, GPU or MIG UUIDs, any device-ID form; None
    means every GPU) against the GPUs and MIG devices seen. `pods` names the pod each server runs in."""
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
    return Placement(placed, dict(pods or {})), unmatched
