"""Benchmark: the targeted token parser against prometheus_client's full parser, in the same run.

    python bench/parser_bench.py [--repeat N]

Pages: the real vLLM 0.32 page in tests/fixtures, and a synthetic page of about 5 MB built from it
(many models, each with vLLM's histograms and counters, two data-parallel engines each). For each
page it times, best of several rounds:

- `prometheus_client.parser.text_string_to_metric_families` reading the whole page (what a
  general-purpose scraper does);
- `read_page(text, VLLM)`: the targeted parser plus the vLLM profile, as every scrape after the
  first runs;
- `read_page(text, None)`: the same with detection, as the first scrape runs.

Then it measures the CPU time per scrape of the daemon's whole scrape path (`TokenScraper.scrape`:
HTTP GET over loopback, parse, profile) against a server in a child process, so that only the
scraper's own CPU is counted. Results go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.tokens.profiles import VLLM  # noqa: E402
from exporter.tokens.scraper import TokenScraper, read_page  # noqa: E402

REAL_PAGE = ROOT / "tests" / "fixtures" / "vllm-0.32.0-cpu.metrics.txt"
TARGET_BYTES = 5 * 1024 * 1024


def synthetic_page(real: str, target_bytes: int = TARGET_BYTES) -> tuple[str, int]:
    """The real page's process families once, then its vllm: families for as many models as fit."""
    lines = real.splitlines()
    shared = [line for line in lines if "vllm:" not in line]
    per_model = [line for line in lines if "vllm:" in line]
    out = list(shared)
    size, models = sum(len(line) + 1 for line in out), 0
    while size < target_bytes:
        for engine in ("0", "1"):
            for line in per_model:
                if line.startswith("#"):
                    if engine == "0" and models == 0:
                        out.append(line)
                    continue
                row = line.replace('model_name="tiny"', f'model_name="org/model-{models:04d}"')
                row = row.replace('engine="0"', f'engine="{engine}"')
                out.append(row)
                size += len(row) + 1
        models += 1
    # Families must stay contiguous for a valid page: group the sample lines under their TYPE line.
    return _regroup(out), models


def _regroup(lines: list[str]) -> str:
    order: list[str] = []
    by_family: dict[str, list[str]] = {}
    family = ""
    for line in lines:
        if line.startswith("# HELP "):
            family = line.split()[2]
            order.append(family)
            by_family[family] = [line]
        elif line.startswith("# TYPE "):
            by_family[family].append(line)
        else:
            by_family[_family_of(line, by_family)].append(line)
    return "\n".join(line for f in order for line in by_family[f]) + "\n"


def _family_of(line: str, families: dict[str, list[str]]) -> str:
    name = line.split("{", 1)[0].split(" ", 1)[0]
    for suffix in ("", "_total", "_bucket", "_sum", "_count", "_created"):
        if suffix and name.endswith(suffix) and name[: -len(suffix)] in families:
            return name[: -len(suffix)]
        if not suffix and name in families:
            return name
    raise ValueError(f"no family for {name}")


def best_of(fn: Callable[[], object], rounds: int, min_time: float = 0.2) -> float:
    """Seconds per call, best of `rounds` rounds of enough calls to last `min_time`."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start >= min_time / 4 or calls >= 1 << 16:
            break
        calls *= 2
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _serve(page: bytes, port_out: multiprocessing.connection.Connection) -> None:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=page, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def scrape_cpu_ms(page: str, scrapes: int) -> float:
    """CPU milliseconds of this process per `TokenScraper.scrape` of `page` served by a child process."""
    receive, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(target=_serve, args=(page.encode(), send), daemon=True)
    server.start()
    port = receive.recv()

    async def run() -> float:
        async with aiohttp.ClientSession() as session:
            scraper = TokenScraper(
                "bench", f"http://127.0.0.1:{port}/metrics", None, session, 30.0, 64 << 20
            )
            await scraper.scrape()  # detection and connection set-up, not counted
            start = time.process_time()
            for _ in range(scrapes):
                await scraper.scrape()
            return (time.process_time() - start) / scrapes * 1000

    try:
        return asyncio.run(run())
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per measurement (best is kept)")
    args = parser.parse_args()

    real = REAL_PAGE.read_text()
    synthetic, models = synthetic_page(real)
    pages = [
        (f"real vLLM 0.32 page ({len(real) / 1024:.0f} KiB, {real.count(chr(10))} lines)", real, 200),
        (
            f"synthetic page ({len(synthetic) / 2**20:.1f} MiB, {synthetic.count(chr(10))} lines, "
            f"{models} models x 2 engines)",
            synthetic,
            10,
        ),
    ]
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu'}")
    for title, text, scrapes in pages:
        assert read_page(text, VLLM).models, "the page must read"
        full = best_of(lambda text=text: list(text_string_to_metric_families(text)), args.repeat)  # type: ignore[misc]
        steady = best_of(lambda text=text: read_page(text, VLLM), args.repeat)  # type: ignore[misc]
        first = best_of(lambda text=text: read_page(text, None), args.repeat)  # type: ignore[misc]
        cpu = scrape_cpu_ms(text, scrapes)
        print(f"\n{title}")
        print(f"  prometheus_client full parse   {full * 1000:9.2f} ms")
        print(f"  read_page(kind=vllm)           {steady * 1000:9.2f} ms   {full / steady:6.1f}x faster")
        print(f"  read_page(kind=auto)           {first * 1000:9.2f} ms   {full / first:6.1f}x faster")
        print(f"  CPU per scrape (HTTP + parse)  {cpu:9.2f} ms")


if __name__ == "__main__":
    main()
