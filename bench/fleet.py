"""A fleet of fake vLLM servers in one process, for the scale benchmark (bench/scale.py).

    python bench/fleet.py --targets N [--interval 1]

Listens on N loopback ports; each serves the real vLLM 0.32 page from tests/fixtures at /metrics,
with its token and request counters advancing with time, over HTTP/1.1 with keep-alive. The server
is a bare asyncio protocol, not a web framework, so that the fleet costs little of the CPU the
benchmark measures in the processes that scrape it.

Every scrape's arrival is logged per client and per target: the gap to the same client's previous
scrape of that target is on time when it is within 10 % of the interval. Clients are told apart by
their User-Agent (`Prometheus/...`; tokenwatt scrapes with aiohttp's default). `GET /stats` on the
control port returns the counts so far as JSON; the first line on stdout is
`{"ports": [...], "control": PORT}` once every port listens.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import resource
import signal
import time
from collections import deque
from pathlib import Path

REAL_PAGE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vllm-0.32.0-cpu.metrics.txt"
ON_TIME_TOLERANCE = 0.10
"""A scrape is on time when its gap to the previous one is within this share of the interval."""
MAX_MISSES = 20_000
"""Off-time scrapes kept per client (target, arrival, gap), newest last."""
MAX_HEAD_BYTES = 16 * 1024
PAGE_REFRESH_S = 0.1
RATES = {
    "vllm:num_requests_running{": 0.0,  # a gauge: set from a sine below
    "vllm:prompt_tokens_total{": 2000.0,
    "vllm:prompt_tokens_cached_total{": 500.0,
    "vllm:generation_tokens_total{": 400.0,
    'vllm:request_success_total{engine="0",finished_reason="stop"': 5.0,
}
"""Sample lines that advance, by prefix, with their rate per second."""


class Page:
    """The real page with its counters at the current instant, rebuilt at most every 100 ms."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._moving = [
            (i, prefix, line.rpartition(" ")[0], float(line.rpartition(" ")[2]))
            for i, line in enumerate(self._lines)
            for prefix in RATES
            if line.startswith(prefix)
        ]
        if len(self._moving) != len(RATES):
            raise SystemExit(f"{REAL_PAGE}: expected one sample line for each of {sorted(RATES)}")
        self._start = time.monotonic()
        self._built = -math.inf
        self._response = b""

    def response(self, now: float) -> bytes:
        if now - self._built >= PAGE_REFRESH_S:
            elapsed = now - self._start
            for i, prefix, series, base in self._moving:
                value = (
                    8 + 4 * math.sin(elapsed / 30) if RATES[prefix] == 0 else base + RATES[prefix] * elapsed
                )
                self._lines[i] = f"{series} {math.floor(value)}.0"
            body = ("\n".join(self._lines) + "\n").encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self._response = head.encode() + body
            self._built = now
        return self._response


class Arrivals:
    """One client's scrapes of every target: counts, gaps, gaps on time, and the off-time ones."""

    def __init__(self, targets: int, interval_s: float) -> None:
        self.interval_s = interval_s
        self.scrapes = [0] * targets
        self.gaps = [0] * targets
        self.on_time = [0] * targets
        self.last = [math.nan] * targets
        self.misses: deque[tuple[int, float, float]] = deque(maxlen=MAX_MISSES)

    def arrived(self, target: int, now: float) -> None:
        self.scrapes[target] += 1
        previous = self.last[target]
        self.last[target] = now
        if previous != previous:  # NaN: the first scrape has no gap
            return
        gap = now - previous
        self.gaps[target] += 1
        if abs(gap - self.interval_s) <= ON_TIME_TOLERANCE * self.interval_s:
            self.on_time[target] += 1
        else:
            self.misses.append((target, now, gap))

    def as_json(self) -> dict[str, object]:
        return {
            "scrapes": self.scrapes,
            "gaps": self.gaps,
            "on_time": self.on_time,
            "misses": list(self.misses),
        }


class Fleet:
    def __init__(self, targets: int, interval_s: float, page: Page) -> None:
        self.page = page
        self.targets = targets
        self.interval_s = interval_s
        self.clients: dict[str, Arrivals] = {}

    def client(self, head: bytes) -> Arrivals:
        lowered = head.lower()
        name = (
            "prometheus"
            if b"user-agent: prometheus/" in lowered
            else ("tokenwatt" if b"aiohttp" in lowered else "other")
        )
        if name not in self.clients:
            self.clients[name] = Arrivals(self.targets, self.interval_s)
        return self.clients[name]

    def answer(self, target: int, head: bytes) -> bytes:
        now = time.monotonic()
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if target < 0:
            if path != b"/stats":
                return _plain(404, b"not found\n")
            stats = {"now": now, "clients": {k: v.as_json() for k, v in self.clients.items()}}
            body = json.dumps(stats).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        if path != b"/metrics":
            return _plain(404, b"not found\n")
        self.client(head).arrived(target, now)
        return self.page.response(now)


def _plain(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


class Connection(asyncio.Protocol):
    """One keep-alive connection to one target (or the control port, target -1). GETs only."""

    def __init__(self, fleet: Fleet, target: int) -> None:
        self._fleet = fleet
        self._target = target
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._transport.write(self._fleet.answer(self._target, head))
        if len(self._buffer) > MAX_HEAD_BYTES:
            self._transport.close()


async def serve(targets: int, interval_s: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fleet = Fleet(targets, interval_s, Page(REAL_PAGE.read_text()))
    loop = asyncio.get_running_loop()
    servers = []
    for target in range(-1, targets):
        servers.append(
            await loop.create_server(
                functools.partial(Connection, fleet, target), "127.0.0.1", 0, backlog=128, reuse_address=True
            )
        )
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"ports": ports[1:], "control": ports[0]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, required=True, help="number of fake servers (ports)")
    parser.add_argument("--interval", type=float, default=1.0, help="the scrape interval expected, seconds")
    args = parser.parse_args()
    asyncio.run(serve(args.targets, args.interval))


if __name__ == "__main__":
    main()
