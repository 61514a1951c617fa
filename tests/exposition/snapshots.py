"""A steady-state snapshot of any size, for the exposition tests and `bench/render_bench.py`.

Shaped like a running daemon's: every server serves one model with requests and running counts,
three windows (1m, 5m, 15m), five load bands each with their windows, an energy split, pricing and
carbon configured, and its health (up, scrape and energy read durations, one error reason); the
GPUs are shared by the servers placed on them.
"""

from __future__ import annotations

from exporter.accounting.figures import (
    BandFigures,
    GpuFigures,
    ModelFigures,
    ServerFigures,
    ServerWindow,
    Snapshot,
    WindowFigures,
)
from exporter.accounting.split import EnergySplit
from exporter.accounting.tariff import Tariff
from exporter.exposition.collector import Health, SourceHealth, TargetHealth
from exporter.placement import Share
from exporter.values import Gpu, PodLabels

WINDOWS_S = (60.0, 300.0, 900.0)
BANDS = ("1-4", "5-16", "17-64", "65-256", "257+")


def steady_snapshot(
    servers: int, gpus: int = 8, pods: tuple[tuple[str, PodLabels], ...] = ()
) -> tuple[Snapshot, Health]:
    """`servers` single-model servers (`server-0000`, …) spread over `gpus` GPUs."""
    devices = [
        Gpu(i, f"GPU-{i:08x}-0000-0000-0000-000000000000", "NVIDIA H100 80GB HBM3") for i in range(gpus)
    ]
    names = [f"server-{i:04d}" for i in range(servers)]
    on_gpu = {i: [n for j, n in enumerate(names) if j % gpus == i] for i in range(gpus)}
    gpu_figures = tuple(
        GpuFigures(
            g, 1.0e7 + g.index, 350.5, 1.7e9 + 0.25, 1.7e9, 9.9e6, 9.8e6, 1.0e5,
            tuple(Share(n, 1.0 / len(on_gpu[g.index]), "equal") for n in on_gpu[g.index]),
        )
        for g in devices
    )  # fmt: skip

    def windows(scale: float) -> tuple[WindowFigures, ...]:
        return tuple(WindowFigures(w, scale * w * 3.1, w * 41.0, w * 9.5, scale * w * 0.4) for w in WINDOWS_S)

    server_figures = tuple(
        ServerFigures(
            name, 12345.6, 321.5, 1.25,
            (
                ModelFigures(
                    f"org/model-{i % 7}", 4.5e6 + i, 9.1e7, 2.2e7, 1.2e5, 17.0, windows(1.0), 2.5e5,
                    9.0e7, 2.1e7, 3.0e7,
                    tuple(BandFigures(b, 9.0e5, 1.8e7, 4.4e6, windows(0.2)) for b in BANDS),
                ),
            ),
            4.5e6, 1.7e9 - 900.0, 1.7e9,
            tuple(ServerWindow(w, w * 310.0, w, w * 40.0, w * 0.1) for w in WINDOWS_S),
            EnergySplit(0.012, 0.31, 95.5, 0.93, 540),
        )
        for i, name in enumerate(names)
    )  # fmt: skip
    snap = Snapshot(
        gpus=gpu_figures,
        servers=server_figures,
        tariff=Tariff(pue=1.3, price_per_kwh=0.12, currency="USD", grams_per_kwh=380.0),
        band_labels=BANDS,
    )
    health = Health(
        "0.0.0-test",
        SourceHealth("nvml", True, 0.0021, (("timeout", 2),)),
        tuple(
            TargetHealth(n, True, 0.0042, 1.7e9, (("timeout", 1),), (devices[i % gpus],), 0.0013)
            for i, n in enumerate(names)
        ),
        pods=pods,
    )
    return snap, health
