"""The exporter's HTTP server under slow, numerous and curious clients (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from exporter.accounting.figures import ModelFigures, ServerFigures, Snapshot, WindowFigures
from exporter.exposition.collector import Health, SourceHealth, TokenwattCollector
from exporter.exposition.limits import RUNNER_LIMITS, GuardedSite
from exporter.exposition.server import make_app
from exporter.exposition.web_config import Authenticator

HEALTH = Health("test", SourceHealth("simulated", True, 0.01, ()), ())
LIVENESS_S = 20.0


def _big_snapshot(models: int) -> Snapshot:
    window = (WindowFigures(60.0, 100.0, 50.0, 50.0),)
    figures = tuple(
        ModelFigures(f"model-{i}", 100.0, 50.0, 50.0, 3.0, 1.0, window, measured_output_tokens=50.0)
        for i in range(models)
    )
    return Snapshot((), (ServerFigures("s", 0.0, 0.0, 0.0, figures),))


async def _serve(
    snapshot: Callable[[], tuple[Snapshot, Health]],
    *,
    users: dict[str, bytes] | None = None,
    ready: str | None = None,
    max_connections: int = 256,
    header_timeout_s: float = 10.0,
) -> tuple[web.AppRunner, str]:
    app = make_app(TokenwattCollector(snapshot), lambda: [ready] if ready else [], Authenticator(users or {}))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, **RUNNER_LIMITS)
    await runner.setup()
    site = GuardedSite(
        runner, "127.0.0.1", 0, max_connections=max_connections, header_timeout_s=header_timeout_s
    )
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=LIVENESS_S)) as resp:
        assert resp.status == 200
        return await resp.text()


@contextlib.contextmanager
def _server_in_its_own_thread(snapshot: Callable[[], tuple[Snapshot, Health]]) -> Iterator[str]:
    """The server on an event loop of its own, as in the daemon, apart from the test's clients."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, base = asyncio.run_coroutine_threadsafe(_serve(snapshot), loop).result(LIVENESS_S)
    try:
        yield base
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(LIVENESS_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LIVENESS_S)
        loop.close()


async def test_concurrent_readers_share_one_render_made_off_the_event_loop(
    session: aiohttp.ClientSession,
) -> None:
    snapshot = _big_snapshot(20_000)
    taken = 0

    def take() -> tuple[Snapshot, Health]:
        nonlocal taken
        taken += 1
        return snapshot, HEALTH

    with _server_in_its_own_thread(take) as base:
        readers = [asyncio.create_task(_get(session, base + "/metrics")) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert await _get(session, base + "/healthz") == "ok\n"
        # The server's event loop answered while the large render was still running in its thread.
        assert not any(r.done() for r in readers)
        pages = await asyncio.gather(*readers)
    assert taken == 1
    assert len({len(p) for p in pages}) == 1 and 'model="model-19999"' in pages[0]


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout=LIVENESS_S) == b""
    except ConnectionResetError:
        return True


async def test_connections_beyond_the_cap_are_refused_and_idle_ones_time_out(
    session: aiohttp.ClientSession,
) -> None:
    runner, base = await _serve(lambda: (Snapshot((), ()), HEALTH), max_connections=4, header_timeout_s=2.0)
    port = int(base.rsplit(":", 1)[1])
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed(reader)  # the fifth: closed at once, nothing answered
        assert not any(r.at_eof() for r, _ in idle)  # ... while the four are still within their deadline
        for r, _ in idle:  # the four that never sent a request: closed at the header deadline
            assert await _closed(r)
        assert await _get(session, base + "/healthz") == "ok\n"  # room again
    finally:
        await runner.cleanup()


async def test_a_request_head_sent_byte_by_byte_is_cut_off() -> None:
    runner, base = await _serve(lambda: (Snapshot((), ()), HEALTH), header_timeout_s=1.0)
    port = int(base.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        closed = asyncio.create_task(_closed(reader))
        sent = 0
        while sent < len(head) and not closed.done():
            writer.write(head[sent : sent + 1])
            sent += 1
            await asyncio.sleep(0.05)
        assert await closed
        assert sent < len(head)  # cut off although a byte arrived every 50 ms
        writer.close()
    finally:
        await runner.cleanup()


async def test_readyz_tells_what_it_waits_for_only_to_authenticated_clients(
    session: aiohttp.ClientSession,
) -> None:
    users = {"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))}
    runner, base = await _serve(
        lambda: (Snapshot((), ()), HEALTH), users=users, ready="no scrape yet of secret-server"
    )
    good = "Basic " + base64.b64encode(b"prometheus:pw").decode()
    bad = "Basic " + base64.b64encode(b"prometheus:nope").decode()
    try:
        for headers, expected in [
            ({}, "not ready\n"),
            ({"Authorization": bad}, "not ready\n"),
            ({"Authorization": good}, "not ready:\n- no scrape yet of secret-server\n"),
        ]:
            async with session.get(base + "/readyz", headers=headers) as resp:
                assert (resp.status, await resp.text()) == (503, expected)
    finally:
        await runner.cleanup()
