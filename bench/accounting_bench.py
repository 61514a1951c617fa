"""Benchmark: the accounting work of the daemon per scrape and per render, against the number of servers.

    python bench/accounting_bench.py [--servers 50,200,500,1000] [--gpus 8] [--seconds 20]
                                     [--steady-servers 8,200] [--steady-seconds 910]

It drives the real `Daemon`'s accounting callbacks (`_take_energy`, `_take_tokens`, the energy
poller's settle) on a fake clock, without I/O: G GPUs drawing about 300 W each, N single-model
servers scraped once a second at evenly spread instants (server i on GPU i mod G), the energy
poller reading every GPU once a second. The energy reads beside each scrape follow the daemon's
policy: with `pollers.COALESCE_S` (since issue 16) a read before the scrape is skipped when one
was taken within that window and the read after it is shared by every scrape that ends before it;
without it (the code before), every scrape has its own read before and after.

Printed per N: CPU microseconds per scrape (all the accounting work of the run: the reads, queuing
tokens, settling, divided by the scrapes),
the readings each GPU's history holds at the end; and, for the steady-state runs (the windows'
15 minutes of intervals retained), the time of `Accountant.snapshot` (best of 5) at the end.

The same script measures the code before issue 16 (it reads that code's policy from the absence
of `pollers.COALESCE_S`):

    git archive e730f0a | tar -x -C /tmp/before && cp bench/accounting_bench.py /tmp/before/bench/
    python3 /tmp/before/bench/accounting_bench.py
"""

from __future__ import annotations

import argparse
import heapq
import logging
import platform
import sys
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import pollers  # noqa: E402
from exporter.app import Daemon  # noqa: E402
from exporter.config import Config  # noqa: E402
from exporter.values import Gpu, GpuSample, ModelTokens, TokenSample  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

START = 1_700_000_000.0
SCRAPE_S = 0.002
"""Time from a scrape's start to its end (its instant is the midpoint)."""
COALESCE_S: float | None = getattr(pollers, "COALESCE_S", None)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class BenchSource:
    """Stands in for an energy source; the bench feeds readings itself."""

    name = "simulated"
    reads_fresh = True

    async def read(self) -> list[GpuSample]:
        return []

    async def close(self) -> None:
        return None


def make_daemon(servers: int, gpus: int, clock: Clock) -> Daemon:
    config = Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated"},
            "windows": ["1m", "5m", "15m"],
            "servers": [
                {"name": f"s{i:04d}", "url": "http://127.0.0.1:1/metrics", "gpus": [i % gpus]}
                for i in range(servers)
            ],
        }
    )
    return Daemon(config, BenchSource(), clock=clock)  # type: ignore[arg-type]


class Fleet:
    def __init__(self, servers: int, gpus: int) -> None:
        self.gpus = [Gpu(i, f"GPU-{i:08d}", "Bench GPU") for i in range(gpus)]
        self.servers = servers
        self.clock = Clock()
        self.daemon = make_daemon(servers, gpus, self.clock)
        self.last_read = -1.0

    def read(self, t: float) -> None:
        self.clock.now = t
        dt = t - START
        self.daemon._take_energy([GpuSample(g, t, 300.0 * dt + 20.0 * g.index, 300.0) for g in self.gpus])
        self.last_read = t

    def tokens(self, i: int, t: float) -> list[TokenSample]:
        dt = t - START
        return [TokenSample(f"s{i:04d}", t, ModelTokens("m", 200.0 * dt, 50.0 * dt, running=8.0))]

    def run(self, seconds: float) -> tuple[float, int]:
        """Simulate `seconds` more; return (CPU seconds of the whole run, scrapes).

        The CPU time covers everything the accounting does in the run (the periodic reads and
        settles too), divided by the scrapes it is reported per scrape."""
        begin = self.clock.now
        events: list[tuple[float, int, int]] = []  # (instant, kind, server): 0 poll, 1 scrape end, 2 read
        for k in range(int(seconds)):
            heapq.heappush(events, (begin + k + 0.5, 0, -1))
            for i in range(self.servers):
                heapq.heappush(events, (begin + k + i / self.servers + SCRAPE_S, 1, i))
        waiting: list[tuple[int, float]] = []
        scheduled: float | None = None
        scrapes = 0
        c0 = time.process_time()
        while events:
            t, kind, i = heapq.heappop(events)
            if kind == 0:
                self.read(t)
                self.daemon._settle()
                continue
            if kind == 2:
                self.read(t)
                for server, instant in waiting:
                    self.daemon._take_tokens(self.tokens(server, instant))
                waiting, scheduled = [], None
            elif COALESCE_S is None:  # the daemon before issue 16: a read before and after every scrape
                self.read(t - SCRAPE_S)
                self.read(t + 1e-6)
                self.daemon._take_tokens(self.tokens(i, t - SCRAPE_S / 2))
                scrapes += 1
            else:
                if self.last_read < t - SCRAPE_S - COALESCE_S:
                    self.read(t - SCRAPE_S)
                waiting.append((i, t - SCRAPE_S / 2))
                if scheduled is None:
                    scheduled = max(t, self.last_read + COALESCE_S) + 1e-6
                    heapq.heappush(events, (scheduled, 2, -1))
                scrapes += 1
        return time.process_time() - c0, scrapes

    def readings_per_gpu(self) -> int:
        tracks = self.daemon.accountant.tracks.values()
        return max(len(track._t) for track in tracks)  # private: the code before issue 16 has no len()

    def snapshot_s(self) -> float:
        best = float("inf")
        for _ in range(5):
            c0 = time.perf_counter()
            self.daemon.accountant.snapshot(self.clock.now)
            best = min(best, time.perf_counter() - c0)
        return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="50,200,500,1000")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds measured per N")
    parser.add_argument("--steady-servers", default="8,200")
    parser.add_argument("--steady-seconds", type=float, default=910.0)
    args = parser.parse_args()
    policy = "a read before and after every scrape" if COALESCE_S is None else f"coalesced ({COALESCE_S}s)"
    print(f"python {platform.python_version()}, G={args.gpus}, reads beside scrapes: {policy}")
    for n in (int(x) for x in args.servers.split(",") if x):
        fleet = Fleet(n, args.gpus)
        fleet.run(5.0)  # warm-up: placement, first scrapes
        spent, scrapes = fleet.run(args.seconds)
        print(
            f"settle N={n:5d}: {1e6 * spent / scrapes:8.1f} us CPU per scrape over {scrapes} scrapes; "
            f"readings per GPU held: {fleet.readings_per_gpu()}"
        )
    for n in (int(x) for x in args.steady_servers.split(",") if x):
        fleet = Fleet(n, args.gpus)
        spent, scrapes = fleet.run(args.steady_seconds)
        print(
            f"steady N={n:5d} after {args.steady_seconds:.0f}s: snapshot {1e3 * fleet.snapshot_s():8.2f} ms; "
            f"{1e6 * spent / scrapes:.1f} us CPU per scrape; "
            f"readings per GPU held: {fleet.readings_per_gpu()}"
        )


if __name__ == "__main__":
    main()
