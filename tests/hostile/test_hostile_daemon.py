"""The daemon against hostile sources and clients, end to end.

`tokenwatt run` (a real process) reads energy from a dcgm-exporter page that carries NaN, +Inf and
negative readings, and scrapes servers whose pages alternate real and negative counters, jump to
1.7e308, creep by a millionth of a token, churn 1,000 model names a scrape, carry 3 MB of junk, or
a NaN; one target URL carries credentials. Meanwhile clients send malformed requests. Throughout,
every exported value stays finite, every counter monotone, the healthy server keeps being scraped,
memory and log volume stay bounded, and no log line is anything but one JSON object.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import Series, samples, value
from tests.hostile.hostile_server import HostileServer

RUN_S = 14.0
RSS_GROWTH_LIMIT_MB = 40.0
"""RSS may grow this much from the first to the last poll under 1,000 new models a scrape."""
LOG_LIMIT_BYTES = 100_000
SERVERS = ("good", "alternating", "huge", "creep", "churn", "junk", "nan")

@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path
    base: str


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    hostile = HostileServer()
    runner, port = await hostile.start()
    base = f"http://127.0.0.1:{port}"
    servers = "".join(
        f"  - {{name: {name}, kind: vllm, interval: 200ms, url: '{_url(base, name)}'}}\n" for name in SERVERS
    )
    config = tmp_path / "tokenwatt.yml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "logging: {format: json}\n"
        "windows: [1m]\n"
        f"energy: {{source: dcgm_exporter, interval: 200ms, dcgm_exporter: {{url: '{base}/dcgm', "
        "collect_interval: 1s}}\n"
        f"servers:\n{servers}"
    )
    log = tmp_path / "stdout.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "run", "--config", str(config)], stdout=out, stderr=out
        )
    try:
        url = await _listening(log, process)
        yield Daemon(process, log, url.removesuffix("/metrics"))
    finally:
        process.terminate()
        process.wait(timeout=10)
        await runner.cleanup()


def _url(base: str, name: str) -> str:
    if name == "junk":  # credentials in a target URL: never to be logged
        return base.replace("http://", "http://user:secret@") + "/junk"
    return f"{base}/{name}"


async def _listening(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"listening"' in line:
                event = json.loads(line)
                url: str = event["url"]
                # The line tells the address actually bound (port 0 asked, the real port shown).
                assert event["addresses"] == [url.removeprefix("http://").removesuffix("/metrics")], event
                return url
        assert process.poll() is None, log.read_text()
        await asyncio.sleep(0.1)
    raise AssertionError("the daemon did not log its address: " + log.read_text()[:2000])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _malformed_requests(base: str) -> int:
    """Send malformed and oversized requests; return how many were sent."""
    host, port = base.removeprefix("http://").split(":")
    requests = [
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for request in requests * 3:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout=15)
        writer.close()
    return len(requests) * 3


@pytest.mark.slow  # RUN_S of hostile sources and clients
async def test_hostile_sources_and_clients_poison_nothing(daemon: Daemon) -> None:
    pid = daemon.process.pid
    polls: list[dict[Series, float]] = []
    rss: list[float] = []
    sent = 0
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        while time.monotonic() - started < RUN_S:
            async with session.get(daemon.base + "/metrics") as resp:
                assert resp.status == 200
                polls.append(samples(await resp.text()))
            rss.append(_rss_mb(pid))
            if not sent and time.monotonic() - started > RUN_S / 2:
                sent = await _malformed_requests(daemon.base)
            await asyncio.sleep(0.5)
    assert daemon.process.poll() is None, "the daemon died"

    # Finite everywhere, counters monotone from poll to poll.
    for before, after in itertools.pairwise(polls):
        for (name, labels), v in after.items():
            assert math.isfinite(v), (name, labels, v)
            if name.endswith("_total") and (name, labels) in before:
                assert v >= before[(name, labels)], (name, labels, before[(name, labels)], v)
    last = polls[-1]

    # Health and reasons.
    assert value(last, "tokenwatt_energy_source_up", source="dcgm_exporter") == 1.0
    rejected = {
        dict(labels)["reason"] for name, labels in last if name == "tokenwatt_energy_rejected_readings_total"
    }
    assert {"non_finite", "negative", "label_too_long"} <= rejected
    assert all(len(v) <= 128 for _, labels in last for _, v in labels), "a label value over the cap"
    for server in ("good", "alternating", "huge", "creep", "churn"):
        assert value(last, "tokenwatt_target_up", server=server) == 1.0, server
    assert value(last, "tokenwatt_target_up", server="nan") == 0.0
    assert value(last, "tokenwatt_target_scrape_errors_total", server="nan", reason="non_finite") > 0
    assert value(last, "tokenwatt_target_scrape_errors_total", server="junk", reason="parse") > 0
    rejected_scrapes = "tokenwatt_target_rejected_scrapes_total"
    assert value(last, rejected_scrapes, server="alternating", reason="negative") > 0
    assert value(last, rejected_scrapes, server="huge", reason="too_large") > 0
    last_success = [
        value(p, "tokenwatt_target_last_success_timestamp_seconds", server="good")
        for p in (polls[len(polls) // 2], last)
    ]
    assert last_success[1] > last_success[0], "the healthy server was not scraped during the bad requests"

    # No ratio from counters creeping by a millionth of a token.
    assert not [k for k in last if k[0] == "tokenwatt_joules_per_token" and ("server", "creep") in k[1]]

    # Cardinality: the churning server keeps at most its cap of models; the rest is counted.
    churn_models = {
        dict(labels)["model"]
        for name, labels in last
        if name == "tokenwatt_server_tokens_total" and ("server", "churn") in labels
    }
    assert len(churn_models) <= 64
    assert value(last, "tokenwatt_server_dropped_models_total", server="churn") > 1000

    # Memory and log volume.
    growth = max(rss) - rss[0]
    print(f"RSS {rss[0]:.1f} -> max {max(rss):.1f} MB over {len(rss)} polls; /metrics {len(last)} series")
    assert growth < RSS_GROWTH_LIMIT_MB, rss
    log = daemon.log.read_bytes()
    lines = log.decode().splitlines()
    print(f"log: {len(log)} bytes, {len(lines)} lines, {sent} malformed requests")
    assert len(log) < LOG_LIMIT_BYTES
    assert b"secret" not in log
    assert b"Traceback" not in log
    for line in lines:
        event = json.loads(line)  # every line one JSON object
        assert len(line) < 2000, line[:300]
        assert isinstance(event, dict)
    assert os.path.exists(f"/proc/{pid}")
