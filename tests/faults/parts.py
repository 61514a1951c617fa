"""Fault-injecting parts for the fault and chaos tests: an energy source and an inference server.

`FaultySource` stands in for GPU hardware behind a C library (we have none here): it wraps the
simulated fleet and, on demand, raises an error nobody foresaw, hangs forever, hangs longer than the
deadline and then recovers, wedges (ignores cancellation, as a stuck thread would if nothing
abandoned it) or resets its counters. `FaultyTarget` is a real HTTP server on loopback serving a
vLLM page whose counters grow with time, and on demand hangs, answers slowly, serves garbage,
answers 500 or restarts its counters. It logs the instant of every request, so tests measure the
cadence at which tokenwatt scrapes it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

from aiohttp import web

from exporter.energy import EnergyReadError
from exporter.energy.simulated import SimulatedSource
from exporter.values import Gpu, GpuSample

SOURCE_FAULTS = ("ok", "raise", "hang", "slow", "error", "reset", "wedge")
TARGET_FAULTS = ("ok", "hang", "slow", "garbage", "http_500", "reset")


class FaultySource:
    """The simulated source with faults on demand (`mode`)."""

    name = "simulated"
    reads_fresh = True

    def __init__(self, inner: SimulatedSource, slow_s: float = 1.0) -> None:
        self.inner = inner
        self.mode = "ok"
        self.slow_s = slow_s
        self.reads = 0
        self._offset_j = 0.0

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.inner.gpus

    async def read(self) -> list[GpuSample]:
        self.reads += 1
        mode = self.mode
        if mode == "raise":
            raise RuntimeError("injected: a bug in the source")
        if mode == "error":
            raise EnergyReadError("gpu_is_lost", "injected: GPU fell off the bus")
        if mode == "hang":
            await asyncio.Event().wait()
        while self.mode == "wedge":  # deaf to cancellation until the test ends the fault
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        samples = await self.inner.read()
        if mode == "reset":  # a driver reload: counters restart near zero
            self._offset_j = samples[0].energy_j - 1.0
            self.mode = "ok"
        return [replace(s, energy_j=s.energy_j - self._offset_j) for s in samples]

    async def close(self) -> None:
        await self.inner.close()


class FaultyTarget:
    """A vLLM look-alike on loopback with faults on demand (`mode`)."""

    def __init__(self, model: str = "m", tokens_per_s: float = 500.0, slow_s: float = 1.0) -> None:
        self.model = model
        self.tokens_per_s = tokens_per_s
        self.slow_s = slow_s
        self.mode = "ok"
        self.requests: list[float] = []
        """time.monotonic() of every request received."""
        self._start = time.time()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def page(self) -> str:
        elapsed = time.time() - self._start
        labels = f'model_name="{self.model}",engine="0"'
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{labels}}} 3.0\n"
            "# TYPE vllm:prompt_tokens counter\n"
            f"vllm:prompt_tokens_total{{{labels}}} {int(elapsed * self.tokens_per_s)}.0\n"
            "# TYPE vllm:generation_tokens counter\n"
            f"vllm:generation_tokens_total{{{labels}}} {int(elapsed * self.tokens_per_s / 5)}.0\n"
            "# TYPE vllm:request_success counter\n"
            f'vllm:request_success_total{{{labels},finished_reason="stop"}} {int(elapsed * 2)}.0\n'
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        self.requests.append(time.monotonic())
        mode = self.mode
        if mode == "hang":
            await asyncio.Event().wait()
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        if mode == "http_500":
            return web.Response(status=500, text="injected: internal error\n")
        if mode == "garbage":
            junk = bytes(random.getrandbits(8) for _ in range(200)).decode("latin-1")
            return web.Response(text="vllm:prompt_tokens_total{" + junk, content_type="text/plain")
        if mode == "reset":  # the server restarted: counters from zero
            self._start = time.time()
            self.mode = "ok"
        return web.Response(text=self.page(), content_type="text/plain")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def cadence_s(self, since: float, until: float) -> float:
        """Mean time between the requests received in [since, until]."""
        times = [t for t in self.requests if since <= t <= until]
        assert len(times) >= 3, f"only {len(times)} requests in {until - since:.1f}s"
        return (times[-1] - times[0]) / (len(times) - 1)
