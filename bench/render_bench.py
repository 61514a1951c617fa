"""Benchmark: rendering `/metrics` from one snapshot, at 8 servers x 8 GPUs and at 100 and 700 servers.

    python bench/render_bench.py [--repeat N] [--profile SERVERS]

The snapshot is `tests/exposition/snapshots.py`'s steady state (one model per server, three
windows, five load bands, an energy split, pricing and carbon, 8 GPUs). For each size it times, in
the same run, the work `/metrics` does off the event loop:

- `prometheus_client`: the same families built as prometheus_client metric objects and rendered by
  `generate_latest` (how tokenwatt rendered before its own text writer);
- `writer`: tokenwatt's `PageWriter` in its steady state (the series' text kept from the previous
  render, as a running daemon's is), at each `exposition.derived` level;
- `writer, cold`: the first render of a fresh writer (every series' text built).

It prints the page size, series and p50/p99 per render. `--profile N` prints cProfile's top
functions of one steady-state render at N servers instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.exposition.collector import families  # noqa: E402
from exporter.exposition.render import PageWriter  # noqa: E402
from exporter.values import Derived  # noqa: E402
from tests.exposition.reference import prometheus_client_text  # noqa: E402
from tests.exposition.snapshots import steady_snapshot  # noqa: E402

SIZES = (8, 100, 700)


def timed(render: Callable[[], bytes], repeat: int) -> tuple[list[float], bytes]:
    times, body = [], b""
    for _ in range(repeat):
        start = time.perf_counter()
        body = render()
        times.append(time.perf_counter() - start)
    return times, body


def row(servers: int, how: str, times: list[float], body: bytes) -> str:
    series = body.count(b"\n") - body.count(b"\n#") - (1 if body.startswith(b"#") else 0)
    p50 = statistics.median(times) * 1000
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98] * 1000 if len(times) > 1 else p50
    return f"{servers:>8} {how:<28} {len(body):>10} {series:>8} {p50:>9.2f} {p99:>9.2f} {len(times):>6}"


def report(servers: int, repeat: int) -> None:
    """One row per way of rendering the steady-state page of `servers` servers."""
    snap, health = steady_snapshot(servers)

    def with_writer(writer: PageWriter, derived: Derived) -> Callable[[], bytes]:
        return lambda: writer.write(families(snap, health, derived), {})

    reference = timed(lambda: prometheus_client_text(families(snap, health, Derived.ALL), {}), repeat)
    print(row(servers, "prometheus_client", *reference))
    for derived in Derived:
        render = with_writer(PageWriter(), derived)
        render()  # the steady state: every series' text kept from the previous render
        print(row(servers, f"writer, derived: {derived}", *timed(render, repeat)))
    cold = timed(lambda: with_writer(PageWriter(), Derived.ALL)(), repeat)
    print(row(servers, "writer, cold, derived: all", *cold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="renders at 8 servers (fewer when larger)")
    parser.add_argument("--profile", type=int, metavar="SERVERS", help="profile one render at SERVERS")
    args = parser.parse_args()
    if args.profile:
        snap, health = steady_snapshot(args.profile)
        writer = PageWriter()
        writer.write(families(snap, health, Derived.ALL), {})
        profiler = cProfile.Profile()
        profiler.runcall(writer.write, families(snap, health, Derived.ALL), {})
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    print(f"python {sys.version.split()[0]}; one render of a steady-state snapshot, 8 GPUs, times in ms")
    print(f"{'servers':>8} {'how':<28} {'bytes':>10} {'series':>8} {'p50':>9} {'p99':>9} {'runs':>6}")
    for servers in SIZES:
        report(servers, max(5, args.repeat * 8 // servers))


if __name__ == "__main__":
    main()
