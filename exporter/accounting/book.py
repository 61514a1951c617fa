"""The accountant: energy readings and token scrapes in, one consistent set of figures out.

Pure: no I/O, no clock of its own. The live daemon and `tokenwatt replay` feed it the same way,
so every number it produces can be reproduced from recorded traces.

A scrape waits in a queue until every GPU of its server has a reading at or after the scrape's
instant, so that its energy is interpolated, never extrapolated. A scrape still waiting after the
gap limit is applied without energy (its interval is unmeasured).

Each GPU keeps a `GpuLedger` that classifies its energy, up to a settled horizon, into energy
attributed to servers and unattributed energy. The horizon trails the servers on the GPU (their
latest applied scrape and their queued scrapes), so a server's next interval can still claim its
share; a server silent for longer than `hold_s` no longer holds it back.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.accounting.attribution import Claim, GpuLedger
from exporter.accounting.bands import LoadBands
from exporter.accounting.cardinality import ModelCap, ModelLimit
from exporter.accounting.gate import Gate, Rejections
from exporter.accounting.ledger import Interval, ServerLedger
from exporter.accounting.split import BLOCK_S as DEFAULT_SPLIT_BLOCK_S
from exporter.accounting.split import EnergySplit, fit_energy_split
from exporter.accounting.tariff import Tariff
from exporter.accounting.tracks import EnergyTrack
from exporter.placement import Placement, Share
from exporter.values import Gpu, GpuActivity, GpuSample, ModelTokens, TokenSample, TokenType

DEFAULT_SPLIT_WINDOW_S = 600.0
DEFAULT_HOLD_S = 300.0


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Sums over the measured intervals that ended inside one window (one model, or one band)."""

    window_s: float
    energy_j: float
    input_tokens: float
    output_tokens: float
    idle_energy_j: float = 0.0

    def joules_per_token(self, token_type: TokenType) -> float | None:
        """All-in joules per `output`, `input` or `all` tokens (idle included); None without tokens."""
        return _per_token(self.energy_j, self._tokens(token_type))

    def active_joules_per_token(self, token_type: TokenType) -> float | None:
        """Joules per token over the intervals that did work (idle intervals left out)."""
        return _per_token(self.energy_j - self.idle_energy_j, self._tokens(token_type))

    def _tokens(self, token_type: TokenType) -> float:
        match token_type:
            case TokenType.OUTPUT:
                return self.output_tokens
            case TokenType.INPUT:
                return self.input_tokens
            case TokenType.ALL:
                return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class BandFigures:
    """One load band of one model: cumulative counters and their windows."""

    band: str
    energy_j: float
    input_tokens: float
    output_tokens: float
    windows: tuple[WindowFigures, ...]


