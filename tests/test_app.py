"""`Daemon` as an async context manager: started on entry once it listens, stopped on exit."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from exporter.app import START_STOP_TIMEOUT_S, Daemon
from exporter.config_file import validate_config
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from tests.helpers import get_text


def daemon(listen: str) -> Daemon:
    config = validate_config({"listen": listen, "energy": {"source": "simulated", "interval": "100ms"}})
    return Daemon(config, SimulatedSource(SimulatedFleet(1, LoadSchedule(DEFAULT_PHASES, start=0.0))))


async def test_entered_it_serves_and_on_exit_it_has_stopped_with_exit_code_0() -> None:
    async with daemon("127.0.0.1:0") as d:
        assert d.url is not None and d.running is not None
        assert "tokenwatt_build_info" in await get_text(d.url)
    assert d.running.done() and d.running.result() == 0
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed
        await get_text(d.url)


async def test_a_daemon_that_cannot_listen_raises_on_entry_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # At once: well within the 10 s the daemon is given to start listening.
        with pytest.raises(OSError, match="address already in use"):
            async with asyncio.timeout(START_STOP_TIMEOUT_S / 2), daemon(f"127.0.0.1:{port}"):
                pass
