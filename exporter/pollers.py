"""Pollers and their supervisor: the energy poller, one target poller per server.

A poller owns its state (up, failures in a row, errors by reason, durations), its back-off and its
log lines, and does one unit of work per `poll_once()`. A failure it foresees (`EnergyReadError`,
`ScrapeError`, a deadline) is data: an `up` gauge, an error counter, a log line when the state
changes, and a back-off. Anything else is a crash, handled by the `Supervisor`: the traceback is
logged, `tokenwatt_internal_errors_total{component}` counts it, the poller is marked down and polls
again after a back-off. A poller that crashes on every attempt for `crash_exit_s` makes the
supervisor give up, and the daemon exits non-zero so that its orchestrator restarts it.

The supervisor also keeps a heartbeat per poller: the instant by which the poller must have moved
on (its current poll's deadline, or the end of its sleep, plus a grace). A poller past that instant
is stalled: `/readyz` fails and its `up` gauge reads 0, even though no error was raised.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import aiohttp
import structlog

from exporter.config import EnergyConfig, ServerConfig
from exporter.energy import EnergyReadError, EnergySource
from exporter.tokens.scraper import ScrapeError, TokenScraper
from exporter.values import GpuSample, TokenSample

log = structlog.get_logger("tokenwatt")

MAX_BACKOFF_S = 30.0
STALE_INTERVALS = 5
"""The energy source counts as stale when it produced no reading for this many intervals."""
GRACE_S = 1.0
"""Slack on a heartbeat before a poller counts as stalled."""
BESIDE_SCRAPE_WAIT_S = 0.05
"""The longest a scrape waits for an energy read beside it; a slower read finishes on its own."""
COALESCE_S = 0.01
"""Reads beside scrapes are at least this far apart; scrapes within it share one. It bounds each
GPU's readings to about 1 / COALESCE_S per second whatever the number of servers."""
CRASHES_TO_GIVE_UP = 3
"""A poller gives up only after at least this many crashes in a row (and `crash_exit_s`)."""


def backoff_s(interval_s: float, failures: int) -> float:
    """The wait after `failures` consecutive failures: doubling from the interval, capped."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 16), max(interval_s, MAX_BACKOFF_S))


class Poller(Protocol):
    """What the supervisor runs: one unit of work per `poll_once()`, then a sleep of `next_delay_s()`."""

    @property
    def component(self) -> str:
        """The `component` label of the poller's internal errors, and its name in logs and /readyz."""
        ...

    @property
    def deadline_s(self) -> float:
        """The longest one `poll_once()` may take when every read in it keeps its deadline."""
        ...

    async def poll_once(self) -> None: ...

    def next_delay_s(self) -> float:
        """Seconds from the start of the latest poll to the start of the next one."""
        ...

    def crashed(self) -> None:
        """Mark the poller down after an unexpected exception in `poll_once()`."""
        ...