@dataclass(frozen=True, slots=True)
class ModelFigures:
    model: str | None
    energy_j: float
    """Energy of the measured intervals, idle included."""
    input_tokens: float
    output_tokens: float
    requests: float | None
    running: float | None
    windows: tuple[WindowFigures, ...]
    idle_energy_j: float = 0.0
    measured_input_tokens: float = 0.0
    """Input tokens of the measured intervals: the denominator that goes with `energy_j`."""
    measured_output_tokens: float = 0.0
    cached_input_tokens: float | None = None
    bands: tuple[BandFigures, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerWindow:
    """A server's energy and time over one window (measured intervals only)."""

    window_s: float
    energy_j: float
    measured_s: float
    idle_energy_j: float
    idle_s: float

    @property
    def power_w(self) -> float | None:
        return self.energy_j / self.measured_s if self.measured_s > 0 else None

    @property
    def idle_power_w(self) -> float | None:
        return self.idle_energy_j / self.idle_s if self.idle_s > 0 else None


@dataclass(frozen=True, slots=True)
class ServerFigures:
    server: str
    idle_energy_j: float
    idle_s: float
    unmeasured_s: float
    models: tuple[ModelFigures, ...]
    energy_j: float = 0.0
    first_t: float | None = None
    last_t: float | None = None
    """Instants of the first and latest applied scrapes."""
    windows: tuple[ServerWindow, ...] = ()
    split: EnergySplit | None = None
    """The prefill/decode/static fit; None while it is ill-conditioned."""


@dataclass(frozen=True, slots=True)
class GpuFigures:
    gpu: Gpu
    energy_j: float
    """Energy measured from the first reading to the latest."""
    power_w: float | None
    t: float
    settled_t: float | None = None
    """Horizon up to which the GPU's energy is classified."""
    settled_energy_j: float = 0.0
    """Energy from the first reading to the horizon: attributed plus unattributed."""
    attributed_j: float = 0.0
    unattributed_j: float = 0.0
    shares: tuple[Share, ...] = ()
    """The servers' shares of the GPU over the stretch up to the latest reading, with their method."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    gpus: tuple[GpuFigures, ...]
    servers: tuple[ServerFigures, ...]
    tariff: Tariff = field(default_factory=Tariff)
    band_labels: tuple[str, ...] = ()
    rejections: Rejections = field(default_factory=Rejections)
    dropped_models: tuple[tuple[str, int], ...] = ()
    """(server, models left out by its `max_models` cap so far, one per model per scrape)."""


@dataclass(frozen=True, slots=True)
class _Scrape:
    t: float
    models: tuple[ModelTokens, ...]


class _BandTotals:
    __slots__ = ("energy_j", "input_tokens", "output_tokens")

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.input_tokens = 0.0
        self.output_tokens = 0.0


class Accountant:
    """Joins energy and token counters for every configured server."""

    def __init__(
        self,
        servers: Sequence[str],
        windows_s: Sequence[float],
        gap_limit_s: float,
        *,
        load_bands: LoadBands | None = None,
        split_window_s: float = DEFAULT_SPLIT_WINDOW_S,
        split_block_s: float = DEFAULT_SPLIT_BLOCK_S,
        tariff: Tariff | None = None,
        hold_s: float = DEFAULT_HOLD_S,
        model_limits: dict[str, ModelLimit] | None = None,
    ) -> None:
        self.windows_s = tuple(windows_s)
        self.gap_limit_s = gap_limit_s
        self.load_bands = load_bands or LoadBands()
        self.split_window_s = split_window_s
        self.split_block_s = split_block_s
        self.tariff = tariff or Tariff()
        self.hold_s = hold_s
        self._retain_s = max((*self.windows_s, split_window_s)) + 2 * gap_limit_s
        self.placement = Placement({s: frozenset() for s in servers})
        self.tracks: dict[str, EnergyTrack] = {}
        self.gpu_ledgers: dict[str, GpuLedger] = {}
        self.shares: dict[str, tuple[Share, ...]] = {}
        """GPU UUID -> the shares of its latest share step."""
        self._activity: dict[str, GpuActivity] = {}
        self.ledgers = {s: ServerLedger(s, self._retain_s) for s in servers}
        self._pending: dict[str, deque[_Scrape]] = {s: deque() for s in servers}
        self._bands: dict[tuple[str, str | None, str], _BandTotals] = defaultdict(_BandTotals)
        self.gate = Gate()
        self.model_cap = ModelCap(servers, model_limits)

    def set_placement(self, placement: Placement) -> None:
        self.placement = placement

    def add_activity(self, activity: Iterable[GpuActivity]) -> None:
        """Record the activity of a read, before its readings: it decides the shares of the stretch
        that ends at each GPU's next reading. A GPU left out has no activity measured (its shares
        fall back to equal or MIG slices): what an earlier read measured does not linger."""
        self._activity = {a.uuid: a for a in activity}
    def add_server(self, server: str, limit: ModelLimit) -> None:
        """Start accounting for a server added by a config reload."""
        self.ledgers[server] = ServerLedger(server, self._retain_s)
        self._pending[server] = deque()
        self.model_cap.add(server, limit)

    def remove_server(self, server: str) -> None:
        """Stop accounting for a server removed by a config reload; its attributed energy stays attributed."""
        del self.ledgers[server], self._pending[server]
        self.model_cap.remove(server)
        self.gate.forget("server", server)
        for key in [k for k in self._bands if k[0] == server]:
            del self._bands[key]

    def add_energy(self, samples: Iterable[GpuSample]) -> list[Gpu]:
        """Record energy readings; return the GPUs whose counter was found reset.

        Each new reading opens a share step from the GPU's previous reading, with the shares the
        current placement gives for the activity known now.
        """
        reset: list[Gpu] = []
        for s in self.gate.energy(samples):
            uuid = s.gpu.uuid
            track = self.tracks.get(uuid)
            if track is None:
                track = self.tracks[uuid] = EnergyTrack(s.gpu)
                self.gpu_ledgers[uuid] = GpuLedger(track)
            previous_t = track.latest_t
            jumps = track.counter.jumps
            if track.add(s):
                reset.append(s.gpu)
            if track.counter.jumps != jumps:
                self.gate.note("gpu", uuid, s.t, "implausible_increase", s.energy_j)
            if previous_t is not None and track.latest_t != previous_t:
                shares = self.placement.shares(uuid, self._activity.get(uuid))
                self.shares[uuid] = shares
                self.gpu_ledgers[uuid].add_step(previous_t, s.t, {x.server: x.share for x in shares})
        return reset

    def add_tokens(self, samples: Sequence[TokenSample]) -> None:
        """Queue one scrape of one server (samples share their server and instant).

        A scrape with a value the gate rejects is dropped whole: a gap in the server's counters.
        """
        if not samples:
            return
        server, t = samples[0].server, samples[0].t
        if not self.gate.tokens(server, t, (s.tokens for s in samples)):
            return
        self._pending[server].append(_Scrape(t, self.model_cap.admit(server, t, (s.tokens for s in samples))))

    def settle(self, now: float) -> list[Interval]:
        """Apply every queued scrape whose energy is known, or whose wait exceeded the gap limit."""
        closed: list[Interval] = []
        for server, queue in self._pending.items():
            uuids = self.placement.gpus.get(server, frozenset())
            ledger = self.ledgers[server]
            while queue:
                scrape = queue[0]
                ready = bool(uuids) and all(
                    uuid in self.tracks and self.tracks[uuid].covers(scrape.t) for uuid in uuids
                )
                if not ready and now - scrape.t <= self.gap_limit_s:
                    break
                queue.popleft()
                energy_j: float | None = None
                claims: list[tuple[str, Claim]] = []
                if ready and ledger.last_t is not None:
                    energy_j, claims = self._measure(server, uuids, ledger.last_t, scrape.t)
                jumps = ledger.jumps
                interval = ledger.record(scrape.t, scrape.models, energy_j)
                if ledger.jumps != jumps:
                    self.gate.note("server", server, scrape.t, "implausible_increase", scrape.t)
                if interval is None:
                    continue
                if interval.energy_j is not None:
                    for uuid, claim in claims:
                        self.gpu_ledgers[uuid].claim(claim)
                    self._count_bands(server, interval)
                closed.append(interval)
        self._settle_gpus(now)
        for server, model in self.model_cap.expire(now):
            self.ledgers[server].models.pop(model, None)
            for key in [k for k in self._bands if k[:2] == (server, model)]:
                del self._bands[key]
        return closed

    def _measure(
        self, server: str, uuids: Iterable[str], t0: float, t1: float
    ) -> tuple[float | None, list[tuple[str, Claim]]]:
        """The server's energy between two of its scrapes, and the claims that attribute it."""
        energy = 0.0
        claims: list[tuple[str, Claim]] = []
        for uuid in uuids:
            gpu_ledger, claim = self.gpu_ledgers[uuid], Claim(server, t0, t1)
            used = self.tracks[uuid].energy_between(t0, t1, self.gap_limit_s)
            if used is None or not gpu_ledger.can_claim(server, t0, t1):
                return None, []
            energy += gpu_ledger.claim_j(claim)
            claims.append((uuid, claim))
        return energy, claims

    def _count_bands(self, server: str, interval: Interval) -> None:
        if interval.idle:
            return
        for part in interval.models:
            if part.running is None or part.energy_j is None:
                continue
            totals = self._bands[(server, part.model, self.load_bands.band_of(part.running))]
            totals.energy_j += part.energy_j
            totals.input_tokens += part.input_tokens
            totals.output_tokens += part.output_tokens

    def _settle_gpus(self, now: float) -> None:
        for uuid, gpu_ledger in self.gpu_ledgers.items():
            horizon = gpu_ledger.track.latest_t
            if horizon is None:
                continue
            for server, uuids in self.placement.gpus.items():
                if uuid not in uuids:
                    continue
                queue, last_t = self._pending[server], self.ledgers[server].last_t
                if queue:
                    horizon = min(horizon, queue[0].t)
                if last_t is not None and now - last_t <= self.hold_s:
                    horizon = min(horizon, last_t)
            gpu_ledger.settle(horizon)
            if gpu_ledger.horizon_t is not None:
                gpu_ledger.track.forget_before(min(gpu_ledger.horizon_t, now - self._retain_s))

    def snapshot(self, now: float) -> Snapshot:
        gpus = tuple(
            GpuFigures(
                gpu=track.gpu,
                energy_j=track.energy_j,
                power_w=track.power_w,
                t=track.latest_t or 0.0,
                settled_t=self.gpu_ledgers[uuid].horizon_t,
                settled_energy_j=self.gpu_ledgers[uuid].settled_j,
                attributed_j=self.gpu_ledgers[uuid].attributed_j,
                unattributed_j=self.gpu_ledgers[uuid].unattributed_j,
                shares=self.shares.get(uuid, ()),
            )
            for uuid, track in sorted(self.tracks.items(), key=lambda kv: kv[1].gpu.index)
        )
        servers = tuple(self._server_figures(ledger, now) for ledger in self.ledgers.values())
        return Snapshot(
            gpus,
            servers,
            self.tariff,
            self.load_bands.labels,
            self.gate.rejections(),
            self.model_cap.dropped(),
        )

    def _server_figures(self, ledger: ServerLedger, now: float) -> ServerFigures:
        per_window = [_window_sums(ledger.intervals, now, w, self.load_bands) for w in self.windows_s]
        models = []
        for model, m in ledger.models.items():
            bands = []
            for label in self.load_bands.labels:
                totals = self._bands.get((ledger.name, model, label))
                if totals is None:
                    continue
                band_windows = tuple(s.bands.get((model, label), _empty(s.window_s)) for s in per_window)
                bands.append(
                    BandFigures(
                        label, totals.energy_j, totals.input_tokens, totals.output_tokens, band_windows
                    )
                )
            models.append(
                ModelFigures(
                    model=model,
                    energy_j=m.energy_j,
                    idle_energy_j=m.idle_energy_j,
                    input_tokens=m.input.total,
                    output_tokens=m.output.total,
                    measured_input_tokens=m.measured_input_tokens,
                    measured_output_tokens=m.measured_output_tokens,
                    cached_input_tokens=m.cached_input.total if m.has_cached_input else None,
                    requests=m.requests.total if m.has_requests else None,
                    running=m.running,
                    windows=tuple(s.models.get(model, _empty(s.window_s)) for s in per_window),
                    bands=tuple(bands),
                )
            )
        return ServerFigures(
            server=ledger.name,
            energy_j=ledger.energy_j,
            idle_energy_j=ledger.idle_energy_j,
            idle_s=ledger.idle_s,
            unmeasured_s=ledger.unmeasured_s,
            first_t=ledger.first_t,
            last_t=ledger.last_t,
            models=tuple(models),
            windows=tuple(s.server for s in per_window),
            split=fit_energy_split(ledger.intervals, now - self.split_window_s, self.split_block_s),
        )


