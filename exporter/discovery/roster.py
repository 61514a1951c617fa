"""The discovered servers the daemon runs, and the ones gone that keep their counters for a while.

A server whose pod went away stops being scraped at once but keeps its cumulative series for the
grace period (a Prometheus scrape in between still sees its last counts), then `on_expired` removes it
from the accounting and its series go. A pod of the same name that comes back within the grace period
(a StatefulSet's pod recreated) continues the same server: its counters restart on the new pod's page,
which the accounting counts as a counter reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from exporter.discovery.watcher import DiscoveredServer
from exporter.values import PodLabels


@dataclass(frozen=True, slots=True)
class Change:
    """What one new view of the pods changes."""

    gone: tuple[str, ...]
    added: tuple[DiscoveredServer, ...]
    changed: tuple[DiscoveredServer, ...]
    """Servers whose pod is still there but scraped differently now (its URL, kind or labels)."""


class Roster:
    def __init__(self, grace_s: float, on_expired: Callable[[str], None]) -> None:
        self.grace_s = grace_s
        self._on_expired = on_expired
        self.current: dict[str, DiscoveredServer] = {}
        self.departed: dict[str, tuple[PodLabels, asyncio.TimerHandle]] = {}

    def update(self, servers: Mapping[str, DiscoveredServer]) -> Change:
        gone = tuple(name for name in self.current if name not in servers)
        added = tuple(s for name, s in servers.items() if name not in self.current)
        changed = tuple(s for name, s in servers.items() if name in self.current and s != self.current[name])
        loop = asyncio.get_running_loop()
        for name in gone:
            timer = loop.call_later(self.grace_s, self._expire, name)
            self.departed[name] = (self.current[name].labels, timer)
        for s in added:
            back = self.departed.pop(s.target.server, None)
            if back is not None:
                back[1].cancel()
        self.current = dict(servers)
        return Change(gone, added, changed)

    def labels(self) -> Iterator[tuple[str, PodLabels]]:
        """Every server's pod labels: the running ones' and the departed ones'."""
        yield from ((name, s.labels) for name, s in self.current.items())
        yield from ((name, labels) for name, (labels, _) in self.departed.items())

    def close(self) -> None:
        for _, timer in self.departed.values():
            timer.cancel()
        self.departed.clear()

    def _expire(self, name: str) -> None:
        del self.departed[name]
        self._on_expired(name)
