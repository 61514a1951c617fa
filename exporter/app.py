"""The daemon: one asyncio task per loop, joined by the accountant, served over HTTP.

Loops never raise into the event loop: a failed energy read or scrape becomes data (`up` gauges,
error counters by reason) and a log line when the state changes, and the loop backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import structlog
from aiohttp import web

from exporter import __version__
from exporter.accounting.bands import LoadBands
from exporter.accounting.book import Accountant, Snapshot
from exporter.accounting.cardinality import ModelLimit
from exporter.accounting.tariff import Tariff
from exporter.config import Config, ServerConfig
from exporter.energy import EnergyReadError, EnergySource, RefreshObserving
from exporter.exposition.collector import Health, SourceHealth, TargetHealth, TokenwattCollector
from exporter.exposition.limits import RUNNER_LIMITS, GuardedSite, bound_addresses
from exporter.exposition.server import make_app
from exporter.exposition.web_config import WebConfig
from exporter.model import Gpu
from exporter.placement import place_static
from exporter.tokens.scraper import ScrapeError, TokenScraper

log = structlog.get_logger("tokenwatt")

MAX_BACKOFF_S = 30.0


class _TargetState:
    def __init__(self, server: str) -> None:
        self.server = server
        self.up: bool | None = None
        self.duration_s: float | None = None
        self.last_success_t: float | None = None
        self.errors: Counter[str] = Counter()


class _SourceState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.up: bool | None = None
        self.duration_s: float | None = None
        self.failures = 0
        self.errors: Counter[str] = Counter()


def backoff_s(interval_s: float, failures: int) -> float:
    """The wait after `failures` consecutive failures: doubling from the interval, capped."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 16), max(interval_s, MAX_BACKOFF_S))


def tariff_of(config: Config) -> Tariff:
    """Cost and carbon settings of the config (each None where not configured)."""
    return Tariff(
        pue=config.pue,
        price_per_kwh=config.pricing.price_per_kwh if config.pricing else None,
        currency=config.pricing.currency if config.pricing else None,
        grams_per_kwh=config.carbon.grams_per_kwh if config.carbon else None,
    )


