"""Helpers shared by the tests: a page of metrics as a dict, the command line in a subprocess, promtool's
verdict on a page."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool

REPO = Path(__file__).parents[1]

Labels = tuple[tuple[str, str], ...]
"""A sample's labels, sorted by name: one key per series whatever the order on the page."""
Series = tuple[str, Labels]
Samples = dict[Series, float]


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


def samples(text: str) -> Samples:
    """Every sample of an exposition page (text format) by its name and labels."""
    return {
        series(s.name, **s.labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; a KeyError names it when the page lacks it."""
    return found[series(name, **labels)]


def series_of(found: Samples, name: str, **labels: str) -> dict[Labels, float]:
    """The samples of `name` whose labels include `labels`, by their labels."""
    want = set(labels.items())
    return {ls: v for (n, ls), v in found.items() if n == name and want <= set(ls)}


def one(found: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    matches = series_of(found, name, **labels)
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} series: {sorted(matches)}"
    return next(iter(matches.values()))


def run_cli(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`tokenwatt ARGS…` from this tree, as a user runs it: its exit code and its output as text.

    `env` adds to the environment; `options` go to `subprocess.run`.
    """
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
        **options,
    )


async def get_text(url: str) -> str:
    """The body of a GET that must answer 200."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, f"{url}: {resp.status}"
        return await resp.text()


async def scrape(url: str) -> Samples:
    """Every sample of the page at `url`."""
    return samples(await get_text(url))


async def scrape_until(
    url: str, done: Callable[[Samples], bool], failure: str, limit_s: float = 10.0, every_s: float = 0.05
) -> Samples:
    """Scrape `url` every `every_s` until `done` holds (a liveness bound, not a speed requirement)."""
    deadline = time.monotonic() + limit_s
    while not done(found := await scrape(url)):
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(every_s)
    return found


def assert_promtool_accepts(text: str) -> None:
    """`promtool check metrics` passes the page with no finding at all (a test that calls this is
    marked `tools`)."""
    check = subprocess.run(
        [require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0 and check.stdout + check.stderr == "", check.stdout + check.stderr
