"""`Daemon` as an async context manager: started on entry once it listens, stopped on exit."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from exporter.app import START_STOP_TIMEOUT_S, Daemon
from exporter.config_file import validate_config
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from exporter.exposition.render import render_text
from exporter.values import Gpu, GpuSample, ModelTokens, TokenSample
from tests.helpers import get_text, samples, value


def simulated(gpus: int = 1) -> SimulatedSource:
    return SimulatedSource(SimulatedFleet(gpus, LoadSchedule(DEFAULT_PHASES, start=0.0)))


def daemon(listen: str) -> Daemon:
    config = validate_config({"listen": listen, "energy": {"source": "simulated", "interval": "100ms"}})
    return Daemon(config, simulated())


async def test_entered_it_serves_and_on_exit_it_has_stopped_with_exit_code_0() -> None:
    async with daemon("127.0.0.1:0") as d:
        assert d.url is not None and d.running is not None
        assert "tokenwatt_build_info" in await get_text(d.url)
    assert d.running.done() and d.running.result() == 0
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed
        await get_text(d.url)


async def test_a_daemon_that_cannot_listen_raises_on_entry_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # At once: well within the 10 s the daemon is given to start listening.
        with pytest.raises(OSError, match="address already in use"):
            async with asyncio.timeout(START_STOP_TIMEOUT_S / 2), daemon(f"127.0.0.1:{port}"):
                pass


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_scrape_settles_its_own_server_and_leaves_the_others_to_the_energy_poller() -> None:
    """The daemon's callbacks on a fake clock, in the order the pollers call them. Server b's latest
    scrape waits for a reading after it (its read after the scrape was slow); server a's read after
    its own scrape brings one. a's scrape settles a's queue only: b's interval is counted at the
    energy poller's next settle, not at a's scrape (whose work must not grow with the servers)."""
    t0 = 1_700_000_000.0
    clock = Clock(t0)
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated"},
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:1/metrics", "gpus": [0]},
                {"name": "b", "url": "http://127.0.0.1:1/metrics", "gpus": [1]},
            ],
        }
    )
    d = Daemon(config, simulated(2), clock=clock)
    gpus = [Gpu(i, f"GPU-5d0c7e2a-0000-4000-8000-00000000000{i}", "sim") for i in range(2)]

    def reading(t: float) -> None:  # the energy poller's on_samples: 300 W on each GPU
        clock.now = t
        d._take_energy([GpuSample(g, t, 300.0 * (t - t0), 300.0) for g in gpus])

    def scrape(server: str, t: float, output: float) -> None:  # a target poller's on_tokens
        clock.now = max(clock.now, t + 0.01)  # handed over after the scrape and the read after it
        d._take_tokens([TokenSample(server, t, ModelTokens("m", 2 * output, output))])

    def output_tokens() -> dict[str, float]:  # as /metrics shows them
        page = samples(render_text(*d.snapshot()).decode())
        return {
            s: value(page, "tokenwatt_server_tokens_total", model="m", server=s, token_type="output")
            for s in ("a", "b")
        }

    reading(t0)
    d._settle()  # the energy poller's after_poll
    scrape("a", t0 + 0.5, 0.0)
    scrape("b", t0 + 0.5, 0.0)
    reading(t0 + 1.0)
    d._settle()  # both first scrapes applied: the baselines
    scrape("b", t0 + 1.5, 100.0)  # no reading after it yet: queued
    reading(t0 + 2.0)  # the read after a's scrape (and b's late one): no settle
    scrape("a", t0 + 1.8, 40.0)
    assert output_tokens() == {"a": 40.0, "b": 0.0}
    reading(t0 + 3.0)
    d._settle()
    assert output_tokens() == {"a": 40.0, "b": 100.0}
