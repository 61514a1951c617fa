"""The daemon: supervised pollers joined by the accountant, served over HTTP.

The `Daemon` only wires the parts: an `EnergyPoller`, one `TargetPoller` per server (both in
`exporter.pollers`, run by a `Supervisor`), the `Accountant` and the HTTP server. A reload
(`SIGHUP`, or `POST /-/reload` when enabled) re-reads the config and the web config, starts the
pollers of added servers and stops those of removed ones without touching the others.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from exporter import __version__
from exporter.accounting.bands import LoadBands
from exporter.accounting.book import Accountant
from exporter.accounting.cardinality import ModelLimit
from exporter.accounting.figures import Snapshot
from exporter.accounting.tariff import Tariff
from exporter.config import Config, ConfigError, ServerConfig
from exporter.config_file import load_config
from exporter.discovery.roster import Roster
from exporter.discovery.watcher import DiscoveredServer, watcher_of
from exporter.energy import ActivityReporting, EnergySource, MigReporting, RefreshObserving, gap_limit_s
from exporter.exposition.collector import (
    DiscoveryHealth,
    DraHealth,
    Health,
    PlacementHealth,
    SourceHealth,
    TargetHealth,
    TokenwattCollector,
)
from exporter.exposition.limits import RUNNER_LIMITS, GuardedSite, bound_addresses
from exporter.exposition.server import make_app
from exporter.exposition.web_config import Authenticator, WebConfig, WebConfigError, load_web_config
from exporter.placement.dra import ResourceSliceWatcher, slice_watcher_of
from exporter.placement.kubelet import KubeletRefresher, place, pods_of, refresher_of
from exporter.pollers import EnergyPoller, Supervisor, TargetPoller
from exporter.values import Gpu, GpuSample, PodLabels, PodRef, TokenSample

log = structlog.get_logger("tokenwatt")

EXIT_CRASHING = 1
CLOSE_TIMEOUT_S = 0.5
START_STOP_TIMEOUT_S = 10.0
"""`async with Daemon(...)`: the deadline to start listening, and to stop."""
RELOADABLE = frozenset({"servers", "web_config_file"})
"""Top-level keys a reload applies; a change to any other key needs a restart."""


def tariff_of(config: Config) -> Tariff:
    """Cost and carbon settings of the config (each None where not configured)."""
    return Tariff(
        pue=config.pue,
        price_per_kwh=config.pricing.price_per_kwh if config.pricing else None,
        currency=config.pricing.currency if config.pricing else None,
        grams_per_kwh=config.carbon.grams_per_kwh if config.carbon else None,
    )


def _pod_of(server: ServerConfig) -> PodRef:
    """The pod a server runs in, as placement splits shared GPUs by it: the kubelet's namespace and
    name where the server names its pod, and its UID where known (which per-process activity names)."""
    pod = PodRef.named(server.pod) if server.pod is not None else PodRef("", "")
    return PodRef(pod.namespace, pod.name, server.pod_uid)


class Daemon:
    """Everything `tokenwatt run` does, given a config and an opened energy source.

    `config_path`, when given, is the file a reload reads. `enable_lifecycle` turns on
    `POST /-/reload`. A poller that crashes on every attempt for `crash_exit_s` ends `run()` with
    `EXIT_CRASHING`.
    """

    def __init__(
        self,
        config: Config,
        source: EnergySource,
        clock: Callable[[], float] = time.time,
        web: WebConfig | None = None,
        *,
        config_path: Path | None = None,
        enable_lifecycle: bool = False,
        crash_exit_s: float = 120.0,
    ) -> None:
        self.config = config
        self.source = source
        self.web = web
        self.config_path = config_path
        self.enable_lifecycle = enable_lifecycle
        self._clock = clock
        self.accountant = Accountant(
            [s.name for s in config.servers],
            config.windows,
            gap_limit_s(config.energy, source),
            load_bands=LoadBands(tuple(config.load_bands)),
            split_window_s=config.energy_split.window,
            split_block_s=config.energy_split.block,
            tariff=tariff_of(config),
            model_limits={s.name: ModelLimit(s.max_models, s.model_expiry) for s in config.servers},
        )
        self.supervisor = Supervisor(crash_exit_s)
        self.energy = EnergyPoller(source, config.energy, self._take_energy, self._settle)
        self.targets: dict[str, TargetPoller] = {}
        self.auth = Authenticator(web.users if web else {})
        self._gpus: tuple[Gpu, ...] = ()
        # The source's optional abilities, checked once: a Protocol isinstance costs more than a read.
        self._activity = source if isinstance(source, ActivityReporting) else None
        self._refresh = source if isinstance(source, RefreshObserving) else None
        self._resets: dict[str, dict[str | None, int]] = {}
        """Server -> model -> token counter resets logged so far."""
        self._session: aiohttp.ClientSession | None = None
        self._reload_lock = asyncio.Lock()
        self.reload_successful = True
        self.reload_success_t: float | None = clock()
        self.kubelet: KubeletRefresher | None = refresher_of(config, self._replace)
        self.discovery = watcher_of(config, self._discovered)
        self.roster = Roster(config.discovery.kubernetes.grace_period, self._forget)
        self.dra: ResourceSliceWatcher | None = slice_watcher_of(config, self._replace)
        self.collector = TokenwattCollector(self.snapshot, config.exposition.derived)
        self.url: str | None = None
        self.stopping = asyncio.Event()
        """`async with`: set to stop `running`."""
        self.running: asyncio.Task[int] | None = None
        """`async with`: `run()`, whose result is the exit code."""

    async def __aenter__(self) -> Daemon:
        """Start `run()` in the task `running`; return once it listens on `url`, as aiohttp's `AppRunner`."""
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.running = asyncio.create_task(self.run(self.stopping, listening.set_result))
        first: list[asyncio.Future[Any]] = [listening, self.running]  # run() may fail before it listens
        try:
            await asyncio.wait(first, timeout=START_STOP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not listening.done():  # run() failed (its error is raised here), a deadline or a cancel
                await self.__aexit__()
        if not listening.done():
            raise TimeoutError(f"the daemon did not listen within {START_STOP_TIMEOUT_S}s")
        return self

    async def __aexit__(self, *_: object) -> None:
        """Stop `running` and wait (within the deadline) for it to end; its errors propagate."""
        assert self.running is not None, "entered first"
        self.stopping.set()
        await asyncio.wait_for(self.running, START_STOP_TIMEOUT_S)

    def snapshot(self) -> tuple[Snapshot, Health]:
        placement = self.accountant.placement
        now = time.monotonic()
        energy = self.energy
        source_up = (
            bool(energy.up) and self.supervisor.healthy(energy.component) and energy.stale_s(now) is None
        )
        health = Health(
            version=__version__,
            source=SourceHealth(
                self.source.name,
                source_up,
                energy.duration_s,
                tuple(sorted(energy.errors.items())),
                self.source.refresh_period_s if isinstance(self.source, RefreshObserving) else None,
                self._unchanged(),
            ),
            targets=tuple(
                TargetHealth(
                    t.server.name,
                    bool(t.up) and self.supervisor.healthy(t.component),
                    t.scrape_duration_s,
                    t.last_success_t,
                    tuple(sorted(t.errors.items())),
                    tuple(g for g in self._gpus if g.uuid in placement.gpus.get(t.server.name, ())),
                    t.energy_read_duration_s,
                )
                for t in self.targets.values()
            ),
            internal_errors=tuple(sorted(self.supervisor.internal_errors.items())),
            reload_successful=self.reload_successful,
            reload_success_t=self.reload_success_t,
            auth_refused=self.auth.refused,
            placement=(
                PlacementHealth(
                    bool(k.health.up) and self.supervisor.healthy(k.component),
                    tuple(sorted(k.health.errors.items())),
                )
                if (k := self.kubelet)
                else None
            ),
            pods=self._pod_labels(),
            discovery=(
                DiscoveryHealth(
                    bool(d.up) and self.supervisor.healthy(d.component),
                    len(d.servers),
                    tuple(sorted(Counter(d.rejected.values()).items())),
                    d.error_counts(),
                )
                if (d := self.discovery)
                else None
            ),
            dra=(
                DraHealth(
                    bool(r.health.up) and self.supervisor.healthy(r.component),
                    tuple(sorted(r.health.errors.items())),
                    len(r.view),
                    len(r.unresolved),
                )
                if (r := self.dra)
                else None
            ),
        )
        return self.accountant.snapshot(self._clock()), health

    def not_ready(self) -> list[str]:
        """What keeps the exporter from being ready, one sentence each; empty when ready."""
        energy, name = self.energy, self.source.name
        problems = []
        if energy.up is None:
            problems.append(f"no reading yet from the energy source {name}")
        elif energy.up is False:
            problems.append(f"the energy source {name} is down ({energy.last_failure})")
        stale = energy.stale_s(time.monotonic())
        if stale is not None:
            problems.append(f"no reading from the energy source {name} for {stale:.1f}s")
        waiting = [t.server.name for t in self.targets.values() if t.up is None]
        if waiting:
            problems.append("no scrape yet of " + ", ".join(waiting))
        if self.discovery is not None and not self.discovery.listed:
            problems.append(f"no list yet of the pods of node {self.discovery.node} from the Kubernetes API")
        problems += self.supervisor.problems()
        if self.supervisor.give_up_reason is not None:
            problems.append(f"giving up: {self.supervisor.give_up_reason}")
        return problems

    async def run(self, stop: asyncio.Event, on_listening: Callable[[str], None] | None = None) -> int:
        """Run until `stop` is set (exit code 0) or a poller keeps crashing (`EXIT_CRASHING`)."""
        runner = await self._start_http()
        if on_listening is not None and self.url is not None:
            on_listening(self.url)
        given_up = asyncio.create_task(self.supervisor.given_up.wait())
        stopped = asyncio.create_task(stop.wait())
        async with aiohttp.ClientSession(auto_decompress=True) as session:
            self._session = session
            self.supervisor.start(self.energy)
            if self.kubelet is not None:
                self.supervisor.start(self.kubelet)
            if self.discovery is not None:
                self.supervisor.start(self.discovery)
            if self.dra is not None:
                self.supervisor.start(self.dra)
            for server in self.config.servers:
                self._start_target(server)
            try:
                await asyncio.wait([given_up, stopped], return_when=asyncio.FIRST_COMPLETED)
            finally:
                given_up.cancel()
                stopped.cancel()
                await self.supervisor.stop_all()
                self.roster.close()
                if self.discovery is not None:
                    await self.discovery.close()
                if self.dra is not None:
                    await self.dra.close()
                await runner.cleanup()
                await self._close_source()
        if self.supervisor.give_up_reason is not None:
            log.error("stopped: a poller keeps crashing", reason=self.supervisor.give_up_reason)
            return EXIT_CRASHING
        log.info("stopped")
        return 0

    async def _close_source(self) -> None:
        """Release the source within `CLOSE_TIMEOUT_S`: a hung library must not keep the process up."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.source.close()
        except TimeoutError:
            log.error("energy source did not close in time: leaving it", source=self.source.name)

    async def _start_http(self) -> web.AppRunner:
        """Serve /metrics and the health endpoints on `config.listen`; sets `self.url`."""
        reload = self.reload_reason if self.enable_lifecycle else None
        app = make_app(
            self.collector,
            self.not_ready,
            self.auth,
            reload,
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
        return runner

    def _start_target(self, server: ServerConfig, replaces: TargetPoller | None = None) -> None:
        assert self._session is not None, "targets start once the HTTP session is open"
        poller = TargetPoller(
            server,
            self._session,
            self.energy,
            self._take_tokens,
            self._clock,
            on_up=self._placement_may_have_changed,
        )
        if replaces is not None:
            poller.carry_over(replaces)
        self.targets[server.name] = poller
        self.supervisor.start(poller)

    def _take_energy(self, samples: list[GpuSample]) -> None:
        if self._activity is not None:
            self.accountant.add_activity(self._activity.activity)
        reset = self.accountant.add_energy(samples)
        passed = {s.gpu for s in samples if s.gpu.uuid in self.accountant.tracks}  # past the gate
        self._place(passed | {g for g, _ in self._unchanged()})
        for gpu in reset:
            log.warning("energy counter reset", gpu=gpu.index, uuid=gpu.uuid)

    def _unchanged(self) -> tuple[tuple[Gpu, float], ...]:
        """How long each GPU past the gate has shown the same values (a refresh-observing source)."""
        if self._refresh is None:
            return ()
        tracked = self.accountant.tracks
        return tuple((g, s) for g, s in self._refresh.unchanged_s(self._clock()) if g.uuid in tracked)

    def _take_tokens(self, samples: list[TokenSample]) -> None:
        """Queue one scrape and settle what it can settle: its own server's queue, nothing else."""
        self.accountant.add_tokens(samples)
        if samples:
            server = samples[0].server
            self.accountant.settle(self._clock(), server)
            self._log_resets((server,))

    def _replace(self) -> None:
        """The kubelet or the DRA slices changed what a pod holds: place every server again now."""
        self._place(set(), force=True)

    def _place(self, gpus: set[Gpu], force: bool = False) -> None:
        """Place every server on the GPUs seen so far; a change takes effect now."""
        seen = tuple(sorted(gpus | set(self._gpus), key=lambda g: g.index))
        if seen == self._gpus and not force:
            return
        self._gpus = seen
        if not seen:
            return  # the kubelet answered before the first energy reading: no GPU to resolve against yet
        migs = self.source.mig_devices if isinstance(self.source, MigReporting) else ()
        servers = self._servers()
        static = {s.name: s.gpus for s in servers if s.pod is None}
        pods = {s.name: _pod_of(s) for s in servers if s.pod is not None or s.pod_uid}
        devices = self.kubelet.devices if self.kubelet else {}
        if self.kubelet is not None and self.dra is not None:  # DRA claims as the GPUs their slices name
            devices, migs = self.dra.resolve(devices, self.kubelet.claims, pods, migs)
        placement, unmatched = place(static, pods, devices, seen, migs)
        before = self.accountant.placement
        if placement == before:
            return
        self.accountant.set_placement(placement)
        for u in unmatched:
            log.error("no such GPU", server=u.server, gpu=u.selector, gpus_seen=[g.index for g in seen])
        for server, held in placement.holdings.items():
            if held != before.holdings.get(server):
                uuids = placement.gpus[server]
                log.info("placement", server=server, gpus=sorted(g.index for g in seen if g.uuid in uuids))

    def _settle(self) -> None:
        """Settle everything (after each periodic energy read): every queue, GPU horizon and expiry."""
        self.accountant.settle(self._clock())
        self._resets = {k: v for k, v in self._resets.items() if k in self.accountant.ledgers}
        self._log_resets(self.accountant.ledgers)

    def _log_resets(self, servers: Iterable[str]) -> None:
        """Log each token counter reset of these servers once (a restarted server may hold new devices)."""
        for name in servers:
            ledger = self.accountant.ledgers.get(name)
            if ledger is None:
                continue
            known, now = self._resets.get(name, {}), {}  # rebuilt: expired models leave it
            for model, m in ledger.models.items():
                resets = m.input.resets + m.output.resets + m.requests.resets
                if resets > known.get(model, 0):
                    log.warning("token counter reset", server=name, model=model)
                    self._placement_may_have_changed()
                now[model] = resets
            self._resets[name] = now

    def _placement_may_have_changed(self) -> None:
        """A server (re)started: its pod may hold other devices now."""
        if self.kubelet is not None:
            self.kubelet.wake()

    async def reload(self) -> bool:
        """Re-read the config and the web config; keep the running ones if either is bad."""
        return await self.reload_reason() is None

    async def reload_reason(self) -> str | None:
        """Reload; None when the new config is applied, else why it was not."""
        async with self._reload_lock:
            try:
                config, web_config = await asyncio.to_thread(self._read_config)
            except (ConfigError, WebConfigError) as e:
                self.reload_successful = False
                problem = "; ".join(e.problems) if isinstance(e, ConfigError) else str(e)
                log.error("config reload failed: keeping the running config", error=problem)
                return problem
            await self._apply(config, web_config)
            self.reload_successful = True
            self.reload_success_t = self._clock()
            return None

    def _read_config(self) -> tuple[Config, WebConfig | None]:
        if self.config_path is None:
            raise ConfigError(["no config file to reload (the daemon was started without one)"])
        config = load_config(self.config_path)
        web_config = load_web_config(config.web_config_file) if config.web_config_file else None
        return config, web_config

    async def _apply(self, new: Config, web_config: WebConfig | None) -> None:
        old = self.config
        restart = sorted(
            k for k in type(new).model_fields if k not in RELOADABLE and getattr(new, k) != getattr(old, k)
        )
        if restart:
            log.warning("config change needs a restart to apply", keys=restart)
        self.config = old.model_copy(update={"servers": new.servers, "web_config_file": new.web_config_file})
        self.auth.users = web_config.users if web_config else {}
        if web_config is not None and web_config.ssl_context is not None:
            log.info("basic_auth_users reloaded; tls_server_config is read at start-up only")
        before = {s.name: s for s in old.servers}
        after = {s.name: s for s in new.servers}
        await self._change_servers(
            [name for name in before if name not in after],
            [s for name, s in after.items() if name not in before],
            [s for name, s in after.items() if name in before and s != before[name]],
        )
        log.info("config reloaded", servers=len(new.servers))

    async def _change_servers(
        self,
        gone: Sequence[str],
        added: Sequence[ServerConfig],
        changed: Sequence[ServerConfig],
        keep_counters: bool = False,
    ) -> None:
        """Stop the pollers of `gone` servers (and, unless `keep_counters`, drop their accounting),
        start those of `added` ones, restart those of `changed` ones; the others run on untouched."""
        for name in gone:
            await self.supervisor.stop(self.targets.pop(name).component)
            if not keep_counters:
                self.accountant.remove_server(name)
            log.info("server removed", server=name)
        for server in added:
            if server.name not in self.accountant.ledgers:  # a pod back within its grace period has one
                self.accountant.add_server(server.name, ModelLimit(server.max_models, server.model_expiry))
        if self.kubelet is not None:  # servers that are pods: the ones running now
            self.kubelet.pods = pods_of(self._servers())
            self.kubelet.wake()
        self._place(set(self._gpus), force=True)
        for server in added:
            self._start_target(server)
            log.info("server added", server=server.name, url=server.url)
        for server in changed:
            old_poller = self.targets[server.name]
            await self.supervisor.stop(old_poller.component)
            self._start_target(server, replaces=old_poller)
            log.info("server changed", server=server.name, url=server.url)

    def _servers(self) -> list[ServerConfig]:
        """The servers scraped now: the config's and the discovered ones."""
        return [*self.config.servers, *(d.server for d in self.roster.current.values())]

    def _pod_labels(self) -> tuple[tuple[str, PodLabels], ...]:
        """The pod labels of every server that is a pod, departed discovered ones included."""
        pods = pods_of(self.config.servers).items()
        static = ((name, PodLabels(pod.namespace, pod.name)) for name, pod in pods)
        return (*static, *self.roster.labels())

    async def _discovered(self, servers: Mapping[str, DiscoveredServer]) -> None:
        """A new view of the node's pods: start, stop and restart pollers as a reload does."""
        async with self._reload_lock:
            change = self.roster.update(servers)
            if not (change.gone or change.added or change.changed):
                return
            await self._change_servers(
                change.gone,
                [d.server for d in change.added],
                [d.server for d in change.changed],
                keep_counters=True,
            )
            for name in change.gone:
                log.info("server's pod gone: its series stay for the grace period", server=name,
                         grace_period_s=self.roster.grace_s)

    def _forget(self, name: str) -> None:
        """A departed pod's grace period is over: its accounting and series go."""
        self.accountant.remove_server(name)
        log.info("server's series removed", server=name)


async def serve_until_signalled(
    run: Callable[[asyncio.Event], Awaitable[int | None]],
    reload: Callable[[], Coroutine[Any, Any, bool]] | None = None,
) -> int:
    """Run `run(stop)` until SIGINT or SIGTERM sets `stop`; its exit code (0 when it gives none).

    SIGHUP calls `reload` (where there is nothing to reload, it is logged and ignored); SIGUSR1 is
    logged and ignored rather than left to its default action, which would end the process.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        if reload is None:
            log.warning("SIGHUP ignored: nothing to reload")
            return
        log.info("SIGHUP: reloading the config")
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.info("SIGUSR1 ignored"))
    try:
        return await run(stop) or 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