class Daemon:
    """Everything `tokenwatt run` does, given a config and an opened energy source."""

    def __init__(
        self,
        config: Config,
        source: EnergySource,
        clock: Callable[[], float] = time.time,
        web: WebConfig | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.web = web
        self._clock = clock
        self.accountant = Accountant(
            [s.name for s in config.servers],
            config.windows,
            config.energy.gap_limit_s,
            load_bands=LoadBands(tuple(config.load_bands)),
            split_window_s=config.energy_split.window,
            split_block_s=config.energy_split.block,
            tariff=tariff_of(config),
            model_limits={s.name: ModelLimit(s.max_models, s.model_expiry) for s in config.servers},
        )
        self._source_state = _SourceState(source.name)
        self._targets = {s.name: _TargetState(s.name) for s in config.servers}
        self._gpus: tuple[Gpu, ...] = ()
        self._resets: dict[tuple[str, str | None], int] = {}
        self._energy_lock = asyncio.Lock()
        self.collector = TokenwattCollector(self.snapshot)
        self.url: str | None = None

    def snapshot(self) -> tuple[Snapshot, Health]:
        src = self._source_state
        placement = self.accountant.placement
        health = Health(
            version=__version__,
            source=SourceHealth(
                src.name,
                bool(src.up),
                src.duration_s,
                tuple(sorted(src.errors.items())),
                self.source.refresh_period_s if isinstance(self.source, RefreshObserving) else None,
            ),
            targets=tuple(
                TargetHealth(
                    t.server,
                    bool(t.up),
                    t.duration_s,
                    t.last_success_t,
                    tuple(sorted(t.errors.items())),
                    tuple(g for g in self._gpus if g.uuid in placement.gpus.get(t.server, ())),
                )
                for t in self._targets.values()
            ),
        )
        return self.accountant.snapshot(self._clock()), health

    def not_ready(self) -> str | None:
        if not self._source_state.up:
            return f"no reading yet from the energy source {self.source.name}"
        waiting = [t.server for t in self._targets.values() if t.up is None]
        if waiting:
            return "no scrape yet of " + ", ".join(waiting)
        return None

    async def run(self, stop: asyncio.Event, on_listening: Callable[[str], None] | None = None) -> None:
        """Run until `stop` is set, then shut down: HTTP server, loops, sessions, source."""
        app = make_app(
            self.collector,
            self.not_ready,
            self.web.users if self.web else None,
            require_client_cert=bool(self.web and self.web.require_client_cert),
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, **RUNNER_LIMITS)
        await runner.setup()
        host, _, port = self.config.listen.rpartition(":")
        tls = self.web.ssl_context if self.web else None
        site = GuardedSite(runner, host.strip("[]"), int(port), ssl_context=tls)
        await site.start()
        bound_port = runner.addresses[0][1] if runner.addresses else int(port)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound_port}/metrics"
        log.info(
            "listening",
            addresses=bound_addresses(runner.addresses),
            url=self.url,
            energy_source=self.source.name,
            servers=len(self.config.servers),
        )
        if on_listening is not None:
            on_listening(self.url)
        async with aiohttp.ClientSession(auto_decompress=True) as session:
            tasks = [asyncio.create_task(self._energy_loop(), name="energy")]
            for server in self.config.servers:
                tasks.append(asyncio.create_task(self._scrape_loop(server, session), name=server.name))
            try:
                await stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await runner.cleanup()
                await self.source.close()
        log.info("stopped")

    async def _energy_loop(self) -> None:
        while True:
            started = time.monotonic()
            await self._read_energy()
            self._settle()
            await _sleep_until(started + backoff_s(self.config.energy.interval, self._source_state.failures))

    async def _read_energy(self) -> None:
        """One read of the energy source, its outcome recorded as state, never raised."""
        state = self._source_state
        async with self._energy_lock:
            started = time.monotonic()
            try:
                samples = await self.source.read()
            except EnergyReadError as e:
                state.failures += 1
                state.errors[e.reason] += 1
                if state.up is not False:
                    log.warning("energy source down", source=state.name, reason=e.reason, error=str(e))
                state.up = False
                return
            state.failures = 0
            state.duration_s = time.monotonic() - started
            if state.up is not True:
                log.info("energy source up", source=state.name, gpus=len(samples))
            state.up = True
            reset = self.accountant.add_energy(samples)
            self._place({s.gpu for s in samples if s.gpu.uuid in self.accountant.tracks})  # past the gate
            for gpu in reset:
                log.warning("energy counter reset", gpu=gpu.index, uuid=gpu.uuid)

    async def _read_energy_beside_scrape(self) -> None:
        """Bracket a scrape's instant with energy readings taken just before and just after it.

        Interpolating across a one-second gap between readings misses power steps inside it;
        readings milliseconds apart around the scrape make the energy at its instant exact to
        within the scrape's own duration. Only for sources whose every read asks the hardware now,
        and not while the source is failing (its own loop backs off then).
        """
        if self.source.reads_fresh and self._source_state.failures == 0:
            await self._read_energy()

    def _place(self, gpus: set[Gpu]) -> None:
        seen = tuple(sorted(gpus | set(self._gpus), key=lambda g: g.index))
        if seen == self._gpus:
            return
        self._gpus = seen
        placement, unmatched = place_static({s.name: s.gpus for s in self.config.servers}, seen)
        self.accountant.set_placement(placement)
        for u in unmatched:
            log.error("no such GPU", server=u.server, gpu=u.selector, gpus_seen=[g.index for g in seen])
        for server, uuids in placement.gpus.items():
            log.info("placement", server=server, gpus=sorted(g.index for g in seen if g.uuid in uuids))

    async def _scrape_loop(self, server: ServerConfig, session: aiohttp.ClientSession) -> None:
        scraper = TokenScraper(
            server.name, server.url, server.token_kind, session, server.timeout, server.max_page_bytes
        )
        state = self._targets[server.name]
        failures = 0
        while True:
            started = time.monotonic()
            await self._read_energy_beside_scrape()
            try:
                samples = await scraper.scrape()
            except ScrapeError as e:
                failures += 1
                state.errors[e.reason] += 1
                if state.up is not False:
                    log.warning(
                        "target down", server=server.name, url=server.url, reason=e.reason, error=str(e)
                    )
                state.up = False
            else:
                failures = 0
                if state.up is not True:
                    log.info("target up", server=server.name, url=server.url, kind=scraper.kind)
                state.up = True
                state.last_success_t = self._clock()
                await self._read_energy_beside_scrape()
                self.accountant.add_tokens(samples)
                self._settle()
            state.duration_s = time.monotonic() - started
            await _sleep_until(started + backoff_s(server.interval, failures))

    def _settle(self) -> None:
        self.accountant.settle(self._clock())
        resets_now: dict[tuple[str, str | None], int] = {}  # rebuilt: expired models leave it
        for ledger in self.accountant.ledgers.values():
            for model, m in ledger.models.items():
                resets = m.input.resets + m.output.resets + m.requests.resets
                if resets > self._resets.get((ledger.name, model), 0):
                    log.warning("token counter reset", server=ledger.name, model=model)
                resets_now[(ledger.name, model)] = resets
        self._resets = resets_now


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def serve_until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)` until SIGINT or SIGTERM sets `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await run(stop)