class Supervised:
    """The supervisor's record of one poller."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.expected_by = time.monotonic() + poller.deadline_s + GRACE_S
        self.crashes = 0
        """Crashes in a row; 0 after a poll that returned."""
        self.crashing_since: float | None = None
        self.last_crash: str | None = None
        self.task: asyncio.Task[None] | None = None

    def stalled_s(self, now: float) -> float | None:
        """How long the poller is overdue, or None when it is on time."""
        return now - self.expected_by if now > self.expected_by else None


class Supervisor:
    """Runs pollers as tasks, restarts the ones that crash, and notices the ones that stall."""

    def __init__(self, crash_exit_s: float = 120.0) -> None:
        self.crash_exit_s = crash_exit_s
        self.pollers: dict[str, Supervised] = {}
        self.internal_errors: Counter[str] = Counter()
        self.given_up = asyncio.Event()
        self.give_up_reason: str | None = None

    def start(self, poller: Poller) -> None:
        entry = Supervised(poller)
        self.pollers[poller.component] = entry
        entry.task = asyncio.create_task(self._run(entry), name=poller.component)

    async def stop(self, component: str, timeout_s: float = 1.0) -> None:
        entry = self.pollers.pop(component, None)
        if entry is not None and entry.task is not None:
            await _cancel([entry.task], timeout_s)

    async def stop_all(self, timeout_s: float = 1.0) -> None:
        tasks = [e.task for e in self.pollers.values() if e.task is not None]
        self.pollers.clear()
        await _cancel(tasks, timeout_s)

    async def _run(self, entry: Supervised) -> None:
        poller = entry.poller
        while True:
            started = time.monotonic()
            entry.expected_by = started + poller.deadline_s + GRACE_S
            try:
                await poller.poll_once()
            except Exception as e:  # the supervisor's job: whatever escaped is logged, counted, retried
                delay = self._crashed(entry, e, started)
            else:
                entry.crashes, entry.crashing_since, entry.last_crash = 0, None, None
                delay = poller.next_delay_s()
            wake = started + delay
            entry.expected_by = max(wake, time.monotonic()) + poller.deadline_s + GRACE_S
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    def _crashed(self, entry: Supervised, e: Exception, started: float) -> float:
        poller = entry.poller
        self.internal_errors[poller.component] += 1
        entry.crashes += 1
        entry.last_crash = f"{type(e).__name__}: {e}"
        if entry.crashing_since is None:
            entry.crashing_since = started
        log.exception("poller crashed", component=poller.component, crashes_in_a_row=entry.crashes)
        poller.crashed()
        crashing_s = time.monotonic() - entry.crashing_since
        if entry.crashes >= CRASHES_TO_GIVE_UP and crashing_s >= self.crash_exit_s:
            self.give_up_reason = (
                f"{poller.component} crashed {entry.crashes} times in a row over {crashing_s:.0f}s "
                f"({entry.last_crash})"
            )
            log.error("giving up: poller keeps crashing", component=poller.component, why=self.give_up_reason)
            self.given_up.set()
        return backoff_s(poller.next_delay_s(), entry.crashes)

    def problems(self) -> list[str]:
        """What is wrong with the pollers now: stalls and crashes, one sentence each."""
        now = time.monotonic()
        out = []
        for name, entry in self.pollers.items():
            stalled = entry.stalled_s(now)
            if stalled is not None:
                out.append(f"{name} is stalled: overdue by {stalled:.1f}s")
            if entry.last_crash is not None:
                out.append(f"{name} is crashing: {entry.crashes} in a row, latest {entry.last_crash}")
        return out

    def healthy(self, component: str) -> bool:
        """False while the poller is stalled or crashing."""
        entry = self.pollers.get(component)
        return entry is not None and entry.last_crash is None and entry.stalled_s(time.monotonic()) is None


async def _cancel(tasks: list[asyncio.Task[None]], timeout_s: float) -> None:
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:  # a poller that ignores cancellation is left behind, not waited for
        log.error("poller did not stop", component=task.get_name())


class EnergyPoller:
    """Reads the energy source every `energy.interval`, each read within `energy.timeout`."""

    component = "energy"

    def __init__(
        self,
        source: EnergySource,
        cfg: EnergyConfig,
        on_samples: Callable[[list[GpuSample]], None],
        after_poll: Callable[[], None],
    ) -> None:
        """`on_samples` takes every read's samples; `after_poll` runs after the poller's own reads
        only, not after the reads around a scrape (which must not settle before the scrape's tokens
        are queued)."""
        self.source = source
        self.cfg = cfg
        self._on_samples = on_samples
        self._after_poll = after_poll
        self.up: bool | None = None
        self.failures = 0
        self.errors: Counter[str] = Counter()
        self.duration_s: float | None = None
        self.last_reading_mono: float | None = None
        self.last_failure: str | None = None
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Future[float]] = set()
        self._last_start = -math.inf
        """When the latest read started (monotonic)."""
        self._upcoming: asyncio.Future[float] | None = None
        """The read scheduled after scrapes, until it starts."""

    @property
    def deadline_s(self) -> float:
        return self.cfg.timeout

    def next_delay_s(self) -> float:
        return backoff_s(self.cfg.interval, self.failures)

    async def poll_once(self) -> None:
        await self.read()
        self._after_poll()

    async def read(self) -> float:
        """Read the source once, within the deadline; the outcome is recorded, the duration returned."""
        async with self._lock:
            started = self._last_start = time.monotonic()
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    samples = await self.source.read()
            except TimeoutError:
                self._failed(
                    EnergyReadError("timeout", f"no answer within energy.timeout ({self.cfg.timeout:g}s)")
                )
            except EnergyReadError as e:
                self._failed(e)
            else:
                self.failures = 0
                self.duration_s = time.monotonic() - started
                self.last_reading_mono = time.monotonic()
                self.last_failure = None
                if self.up is not True:
                    log.info("energy source up", source=self.source.name, gpus=len(samples))
                self.up = True
                self._on_samples(samples)
            return time.monotonic() - started

    async def read_before_scrape(self) -> float:
        """A reading just before a scrape starts, unless one is as good already.

        Interpolating across a one-second gap between readings misses power steps inside it;
        readings milliseconds apart around the scrape make the energy at its instant exact to
        within the scrape's own duration. Only for sources whose every read asks the hardware now,
        not while the source is failing (its poller backs off then). A read that started within
        `COALESCE_S`, or is in progress, serves every scrape starting now: with many servers the
        reads stay `COALESCE_S` apart instead of two per scrape. Returns the time the caller waited.
        """
        if not self.source.reads_fresh or self.failures or self._lock.locked():
            return 0.0
        if time.monotonic() - self._last_start < COALESCE_S:
            return 0.0
        return await self._wait(asyncio.ensure_future(self.read()), 0.0)

    async def read_after_scrape(self) -> float:
        """A reading after a scrape that just ended, shared with the scrapes that end before it starts.

        Joins the read scheduled after earlier scrapes while it has not started; otherwise
        schedules one, no sooner than `COALESCE_S` after the previous read started. The caller
        waits at most that delay plus `BESIDE_SCRAPE_WAIT_S`; a slower read goes on in the
        background, within its own deadline, and the scrape goes ahead (it is settled once a
        reading after it exists). Returns the time the caller waited.
        """
        if not self.source.reads_fresh or self.failures:
            return 0.0
        now = time.monotonic()
        if self._upcoming is None:
            self._upcoming = asyncio.ensure_future(self._read_at(max(now, self._last_start + COALESCE_S)))
        return await self._wait(self._upcoming, max(0.0, self._last_start + COALESCE_S - now))

    async def _read_at(self, start: float) -> float:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        self._upcoming = None  # starting now: a scrape that ends from here on needs a later read
        self._last_start = time.monotonic()
        return await self.read()

    async def _wait(self, read: asyncio.Future[float], delay_s: float) -> float:
        started = time.monotonic()
        done, _ = await asyncio.wait({read}, timeout=delay_s + BESIDE_SCRAPE_WAIT_S)
        if not done:
            self._background.add(read)
            read.add_done_callback(self._background.discard)
        return time.monotonic() - started

    def _failed(self, e: EnergyReadError) -> None:
        self.failures += 1
        self.errors[e.reason] += 1
        self.last_failure = f"{e.reason}: {e}"
        if self.up is not False:
            log.warning("energy source down", source=self.source.name, reason=e.reason, error=str(e))
        self.up = False

    def crashed(self) -> None:
        self._failed(EnergyReadError("unexpected", "the read raised an unexpected error (see the log)"))

    def stale_s(self, now: float) -> float | None:
        """How long the source has produced no reading, when that exceeds `STALE_INTERVALS` intervals."""
        since = self.last_reading_mono
        if since is None:
            return None
        age = now - since
        return age if age > STALE_INTERVALS * self.cfg.interval else None


class TargetPoller:
    """Scrapes one server every `interval`, each scrape within the server's `timeout`."""

    def __init__(
        self,
        server: ServerConfig,
        session: aiohttp.ClientSession,
        energy: EnergyPoller,
        on_tokens: Callable[[list[TokenSample]], None],
        clock: Callable[[], float] = time.time,
        on_up: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_up` runs when a scrape succeeds after none or a failed one (the server may have restarted)."""
        self.server = server
        self.component = f"target:{server.name}"
        self._scraper = TokenScraper(
            server.name, server.url, server.token_kind, session, server.timeout, server.max_page_bytes
        )
        self._energy = energy
        self._on_tokens = on_tokens
        self._clock = clock
        self._on_up = on_up
        self.up: bool | None = None
        self.failures = 0
        self.errors: Counter[str] = Counter()
        self.scrape_duration_s: float | None = None
        """The HTTP scrape and its parsing alone."""
        self.energy_read_duration_s: float | None = None
        """The energy reads taken around the latest scrape."""
        self.last_success_t: float | None = None

    def carry_over(self, old: TargetPoller) -> None:
        """Continue the counters and timestamps of the poller this one replaces (a reloaded server)."""
        self.errors = old.errors
        self.last_success_t = old.last_success_t

    @property
    def deadline_s(self) -> float:
        return self.server.timeout + 2 * self._energy.deadline_s

    def next_delay_s(self) -> float:
        return backoff_s(self.server.interval, self.failures)

    async def poll_once(self) -> None:
        bracket_s = await self._energy.read_before_scrape()
        started = time.monotonic()
        try:
            samples = await self._scraper.scrape()
        except ScrapeError as e:
            self.scrape_duration_s = time.monotonic() - started
            self._failed(e)
            return
        self.scrape_duration_s = time.monotonic() - started
        self.failures = 0
        if self.up is not True:
            log.info("target up", server=self.server.name, url=self.server.url, kind=self._scraper.kind)
            self._on_up()
        self.up = True
        self.last_success_t = self._clock()
        bracket_s += await self._energy.read_after_scrape()
        self.energy_read_duration_s = bracket_s
        self._on_tokens(samples)

    def _failed(self, e: ScrapeError) -> None:
        self.failures += 1
        self.errors[e.reason] += 1
        if self.up is not False:
            log.warning(
                "target down", server=self.server.name, url=self.server.url, reason=e.reason, error=str(e)
            )
        self.up = False

    def crashed(self) -> None:
        self._failed(ScrapeError("unexpected", "the scrape raised an unexpected error (see the log)"))
