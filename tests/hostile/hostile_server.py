"""A loopback HTTP server that misbehaves the way broken or hostile sources do.

Each path is one behaviour. Token pages are vLLM's (`vllm:` counters with a `model_name` label);
`/dcgm` is a dcgm-exporter page (rendered by tests/energy/dcgm_exporter_server.py) whose first
GPU reads NaN, +Inf and a negative energy in turn between real readings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.energy.dcgm_exporter_server import ExporterGpu, ExporterStyle, render

GPUS = (
    ExporterGpu(0, "GPU-0c1a2b3c-0000-4000-8000-000000000000"),
    ExporterGpu(1, "GPU-1c1a2b3c-0000-4000-8000-000000000001"),
)
POWER_W = 300.0
HOSTILE_ENERGY = ("NaN", "+Inf", "-5000000000")


def vllm_page(models: dict[str, tuple[float, float]], running: float = 1.0) -> str:
    lines = ["# TYPE vllm:prompt_tokens_total counter"]
    lines += [f'vllm:prompt_tokens_total{{model_name="{m}"}} {i!r}' for m, (i, _) in models.items()]
    lines.append("# TYPE vllm:generation_tokens_total counter")
    lines += [f'vllm:generation_tokens_total{{model_name="{m}"}} {o!r}' for m, (_, o) in models.items()]
    lines.append("# TYPE vllm:num_requests_running gauge")
    lines += [f'vllm:num_requests_running{{model_name="{m}"}} {running!r}' for m in models]
    return "\n".join(lines) + "\n"


@dataclass
class HostileServer:
    started: float = field(default_factory=time.time)
    hits: dict[str, int] = field(default_factory=dict)

    def _hit(self, path: str) -> int:
        self.hits[path] = self.hits.get(path, 0) + 1
        return self.hits[path]

    def _tokens(self) -> float:
        """A plausible cumulative count: 100 tokens a second since the server started."""
        return round(100.0 * (time.time() - self.started))

    def pages(self) -> dict[str, Callable[[int], str]]:
        good = self._tokens
        return {
            # A healthy server: must stay up and keep being scraped whatever the others do.
            "/good": lambda n: vllm_page({"m": (good(), good() / 2)}),
            # Real values and -1e6 in turn.
            "/alternating": lambda n: vllm_page({"m": (good(), good()) if n % 2 else (-1e6, -1e6)}),
            # 1.7e308, then 0, then plausible values again.
            "/huge": lambda n: vllm_page({"m": (1.7e308, 1.7e308) if n % 3 == 1 else (good(), good())}),
            # Counters that rise by a millionth of a token per scrape.
            "/creep": lambda n: vllm_page({"m": (1e-6 * n, 1e-6 * n)}),
            # 1,000 new model names on every scrape.
            "/churn": lambda n: vllm_page({f"model-{n}-{i}": (good(), good()) for i in range(1000)}),
            # A malformed wanted line of 3 MB of junk on every other page.
            "/junk": lambda n: vllm_page({"m": (good(), good())})
            + ("" if n % 2 else "vllm:prompt_tokens_total{" + "x" * 3_000_000 + "\n"),
            # NaN in a token counter.
            "/nan": lambda n: vllm_page({"m": (good(), float("nan"))}),
        }

    def dcgm_page(self, n: int) -> str:
        energy_mj = int(POWER_W * 1000 * (time.time() - self.started)) + 1_000_000
        page = render([ExporterGpu(g.index, g.uuid, energy_mj=energy_mj) for g in GPUS], ExporterStyle())
        # A third GPU whose UUID is 10,000 characters long: never a label value.
        page += render([ExporterGpu(2, "GPU-" + "f" * 10_000, energy_mj=energy_mj)], ExporterStyle())
        if n % 4 == 0:
            return page
        bad = HOSTILE_ENERGY[n % 4 - 1]
        pattern = rf'(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION\{{[^}}]*UUID="{GPUS[0].uuid}"[^}}]*\}}) \d+'
        return re.sub(pattern, rf"\1 {bad}", page)

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        for path, page in self.pages().items():
            app.router.add_get(path, self._handler(path, page))
        app.router.add_get("/dcgm", self._handler("/dcgm", self.dcgm_page))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    def _handler(self, path: str, page: Callable[[int], str]) -> Callable[[web.Request], object]:
        async def handle(_: web.Request) -> web.Response:
            return web.Response(text=page(self._hit(path)), content_type="text/plain")

        return handle
