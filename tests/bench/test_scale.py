"""The scale benchmark's harness (bench/scale.py, bench/fleet.py): it measures what it says it does.

No figure is asserted: only that the fleet serves the real page with moving counters, tells its
clients apart and judges scrapes on time as documented, and that one short run at N=2 yields a
complete result for both tokenwatt and Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.fleet import Arrivals
from bench.scale import ROOT, Fleet, Snapshot, scraper_figures
from exporter.tokens.profiles import VLLM
from exporter.tokens.scraper import read_page
from tests.conftest import require_tool


def test_a_scrape_is_on_time_within_ten_percent_of_the_interval() -> None:
    arrivals = Arrivals(targets=2, interval_s=1.0)
    for t in (10.0, 11.0, 12.09, 13.3, 14.1, 14.95):
        arrivals.arrived(1, t)
    arrivals.arrived(0, 50.0)
    assert arrivals.scrapes == [1, 6]
    assert arrivals.gaps == [0, 5]  # a target's first scrape has no gap
    assert arrivals.on_time == [0, 2]  # gaps 1.0 and 1.09; not 1.21, 0.8 or 0.85
    assert [(target, round(gap, 2)) for target, _, gap in arrivals.misses] == [(1, 1.21), (1, 0.8), (1, 0.85)]


async def test_the_fleet_serves_the_real_page_with_advancing_counters_and_counts_each_client() -> None:
    fleet = Fleet(targets=3, interval_s=1.0)
    try:
        async with aiohttp.ClientSession() as session:
            url = fleet.urls()[2]
            first = await (await session.get(url)).text()
            await asyncio.sleep(0.3)
            second = await (await session.get(url)).text()
            await session.get(url, headers={"User-Agent": "Prometheus/2.42.0"})
            stats = await fleet.stats(session)
    finally:
        fleet.stop()
    real = (ROOT / "tests" / "fixtures" / "vllm-0.32.0-cpu.metrics.txt").read_text()
    assert len(first.splitlines()) == len(real.splitlines())
    before, after = read_page(first, VLLM).models, read_page(second, VLLM).models
    assert after[0].input_tokens > before[0].input_tokens
    assert after[0].output_tokens > before[0].output_tokens
    clients = stats["clients"]
    assert clients["tokenwatt"]["scrapes"] == [0, 0, 2]  # aiohttp's User-Agent, as tokenwatt sends
    assert clients["prometheus"]["scrapes"] == [0, 0, 1]


@pytest.mark.tools  # prometheus
def test_one_short_run_measures_tokenwatt_and_prometheus_side_by_side(tmp_path: Path) -> None:
    require_tool("prometheus")
    out = tmp_path / "scale.json"
    argv = [
        sys.executable, "bench/scale.py", "--targets", "2", "--warmup", "1", "--duration", "3",
        "--reads", "3", "--readers", "2", "--reads-per-reader", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| 2 | tokenwatt |" in done.stdout and "| 2 | prometheus |" in done.stdout
    (step,) = json.loads(out.read_text())["steps"]
    assert step["targets"] == 2 and step["targets_up"] == 2
    assert step["series"] > 0 and step["page_bytes"] > 0
    assert step["sequential"]["count"] == 3 and step["concurrent"]["count"] == 4
    for who in ("tokenwatt", "prometheus"):
        figures = step[who]
        assert figures["scrapes"] > 0, who
        assert figures["cpu_s"] >= 0 and figures["rss_mib"] > 0, who
    tw, prom = step["tokenwatt"], step["prometheus"]
    assert step["rss_ratio"] == pytest.approx(tw["rss_mib"] / prom["rss_mib"])
    # CPU time comes in 10 ms clock ticks: in 3 s Prometheus may have used none.
    if prom["cpu_s"] > 0:
        assert step["cpu_ratio"] == pytest.approx(tw["cpu_ms_per_scrape"] / prom["cpu_ms_per_scrape"])
    else:
        assert step["cpu_ratio"] is None
    assert step["timeline"], "the measured span was sampled"


@pytest.mark.parametrize("bad", ["50,x", "0"])
def test_bad_target_lists_are_usage_errors(bad: str) -> None:
    done = subprocess.run(
        [sys.executable, "bench/scale.py", "--targets", bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--targets" in done.stderr


def test_misses_count_only_the_span_and_shared_ones_coincide_with_the_other_process() -> None:
    def stats(misses: dict[str, list[list[float]]], scrapes: int) -> dict[str, Any]:
        return {
            name: {
                "scrapes": [scrapes, scrapes],
                "gaps": [scrapes, scrapes],
                "on_time": [scrapes, 0],
                "misses": m,
            }
            for name, m in misses.items()
        }

    before = Snapshot(
        0.0, 100.0, stats({"tokenwatt": [], "prometheus": []}, 0), {"tokenwatt": 0.0}, {"tokenwatt": 0.0}
    )
    misses = {
        "tokenwatt": [[0, 99.0, 2.0], [1, 101.0, 1.5], [1, 105.0, 1.3]],  # the first is before the span
        "prometheus": [[0, 101.2, 0.8]],
    }
    after = Snapshot(10.0, 110.0, stats(misses, 10), {"tokenwatt": 0.5}, {"tokenwatt": 0.1})
    figures = scraper_figures("tokenwatt", before, after, os.getpid(), 0.0, targets=2)
    assert figures.missed_targets == 1 and figures.shared_misses == 1
    assert figures.misses == [(1, 1.0, 1.5), (1, 5.0, 1.3)]
    assert figures.scrapes == 20 and figures.on_time_share == 0.5
    assert figures.cpu_ms_per_scrape == 25.0 and figures.waited_share == 0.01
