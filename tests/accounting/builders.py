"""Small builders for hand-computed accounting traces."""

from __future__ import annotations

from exporter.accounting.book import Accountant
from exporter.placement import Holding, Placement
from exporter.values import Gpu, GpuSample, ModelTokens, TokenSample

GPU0 = Gpu(0, "GPU-00000000-0000-0000-0000-000000000000", "Test GPU")
GPU1 = Gpu(1, "GPU-11111111-1111-1111-1111-111111111111", "Test GPU")


def energy(acc: Accountant, t: float, joules: float, gpu: Gpu = GPU0) -> None:
    acc.add_energy([GpuSample(gpu, t, joules, None)])


def scrape(
    acc: Accountant,
    server: str,
    t: float,
    input_tokens: float,
    output_tokens: float,
    *,
    running: float | None = None,
    cached: float | None = None,
    model: str | None = "m",
) -> None:
    tokens = ModelTokens(model, input_tokens, output_tokens, running=running, cached_input_tokens=cached)
    acc.add_tokens([TokenSample(server, t, tokens)])


def place(acc: Accountant, **servers: list[Gpu]) -> None:
    acc.set_placement(Placement({s: frozenset(Holding(g.uuid) for g in gpus) for s, gpus in servers.items()}))
