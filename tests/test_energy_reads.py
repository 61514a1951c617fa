"""The energy reads beside scrapes are shared: their number does not grow with the number of servers."""

from __future__ import annotations

import asyncio
import time

from exporter.config import EnergyConfig
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from exporter.pollers import COALESCE_S, EnergyPoller
from exporter.values import GpuSample


class CountingSource:
    """The simulated source, noting when each read asks it (monotonic)."""

    name = "simulated"
    reads_fresh = True

    def __init__(self) -> None:
        self.inner = SimulatedSource(SimulatedFleet(2, LoadSchedule(DEFAULT_PHASES, time.time())))
        self.starts: list[float] = []

    async def read(self) -> list[GpuSample]:
        self.starts.append(time.monotonic())
        return await self.inner.read()

    async def close(self) -> None:
        await self.inner.close()


def _poller(source: CountingSource, readings: list[list[GpuSample]]) -> EnergyPoller:
    return EnergyPoller(source, EnergyConfig(timeout="1s"), readings.append, lambda: None)


async def test_scrapes_that_end_together_share_one_read_after_them() -> None:
    source, readings = CountingSource(), list[list[GpuSample]]()
    energy = _poller(source, readings)
    ended = time.monotonic()
    await asyncio.gather(*(energy.read_after_scrape() for _ in range(200)))
    assert len(source.starts) == 1
    assert source.starts[0] >= ended  # after every one of those scrapes: their instants are bracketed
    assert len(readings) == 1 and readings[0]


async def test_a_read_just_taken_serves_as_the_read_before_the_next_scrapes() -> None:
    source, readings = CountingSource(), list[list[GpuSample]]()
    energy = _poller(source, readings)
    await energy.read()
    for _ in range(20):
        await energy.read_before_scrape()
    assert len(source.starts) == 1 or source.starts[1] - source.starts[0] >= COALESCE_S


async def test_reads_beside_back_to_back_scrapes_stay_coalesce_s_apart() -> None:
    source, readings = CountingSource(), list[list[GpuSample]]()
    energy = _poller(source, readings)
    began = time.monotonic()
    for _ in range(40):  # scrapes that take no time: without sharing, two reads each
        await energy.read_before_scrape()
        await energy.read_after_scrape()
    elapsed = time.monotonic() - began
    assert len(source.starts) <= elapsed / COALESCE_S + 2  # one per COALESCE_S at most
    assert len(source.starts) < 80
