"""The daemon in this process with a `FaultySource`, `FaultyTarget`s on loopback and a watcher.

The watcher scrapes `/metrics` over HTTP every 100 ms for the whole test and records every
cumulative counter that went down and every negative joules-per-token it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from exporter.logs import configure_logging
from tests.faults.parts import FaultySource, FaultyTarget
from tests.helpers import Series, samples, series

INTERVAL_S = 0.2
TIMEOUT_S = 0.3


@dataclass
class Watcher:
    """What a Prometheus scraping the daemon all along would have noticed."""

    forget_missing: bool = False
    """Forget a series that is absent from a page (a server removed by a reload, later added back)."""
    scrapes: int = 0
    decreased: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    _last: dict[Series, float] = field(default_factory=dict)

    def check(self, found: dict[Series, float]) -> None:
        self.scrapes += 1
        if self.forget_missing:
            self._last = {k: v for k, v in self._last.items() if k in found}
        for key, value in found.items():
            name = key[0]
            if name.endswith("_total") and value < self._last.get(key, value):
                self.decreased.append(f"{name}{dict(key[1])}: {self._last[key]} -> {value}")
            if "per_token" in name and value < 0:
                self.negative.append(f"{name}{dict(key[1])} = {value}")
            self._last[key] = value


@dataclass
class Rig:
    daemon: Daemon
    source: FaultySource
    targets: list[FaultyTarget]
    base: str
    session: aiohttp.ClientSession
    watcher: Watcher
    task: asyncio.Task[int]
    """`Daemon.run`: its result is the exit code."""
    stop: asyncio.Event

    async def metrics(self) -> dict[Series, float]:
        async with self.session.get(self.base + "/metrics") as resp:
            assert resp.status == 200
            return samples(await resp.text())

    async def readyz(self) -> tuple[int, str]:
        async with self.session.get(self.base + "/readyz") as resp:
            return resp.status, await resp.text()

    async def wait_for(self, what: str, check: Any, timeout_s: float = 5.0) -> float:
        """Poll `check()` (sync or async) until true; the seconds it took."""
        started = time.monotonic()
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s: {what}"
            await asyncio.sleep(0.05)

    def cadences(self, since: float, until: float, *targets: int) -> list[float]:
        return [self.targets[i].cadence_s(since, until) for i in targets]


def value(found: dict[Series, float], name: str, **labels: str) -> float | None:
    return found.get(series(name, **labels))


@contextlib.asynccontextmanager
async def running(targets: int = 3, crash_exit_s: float = 120.0) -> AsyncIterator[Rig]:
    fleet = SimulatedFleet(2, LoadSchedule(DEFAULT_PHASES, start=time.time()))
    source = FaultySource(SimulatedSource(fleet))
    servers = [FaultyTarget(model=f"model-{i}") for i in range(targets)]
    urls = [await t.start() for t in servers]
    timeout = f"{TIMEOUT_S}s"
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": f"{INTERVAL_S}s", "timeout": timeout},
            "servers": [
                {"name": f"s{i}", "url": u, "kind": "vllm", "interval": f"{INTERVAL_S}s", "timeout": timeout}
                for i, u in enumerate(urls)
            ],
            "windows": ["1m"],
        }
    )
    configure_logging("info", "json")  # as in production: a traceback costs the loop little
    watcher = Watcher()
    try:
        async with (
            Daemon(config, source, crash_exit_s=crash_exit_s) as daemon,
            aiohttp.ClientSession() as session,
        ):
            assert daemon.url is not None and daemon.running is not None
            task = daemon.running
            rig = Rig(
                daemon,
                source,
                servers,
                daemon.url.removesuffix("/metrics"),
                session,
                watcher,
                task,
                daemon.stopping,
            )

            async def watch() -> None:
                while not task.done():
                    with contextlib.suppress(aiohttp.ClientConnectionError):  # the daemon stopped meanwhile
                        watcher.check(await rig.metrics())
                    await asyncio.sleep(0.1)

            watching = asyncio.create_task(watch())
            try:
                await rig.wait_for("ready", lambda: not daemon.not_ready())
                yield rig
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
    finally:
        for t in servers:
            await t.stop()
        structlog.reset_defaults()
    assert watcher.scrapes > 0
    assert not watcher.decreased, watcher.decreased
    assert not watcher.negative, watcher.negative
