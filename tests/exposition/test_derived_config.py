"""`exposition.derived` from the config file to the page (text format 0.0.4) a real daemon serves."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from exporter.app import Daemon
from exporter.config import ConfigError
from exporter.config_file import validate_config
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule, PowerModel, SimulatedFleet, SimulatedSource
from tests.exposition.test_collector import WINDOWED, parse

PHASES = (LoadPhase(1.0, input_tps=1000.0, output_tps=200.0, running=8, requests_ps=3.0),)


def test_an_unknown_level_names_the_field_the_value_and_the_levels() -> None:
    with pytest.raises(ConfigError) as e:
        validate_config({"exposition": {"derived": "some"}})
    assert str(e.value) == "exposition.derived: Input should be 'all', 'essential' or 'none' (got 'some')"


@pytest.mark.parametrize("derived", ["none", "essential"])
async def test_the_served_page_carries_the_configured_level(derived: str) -> None:
    schedule = LoadSchedule(PHASES, start=time.time())
    inference = SimulatedVllmServer(schedule, model="m")
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "100ms"},
            "servers": [{"name": "s", "url": await inference.start(), "interval": "200ms"}],
            "exposition": {"derived": derived},
        }
    )
    source = SimulatedSource(SimulatedFleet(1, schedule, PowerModel(60.0, 0.05, 0.7)))
    try:
        async with Daemon(config, source) as daemon, aiohttp.ClientSession() as session:
            assert daemon.url is not None
            deadline = time.monotonic() + 20
            while True:  # until the server's counters have moved
                async with session.get(daemon.url) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                    found = parse(await resp.read())
                tokens = found.get(
                    (
                        "tokenwatt_server_tokens_total",
                        (("model", "m"), ("server", "s"), ("token_type", "output")),
                    ),
                    0,
                )
                if tokens > 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    finally:
        await inference.stop()
    assert tokens > 0
    assert {name for name, labels in found if "window" in dict(labels)} == WINDOWED[derived]
