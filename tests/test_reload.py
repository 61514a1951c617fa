"""Config reload and signals, against the real `tokenwatt run` process.

SIGHUP and `POST /-/reload` (only with --web.enable-lifecycle) re-read the config; servers added or
removed start or stop while the others keep their cadence and counters; a bad file keeps the
running config and says so; SIGUSR1 is ignored; SIGTERM ends the process with 0 within 2 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.faults.parts import FaultyTarget
from tests.faults.rig import value
from tests.helpers import samples

INTERVAL_S = 0.2


def write_config(path: Path, port: int, servers: dict[str, str]) -> None:
    lines = [f"listen: 127.0.0.1:{port}", "energy: {source: simulated, interval: 200ms}", "servers:"]
    lines += [f"  - {{name: {n}, url: '{u}', kind: vllm, interval: 200ms}}" for n, u in servers.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def targets() -> AsyncIterator[list[FaultyTarget]]:
    servers = [FaultyTarget(model=f"m{i}") for i in range(3)]
    for t in servers:
        await t.start()
    yield servers
    for t in servers:
        await t.stop()


class Process:
    def __init__(self, config: Path, port: int, log: Path, *flags: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "run", "--config", str(config), *flags],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.base + path) as r:
            return r.status, await r.text()

    async def post(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.post(self.base + path) as r:
            return r.status, await r.text()

    async def until(self, what: str, check: object, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                if await check():  # type: ignore[operator]
                    return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"not within {timeout_s}s: {what}\n{self.log.read_text()[-3000:]}")

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def terminate_within(self, seconds: float) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        return code, time.monotonic() - started


async def test_sighup_adds_and_removes_servers_without_disturbing_the_others(
    tmp_path: Path, targets: list[FaultyTarget]
) -> None:
    a, b, c = targets
    port = free_port()
    config = tmp_path / "tokenwatt.yml"
    write_config(config, port, {"a": a.url, "b": b.url})
    daemon = Process(config, port, tmp_path / "log.jsonl")
    try:
        await daemon.until("ready", lambda: _ready(daemon))
        await asyncio.sleep(1.0)
        before = samples((await daemon.get("/metrics"))[1])
        since = time.monotonic()
        write_config(config, port, {"b": b.url, "c": c.url})
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.until("c scraped", lambda: _up(daemon, "c"))
        await asyncio.sleep(1.0)
        after = samples((await daemon.get("/metrics"))[1])
        b_cadence = b.cadence_s(since, time.monotonic())
        a_after = [t for t in a.requests if t > since + 0.5]

        config.write_text("servers: [{name: broken}]\n")  # no url: invalid
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.until("reload failure shown", lambda: _reload_ok(daemon, 0.0))
        status, body = await daemon.post("/-/reload")
        daemon.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.5)
        still = samples((await daemon.get("/metrics"))[1])
        assert daemon.proc.poll() is None  # SIGUSR1 did not end it
        code, took = daemon.terminate_within(2.0)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert value(after, "tokenwatt_target_up", server="c") == 1.0
    assert value(after, "tokenwatt_target_up", server="a") is None  # removed: its series are gone
    assert not a_after  # and nobody scrapes it any more
    assert b_cadence == pytest.approx(INTERVAL_S, rel=0.10)
    tokens = ("tokenwatt_server_tokens_total", {"server": "b", "model": "m1", "token_type": "output"})
    assert (value(after, tokens[0], **tokens[1]) or 0) >= (value(before, tokens[0], **tokens[1]) or 0) > 0
    assert value(after, "tokenwatt_config_last_reload_successful") == 1.0
    assert value(still, "tokenwatt_config_last_reload_successful") == 0.0
    assert value(still, "tokenwatt_target_up", server="b") == 1.0  # the running config was kept
    assert status == 403 and "--web.enable-lifecycle" in body
    events = daemon.events()
    names = [e["event"] for e in events]
    assert "server removed" in names and "server added" in names and "SIGUSR1 ignored" in names
    failed = next(e for e in events if e["event"] == "config reload failed: keeping the running config")
    assert "servers[0].url: required, but missing" in str(failed["error"])
    assert code == 0 and took < 2.0
    print(f"SIGTERM: exit {code} after {took:.2f}s; b's cadence across the reload {b_cadence:.3f}s")


async def test_post_reload_when_enabled(tmp_path: Path, targets: list[FaultyTarget]) -> None:
    a, b, _ = targets
    port = free_port()
    config = tmp_path / "tokenwatt.yml"
    write_config(config, port, {"a": a.url})
    daemon = Process(config, port, tmp_path / "log.jsonl", "--web.enable-lifecycle")
    try:
        await daemon.until("ready", lambda: _ready(daemon))
        assert (await daemon.get("/-/reload"))[0] == 405  # POST only, as in Prometheus
        write_config(config, port, {"a": a.url, "b": b.url})
        status, body = await daemon.post("/-/reload")
        await daemon.until("b scraped", lambda: _up(daemon, "b"))
        config.write_text("energy: {interval: fast}\n")
        bad_status, bad_body = await daemon.post("/-/reload")
        code, _ = daemon.terminate_within(2.0)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert (status, body) == (200, "reloaded\n")
    assert bad_status == 500 and "energy.interval" in bad_body and "the running config is kept" in bad_body
    assert code == 0


async def _ready(daemon: Process) -> bool:
    return (await daemon.get("/readyz"))[0] == 200


async def _up(daemon: Process, server: str) -> bool:
    return value(samples((await daemon.get("/metrics"))[1]), "tokenwatt_target_up", server=server) == 1.0


async def _reload_ok(daemon: Process, expected: float) -> bool:
    found = samples((await daemon.get("/metrics"))[1])
    return value(found, "tokenwatt_config_last_reload_successful") == expected
