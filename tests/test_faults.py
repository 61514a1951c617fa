"""Faults injected into the energy source and the inference servers, and what a user sees.

Each test breaks one part while the daemon runs with three servers scraped every 200 ms, and checks
the log line, the `up` gauges, the error counters and `/readyz`, that the servers not at fault keep
their cadence (measured at the servers, within 10 %), and (in the rig) that no cumulative counter
ever went down and no joules-per-token went negative.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from structlog.testing import capture_logs

from exporter.app import EXIT_CRASHING, Daemon
from exporter.config import EnergyConfig, ServerConfig
from exporter.config_file import validate_config
from exporter.energy.dcgm_exporter import DcgmExporterSource
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedFleet, SimulatedSource
from exporter.pollers import EnergyPoller, TargetPoller
from tests.energy.dcgm_exporter_server import ExporterGpu, FakeDcgmExporter
from tests.faults.parts import FaultySource, FaultyTarget
from tests.faults.rig import INTERVAL_S, Rig, running, value
from tests.helpers import Series, samples


def assert_cadence(rig: Rig, since: float, *targets: int) -> None:
    cadences = rig.cadences(since, time.monotonic(), *targets)
    print("cadence of the servers not at fault:", ", ".join(f"{c * 1000:.1f} ms" for c in cadences))
    for cadence in cadences:
        assert cadence == pytest.approx(INTERVAL_S, rel=0.10)


async def source_up(rig: Rig) -> float | None:
    return value(await rig.metrics(), "tokenwatt_energy_source_up", source="simulated")


async def test_an_unexpected_exception_in_the_source_is_logged_counted_and_survived() -> None:
    async with running() as rig:
        with capture_logs() as logs:
            rig.source.mode = "raise"
            since = time.monotonic()
            detected = await rig.wait_for("source down", lambda: _is(source_up(rig), 0.0))
            await asyncio.sleep(1.5)
            status, body = await rig.readyz()
            found = await rig.metrics()
            assert_cadence(rig, since, 0, 1, 2)
            rig.source.mode = "ok"
            await rig.wait_for("source back up", lambda: _is(source_up(rig), 1.0), timeout_s=10)
            await rig.wait_for("ready again", lambda: not rig.daemon.not_ready())
    crashes = [e for e in logs if e["event"] == "poller crashed"]
    assert crashes and crashes[0]["component"] == "energy" and crashes[0]["exc_info"] is True
    assert (value(found, "tokenwatt_internal_errors_total", component="energy") or 0) >= 2  # restarted
    assert read_errors(found, "unexpected") >= 1
    assert status == 503 and "energy is crashing" in body and "RuntimeError: injected" in body
    print(f"unexpected exception: source_up 0 after {detected:.2f}s")


async def test_a_source_that_hangs_forever_times_out_and_never_holds_up_the_scrapes() -> None:
    async with running() as rig:
        with capture_logs() as logs:
            rig.source.mode = "hang"
            since = time.monotonic()
            detected = await rig.wait_for("source down", lambda: _is(source_up(rig), 0.0))
            await asyncio.sleep(2.0)
            assert_cadence(rig, since, 0, 1, 2)
            found = await rig.metrics()
            status, body = await rig.readyz()
    assert read_errors(found, "timeout") >= 1
    assert all(value(found, "tokenwatt_target_up", server=f"s{i}") == 1.0 for i in range(3))
    assert status == 503 and "the energy source simulated is down (timeout: " in body
    down = [e for e in logs if e["event"] == "energy source down"]
    assert down and down[0]["reason"] == "timeout"
    assert detected < 1.0
    print(f"hung source: source_up 0 after {detected:.2f}s")


async def test_a_source_slower_than_its_deadline_fails_reads_then_recovers() -> None:
    async with running() as rig:
        rig.source.slow_s = 0.5  # the deadline is 300 ms
        rig.source.mode = "slow"
        since = time.monotonic()
        detected = await rig.wait_for("source down", lambda: _is(source_up(rig), 0.0))
        await asyncio.sleep(1.0)
        assert_cadence(rig, since, 0, 1, 2)
        rig.source.mode = "ok"
        await rig.wait_for("source back up", lambda: _is(source_up(rig), 1.0), timeout_s=10)
        found = await rig.metrics()
    assert read_errors(found, "timeout") >= 1
    print(f"slow source: source_up 0 after {detected:.2f}s")


async def test_a_wedged_source_is_a_stall_seen_by_readyz_and_the_up_gauge() -> None:
    """A read that ignores its deadline (a worker thread nothing abandoned) stalls the poller."""
    async with running() as rig:
        rig.source.mode = "wedge"
        since = time.monotonic()
        detected = await rig.wait_for("source down", lambda: _is(source_up(rig), 0.0))

        async def stalled() -> bool:
            status, body = await rig.readyz()
            return status == 503 and "energy is stalled: overdue by" in body

        stall_seen = detected + await rig.wait_for("stall on /readyz", stalled)
        await asyncio.sleep(1.0)
        assert_cadence(rig, since, 0, 1, 2)  # the scrapes skip the reads around them
        rig.source.mode = "ok"  # ends the fault, so the test can shut down
    assert detected < 1.5 and stall_seen < 2.0
    print(f"wedged source: source_up 0 after {detected:.2f}s, stall on /readyz after {stall_seen:.2f}s")


async def test_a_source_counter_reset_is_logged_and_never_makes_energy_go_back() -> None:
    async with running() as rig:
        before = value(await rig.metrics(), "tokenwatt_gpu_energy_joules_total",
                       gpu="0", uuid="GPU-00000000-0000-4000-8000-000000000000",
                       gpu_model="Simulated GPU", method="counter")  # fmt: skip
        with capture_logs() as logs:
            rig.source.mode = "reset"
            await rig.wait_for("reset read", lambda: rig.source.mode == "ok")
            await asyncio.sleep(0.5)
    assert before is not None
    assert [e for e in logs if e["event"] == "energy counter reset"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("hang", "timeout"), ("slow", "timeout"), ("garbage", "parse"), ("http_500", "http_status")],
)
async def test_a_failing_server_is_down_and_the_others_keep_their_cadence(fault: str, reason: str) -> None:
    async with running() as rig:
        with capture_logs() as logs:
            rig.targets[0].mode = fault
            since = time.monotonic()

            async def down() -> bool:
                return value(await rig.metrics(), "tokenwatt_target_up", server="s0") == 0.0

            detected = await rig.wait_for("s0 down", down)
            await asyncio.sleep(1.5)
            assert_cadence(rig, since, 1, 2)
            found = await rig.metrics()
            rig.targets[0].mode = "ok"
            await rig.wait_for("s0 back", lambda: _is(_up(rig, "s0"), 1.0), timeout_s=10)
    assert (value(found, "tokenwatt_target_scrape_errors_total", server="s0", reason=reason) or 0) >= 1
    assert value(found, "tokenwatt_target_up", server="s1") == 1.0
    assert value(found, "tokenwatt_energy_source_up", source="simulated") == 1.0
    assert [e for e in logs if e["event"] == "target down" and e["server"] == "s0" and e["reason"] == reason]
    assert detected < 1.5
    print(f"server {fault}: target_up 0 after {detected:.2f}s")


async def test_a_server_restart_is_a_token_counter_reset_not_negative_tokens() -> None:
    async with running() as rig:
        await asyncio.sleep(1.0)
        with capture_logs() as logs:
            rig.targets[0].mode = "reset"
            await rig.wait_for("reset served", lambda: rig.targets[0].mode == "ok")
            await asyncio.sleep(1.0)
    assert [e for e in logs if e["event"] == "token counter reset" and e["server"] == "s0"]


async def test_an_unexpected_exception_in_a_target_poller_is_counted_and_restarted() -> None:
    async with running() as rig:
        poller = rig.daemon.targets["s1"]
        real = poller._scraper.scrape  # the injected fault: a bug in this server's scrape path

        async def broken() -> list[object]:
            raise KeyError("injected")

        poller._scraper.scrape = broken  # type: ignore[method-assign,assignment]
        since = time.monotonic()
        detected = await rig.wait_for("s1 down", lambda: _is(_up(rig, "s1"), 0.0))
        await asyncio.sleep(1.0)
        status, body = await rig.readyz()
        found = await rig.metrics()
        assert_cadence(rig, since, 0, 2)
        poller._scraper.scrape = real  # type: ignore[method-assign]
        await rig.wait_for("s1 back", lambda: _is(_up(rig, "s1"), 1.0), timeout_s=10)
    assert (value(found, "tokenwatt_internal_errors_total", component="target:s1") or 0) >= 2
    assert status == 503 and "target:s1 is crashing" in body
    print(f"target poller crash: target_up 0 after {detected:.2f}s")


async def test_a_poller_that_keeps_crashing_ends_the_daemon_with_a_non_zero_code() -> None:
    async with running(crash_exit_s=1.0) as rig:
        rig.source.mode = "raise"
        started = time.monotonic()
        await rig.wait_for("giving up", lambda: "giving up" in " ".join(rig.daemon.not_ready()), timeout_s=10)
        gave_up_s = time.monotonic() - started
        code = await asyncio.wait_for(rig.task, 5)
    assert code == EXIT_CRASHING
    print(f"crash loop: gave up after {gave_up_s:.2f}s")


async def _up(rig: Rig, server: str) -> float | None:
    return value(await rig.metrics(), "tokenwatt_target_up", server=server)


async def _is(reading: Awaitable[float | None], expected: float) -> bool:
    return await reading == expected


def read_errors(found: dict[Series, float], reason: str) -> float:
    return value(found, "tokenwatt_energy_read_errors_total", source="simulated", reason=reason) or 0.0


async def test_the_scrape_duration_is_the_scrape_alone_and_the_energy_reads_have_their_own() -> None:
    target = FaultyTarget()
    url = await target.start()
    source = FaultySource(SimulatedSource(SimulatedFleet(1, LoadSchedule(DEFAULT_PHASES, time.time()))), 0.03)
    source.mode = "slow"  # every read takes at least 30 ms
    energy = EnergyPoller(source, EnergyConfig(timeout="1s"), lambda _: None, lambda: None)
    server = ServerConfig(name="a", url=url, kind="vllm")
    try:
        async with aiohttp.ClientSession() as session:
            poller = TargetPoller(server, session, energy, lambda _: None)
            await poller.poll_once()
    finally:
        await target.stop()
    assert poller.up and poller.energy_read_duration_s is not None and poller.scrape_duration_s is not None
    assert poller.energy_read_duration_s >= 0.06  # the reads before and after the scrape
    assert poller.scrape_duration_s < 0.06  # a page on loopback, without those reads (a wide margin)


async def test_a_dcgm_exporter_that_serves_garbage_or_freezes_is_down_not_up_with_old_values() -> None:
    gpu = ExporterGpu(0, "GPU-1d6b2a3e-7c1f-4a0b-9e55-3f0c1b2a4d01", energy_mj=1_000_000)
    exporter = FakeDcgmExporter([gpu])
    runner, url = await exporter.start()
    energy = {"source": "dcgm_exporter", "interval": "100ms",
              "dcgm_exporter": {"url": url, "collect_interval": "300ms"}}  # fmt: skip
    config = validate_config({"listen": "127.0.0.1:0", "energy": energy})

    async def collecting() -> None:
        while True:
            gpu.energy_mj += 70_000
            exporter.collect()
            await asyncio.sleep(0.3)

    collector = asyncio.create_task(collecting())
    try:
        async with (
            Daemon(config, await DcgmExporterSource.open(config.energy)) as daemon,
            aiohttp.ClientSession() as session,
        ):
            assert daemon.url is not None
            base = daemon.url.removesuffix("/metrics")

            async def scrape() -> tuple[dict[Series, float], int, str]:
                async with session.get(base + "/metrics") as m, session.get(base + "/readyz") as r:
                    return samples(await m.text()), r.status, await r.text()

            async def source_is(up: float) -> bool:
                found, _, _ = await scrape()
                return value(found, "tokenwatt_energy_source_up", source="dcgm_exporter") == up

            await _until(lambda: source_is(1.0))
            exporter._page = 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-x"} lots\n'
            started = time.monotonic()
            await _until(lambda: source_is(0.0))
            garbage_s = time.monotonic() - started
            garbage, garbage_status, garbage_body = await scrape()
            exporter.collect()
            await _until(lambda: source_is(1.0))
            collector.cancel()  # the exporter keeps serving its last values: frozen
            started = time.monotonic()
            await _until(lambda: source_is(0.0))
            frozen_s = time.monotonic() - started
            frozen, frozen_status, frozen_body = await scrape()
    finally:
        collector.cancel()
        await runner.cleanup()
    labels = {"source": "dcgm_exporter"}
    assert (value(garbage, "tokenwatt_energy_read_errors_total", reason="parse", **labels) or 0) >= 1
    assert garbage_status == 503 and "is down (parse: " in garbage_body
    assert (value(frozen, "tokenwatt_energy_read_errors_total", reason="stale", **labels) or 0) >= 1
    assert frozen_status == 503 and "is down (stale: " in frozen_body
    unchanged = value(frozen, "tokenwatt_energy_source_gpu_unchanged_seconds", gpu="0", uuid=gpu.uuid,
                      gpu_model=gpu.model, **labels)  # fmt: skip
    assert unchanged is not None and unchanged > 0.9  # three collect intervals
    print(f"dcgm-exporter garbage: source_up 0 after {garbage_s:.2f}s; frozen: after {frozen_s:.2f}s")


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.05)


async def test_a_source_that_hangs_on_close_does_not_hold_up_the_shutdown() -> None:
    async with running() as rig:

        async def hung_close() -> None:  # a library whose shutdown call never returns
            await asyncio.Event().wait()

        rig.source.close = hung_close  # type: ignore[method-assign]
        started = time.monotonic()
        with capture_logs() as logs:
            rig.stop.set()
            code = await asyncio.wait_for(rig.task, 5)
    assert code == 0 and time.monotonic() - started < 2.0  # liveness: the 2 s a SIGTERM may take
    assert [e for e in logs if e["event"] == "energy source did not close in time: leaving it"]