@dataclass(frozen=True, slots=True)
class _WindowSums:
    window_s: float
    server: ServerWindow
    models: dict[str | None, WindowFigures]
    bands: dict[tuple[str | None, str], WindowFigures]


def _window_sums(intervals: Iterable[Interval], now: float, window_s: float, bands: LoadBands) -> _WindowSums:
    """Sum the measured intervals that ended in (now - window, now], per server, model and band."""
    start = now - window_s
    energy = measured = idle_energy = idle_s = 0.0
    models: dict[str | None, list[float]] = {}
    by_band: dict[tuple[str | None, str], list[float]] = {}
    for interval in intervals:
        if interval.energy_j is None or not (start < interval.t_end <= now):
            continue
        energy += interval.energy_j
        measured += interval.duration_s
        if interval.idle:
            idle_energy += interval.energy_j
            idle_s += interval.duration_s
        for part in interval.models:
            part_energy = part.energy_j or 0.0
            sums = models.setdefault(part.model, [0.0, 0.0, 0.0, 0.0])
            sums[0] += part_energy
            sums[1] += part_energy if interval.idle else 0.0
            sums[2] += part.input_tokens
            sums[3] += part.output_tokens
            if not interval.idle and part.running is not None:
                band = by_band.setdefault((part.model, bands.band_of(part.running)), [0.0, 0.0, 0.0, 0.0])
                band[0] += part_energy
                band[2] += part.input_tokens
                band[3] += part.output_tokens
    return _WindowSums(
        window_s,
        ServerWindow(window_s, energy, measured, idle_energy, idle_s),
        {m: _figures(window_s, sums) for m, sums in models.items()},
        {k: _figures(window_s, sums) for k, sums in by_band.items()},
    )


def _figures(window_s: float, sums: list[float]) -> WindowFigures:
    energy, idle_energy, inputs, outputs = sums
    return WindowFigures(window_s, energy, inputs, outputs, idle_energy)


def _empty(window_s: float) -> WindowFigures:
    return WindowFigures(window_s, 0.0, 0.0, 0.0, 0.0)


MIN_RATIO_TOKENS = 1.0
"""A per-token ratio needs at least one whole token in its window: counters that creep up by
fractions of a token would otherwise divide real energy by almost nothing."""


def _per_token(energy_j: float, tokens: float) -> float | None:
    return energy_j / tokens if tokens >= MIN_RATIO_TOKENS else None
