"""`/metrics` rendered off the event loop, one render shared by every reader that asks meanwhile.

The snapshot (frozen value objects) is taken on the event loop, where the accounting lives, so it
is consistent; turning it into text, the costly part for a large page, runs in a worker thread
while polling goes on. Readers that arrive while a render is running wait for that render instead
of starting their own, so N concurrent scrapes cost one render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from exporter.accounting.book import Snapshot
from exporter.exposition.collector import Health, TokenwattCollector


def render_text(snapshot: Snapshot, health: Health) -> bytes:
    """The exposition (text format 0.0.4) of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TokenwattCollector(lambda: (snapshot, health)))
    return generate_latest(registry)


class SharedRender:
    """Renders the latest snapshot in a thread; concurrent callers share the render in flight."""

    def __init__(self, snapshot: Callable[[], tuple[Snapshot, Health]]) -> None:
        self._snapshot = snapshot
        self._in_flight: asyncio.Future[bytes] | None = None
        self.renders = 0
        """Renders started so far."""

    async def body(self) -> bytes:
        if self._in_flight is None:
            self.renders += 1
            snapshot, health = self._snapshot()
            future = asyncio.ensure_future(asyncio.to_thread(render_text, snapshot, health))
            future.add_done_callback(self._done)
            self._in_flight = future
        # A reader that goes away must not cancel the render the others wait for.
        return await asyncio.shield(self._in_flight)

    def _done(self, _: asyncio.Future[bytes]) -> None:
        self._in_flight = None
