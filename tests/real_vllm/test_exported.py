"""The real-vLLM test's spike check, on the same daemon set-up with a simulated vLLM that restarts.

It runs without vLLM: a simulated server whose counters start again from zero after a restart on
the same port, polled as the real test polls. A right exporter shows no spike; the check must tell
energy counted twice, and a J/token whose tokens restarted, from the truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from tests.real_vllm.exported import MODEL, SERVER, Exported, read_exported, spikes


async def poll(url: str, polled: list[Exported], seconds: float) -> None:
    for _ in range(round(seconds / 0.25)):
        polled.append(await read_exported(url))
        await asyncio.sleep(0.25)


async def test_no_spike_across_a_restart_and_the_check_tells_a_spike() -> None:
    start = time.time()
    fleet = SimulatedFleet(2, LoadSchedule(DEFAULT_PHASES, start=start))
    vllm = SimulatedVllmServer(LoadSchedule(DEFAULT_PHASES, start=start), model=MODEL)
    url = await vllm.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "250ms", "gap_limit": "30s"},
            "servers": [{"name": SERVER, "url": url, "gpus": [0], "interval": "300ms"}],
            "windows": ["30m"],  # as the real test: the window holds every interval
        }
    )
    polled: list[Exported] = []
    try:
        async with Daemon(config, SimulatedSource(fleet)) as daemon:
            assert daemon.url is not None
            await poll(daemon.url, polled, 2.5)
            await vllm.stop()  # down for a second, then back on the same port with its counters at zero
            await asyncio.sleep(1.0)
            vllm.schedule = LoadSchedule(DEFAULT_PHASES, start=time.time())
            await vllm.start(port=port)
            before = polled[-1].output_tokens
            await poll(daemon.url, polled, 2.5)
    finally:
        await vllm.stop()
    assert polled[-1].output_tokens > before > 0  # tokens counted on both sides of the restart

    t0 = daemon.accountant.ledgers[SERVER].intervals[0].t_start
    truth = lambda t: fleet.energy_at(t) - fleet.energy_at(t0)  # noqa: E731
    assert not spikes(polled, truth)
    # Energy counted twice from the restart on, or a ratio over the tokens since the restart only:
    # both are spikes.
    after = [i for i, p in enumerate(polled) if p.output_tokens > before]
    doubled = [
        dataclasses.replace(p, jpt_output=p.jpt_output * 2) if i in after and p.jpt_output else p
        for i, p in enumerate(polled)
    ]
    assert spikes(doubled, truth)
    restarted = [
        dataclasses.replace(p, jpt_output=p.energy_j / (p.output_tokens - before)) if i in after else p
        for i, p in enumerate(polled)
    ]
    assert spikes(restarted, truth)
