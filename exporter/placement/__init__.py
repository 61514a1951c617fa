"""Placement: which GPUs serve which server.

Today placement is static (config: GPU indices or UUIDs, or every GPU when omitted). A GPU that
serves several servers has its energy split between them in equal shares, so that for every GPU
the shares add up to one and no joule is counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.model import Gpu


@dataclass(frozen=True, slots=True)
class Placement:
    """GPU UUIDs per server, and each server's share of each GPU."""

    gpus: Mapping[str, frozenset[str]]
    """Server name -> UUIDs of the GPUs serving it."""

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
    selectors: Mapping[str, Sequence[int | str] | None], gpus: Sequence[Gpu]
) -> tuple[Placement, list[Unmatched]]:
    """Resolve each server's configured GPUs (indices or UUIDs; None means all) against the GPUs seen."""
    by_index = {g.index: g.uuid for g in gpus}
    by_uuid = {g.uuid.lower(): g.uuid for g in gpus}
    placed: dict[str, frozenset[str]] = {}
    unmatched: list[Unmatched] = []
    for server, wanted in selectors.items():
        if wanted is None:
            placed[server] = frozenset(by_uuid.values())
            continue
        uuids: set[str] = set()
        for selector in wanted:
            uuid = by_index.get(selector) if isinstance(selector, int) else by_uuid.get(selector.lower())
            if uuid is None:
                unmatched.append(Unmatched(server, selector))
            else:
                uuids.add(uuid)
        placed[server] = frozenset(uuids)
    return Placement(placed), unmatched
