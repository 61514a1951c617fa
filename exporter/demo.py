"""`tokenwatt demo`: simulated GPUs and a simulated vLLM server, joined by the real daemon.

The simulated inference server serves a vLLM-format `/metrics` page over real HTTP on loopback,
rendered by prometheus_client exactly as vLLM renders its own, with token counters that follow the
same load schedule that drives the simulated GPUs' power. The daemon scrapes it like any target.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.app import Daemon
from exporter.config import Config
from exporter.config_file import validate_config
from exporter.energy.simulated import (
    DEFAULT_PHASES,
    LoadSchedule,
    LoadTotals,
    SimulatedSource,
    simulated_fleet,
)

DEMO_MODEL = "demo-llama-8b"
DEMO_SERVER = "demo-vllm"


@dataclass(frozen=True, slots=True)
class ServedCounters:
    """What the simulated server put on one page, and when."""

    t: float
    input_tokens: float
    output_tokens: float
    requests: float


class _VllmPage(Collector):
    def __init__(self, server: SimulatedVllmServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        s = self._server
        t = s.clock()
        totals = s.schedule.totals_at(t)
        served = ServedCounters(
            t, math.floor(totals.input_tokens), math.floor(totals.output_tokens), math.floor(totals.requests)
        )
        s.served.append(served)
        labels = ["model_name", "engine"]
        ids = [s.model, "0"]
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Number of requests in model execution batches.", labels=labels
        )
        running.add_metric(ids, s.schedule.phase_at(t).running)
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=labels
        )
        waiting.add_metric(ids, 0)
        prompt = CounterMetricFamily(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels=labels
        )
        prompt.add_metric(ids, served.input_tokens, created=s.started)
        generation = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=labels
        )
        generation.add_metric(ids, served.output_tokens, created=s.started)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*labels, "finished_reason"],
        )
        stop = math.floor(served.requests * 0.7)
        success.add_metric([*ids, "stop"], stop, created=s.started)
        success.add_metric([*ids, "length"], served.requests - stop, created=s.started)
        yield from (running, waiting, prompt, generation, success)


class SimulatedVllmServer:
    """A vLLM look-alike whose counters follow `schedule` exactly (floored to whole tokens)."""

    def __init__(
        self, schedule: LoadSchedule, model: str = DEMO_MODEL, clock: Callable[[], float] = time.time
    ):
        self.schedule = schedule
        self.model = model
        self.clock = clock
        self.started = clock()
        self.served: deque[ServedCounters] = deque(maxlen=100_000)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_VllmPage(self))
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self._registry), content_type="text/plain", charset="utf-8"
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def totals_at(self, t: float) -> LoadTotals:
        return self.schedule.totals_at(t)


def demo_config(server_url: str, listen: str) -> Config:
    return validate_config(
        {
            "listen": listen,
            "energy": {"source": "simulated", "interval": "500ms"},
            "servers": [{"name": DEMO_SERVER, "url": server_url, "kind": "vllm", "interval": "1s"}],
        }
    )


async def run_demo(
    stop: asyncio.Event, listen: str, on_listening: Callable[[str], None] | None = None
) -> None:
    """The demo until `stop` is set: a simulated vLLM server, simulated GPUs and the daemon."""
    schedule = LoadSchedule(DEFAULT_PHASES, start=time.time())
    server = SimulatedVllmServer(schedule)
    url = await server.start()
    try:
        config = demo_config(url, listen)
        daemon = Daemon(config, SimulatedSource(simulated_fleet(config.energy, schedule)))
        await daemon.run(stop, on_listening)
    finally:
        await server.stop()
