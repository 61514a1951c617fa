"""The accountant: energy readings and token scrapes in, one consistent set of figures out.

Pure: no I/O, no clock of its own. The live daemon and `tokenwatt replay` feed it the same way,
so every number it produces can be reproduced from recorded traces.

A scrape waits in a queue until every GPU of its server has a reading at or after the scrape's
instant, so that its energy is interpolated, never extrapolated. A scrape still waiting after the
gap limit is applied without energy (its interval is unmeasured).

Each GPU keeps a `GpuLedger` that classifies its energy, up to a settled horizon, into energy
attributed to servers and unattributed energy. The horizon trails the servers on the GPU (their
latest applied scrape and their queued scrapes), so a server's next interval can still claim its
share; a server silent for longer than `hold_s` no longer holds it back, and a GPU never keeps
more than `MAX_HELD_READINGS` readings for a lagging server.

Work per scrape does not grow with the number of other servers: `settle(now, server)` applies
that server's queue only; the GPUs' horizons, the gap limit of every other queue and the models'
expiry move in the full `settle(now)` that the daemon runs after each periodic energy read.
Windowed and cumulative figures are kept as intervals close (`totals`), so a snapshot reads sums.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.accounting.attribution import Claim, GpuLedger
from exporter.accounting.bands import LoadBands
from exporter.accounting.cardinality import ModelCap, ModelLimit
from exporter.accounting.figures import (
    BandFigures,
    GpuFigures,
    ModelFigures,
    ServerFigures,
    ServerWindow,
    Snapshot,
    WindowFigures,
)
from exporter.accounting.gate import Gate
from exporter.accounting.ledger import Interval, ServerLedger
from exporter.accounting.split import BLOCK_S as DEFAULT_SPLIT_BLOCK_S
from exporter.accounting.tariff import Tariff
from exporter.accounting.totals import Sums, Totals
from exporter.accounting.tracks import EnergyTrack
from exporter.placement import Placement, Share
from exporter.values import Gpu, GpuActivity, GpuSample, ModelTokens, TokenSample

DEFAULT_SPLIT_WINDOW_S = 600.0
DEFAULT_HOLD_S = 300.0
MAX_HELD_READINGS = 8192
"""The most readings a GPU keeps ahead of its horizon for servers that lag behind (a server silent
for minutes, scraped far slower than the others): beyond it the horizon moves on and the lagging
server's next interval is unmeasured, so memory is bounded by count as well as by `hold_s`."""
_NO_SUMS = Sums()


@dataclass(frozen=True, slots=True)
class _Scrape:
    t: float
    models: tuple[ModelTokens, ...]


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
        self._servers_on: dict[str, tuple[str, ...]] = {}
        """GPU UUID -> the servers placed on it."""
        self._fixed_shares: dict[str, tuple[tuple[Share, ...], Mapping[str, float]]] = {}
        """GPU UUID -> its shares when no activity is measured (they change only with the placement)."""
        self.tracks: dict[str, EnergyTrack] = {}
        self.gpu_ledgers: dict[str, GpuLedger] = {}
        self.shares: dict[str, tuple[Share, ...]] = {}
        """GPU UUID -> the shares of its latest share step."""
        self._activity: dict[str, GpuActivity] = {}
        self.ledgers = {s: self._new_ledger(s) for s in servers}
        self._pending: dict[str, deque[_Scrape]] = {s: deque() for s in servers}
        self.gate = Gate()
        self.model_cap = ModelCap(servers, model_limits)

    def _new_ledger(self, server: str) -> ServerLedger:
        return ServerLedger(
            server, self._retain_s, self.windows_s, self.load_bands, self.split_block_s, self.split_window_s
        )

    def set_placement(self, placement: Placement) -> None:
        self.placement = placement
        on: dict[str, list[str]] = {}
        for server, uuids in placement.gpus.items():
            for uuid in uuids:
                on.setdefault(uuid, []).append(server)
        self._servers_on = {uuid: tuple(servers) for uuid, servers in on.items()}
        self._fixed_shares = {}

    def add_activity(self, activity: Iterable[GpuActivity]) -> None:
        """Record the activity of a read, before its readings: it decides the shares of the stretch
        that ends at each GPU's next reading. A GPU left out has no activity measured (its shares
        fall back to equal or MIG slices): what an earlier read measured does not linger."""
        self._activity = {a.uuid: a for a in activity}

    def add_server(self, server: str, limit: ModelLimit) -> None:
        """Start accounting for a server added by a config reload."""
        self.ledgers[server] = self._new_ledger(server)
        self._pending[server] = deque()
        self.model_cap.add(server, limit)

    def remove_server(self, server: str) -> None:
        """Stop accounting for a server removed by a config reload; its attributed energy stays attributed."""
        del self.ledgers[server], self._pending[server]
        self.model_cap.remove(server)
        self.gate.forget("server", server)

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
                shares, by_server = self._shares(uuid)
                self.shares[uuid] = shares
                self.gpu_ledgers[uuid].add_step(previous_t, s.t, by_server)
        return reset

    def _shares(self, uuid: str) -> tuple[tuple[Share, ...], Mapping[str, float]]:
        """The GPU's shares for the activity known now, and the same as server -> share."""
        activity = self._activity.get(uuid)
        if activity is not None:
            shares = self.placement.shares(uuid, activity)
            return shares, {x.server: x.share for x in shares}
        fixed = self._fixed_shares.get(uuid)
        if fixed is None:
            shares = self.placement.shares(uuid, None)
            fixed = self._fixed_shares[uuid] = (shares, {x.server: x.share for x in shares})
        return fixed

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

    def settle(self, now: float, server: str | None = None) -> list[Interval]:
        """Apply every queued scrape whose energy is known, or whose wait exceeded the gap limit.

        With `server`, only that server's queue: what one scrape can settle, at a cost that does not
        grow with the number of servers. Without, every queue, then every GPU's horizon and the
        models' expiry (the daemon does this after each periodic energy read).
        """
        if server is not None:
            return self._apply(server, now) if server in self._pending else []
        closed: list[Interval] = []
        for name in self._pending:
            closed += self._apply(name, now)
        self._settle_gpus(now)
        for name, model in self.model_cap.expire(now):
            self.ledgers[name].forget(model)
        return closed

    def _apply(self, server: str, now: float) -> list[Interval]:
        queue = self._pending[server]
        uuids = self.placement.gpus.get(server, frozenset())
        ledger = self.ledgers[server]
        closed: list[Interval] = []
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
            closed.append(interval)
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

    def _settle_gpus(self, now: float) -> None:
        for uuid, gpu_ledger in self.gpu_ledgers.items():
            track = gpu_ledger.track
            horizon = track.latest_t
            if horizon is None:
                continue
            for server in self._servers_on.get(uuid, ()):
                queue, ledger = self._pending.get(server), self.ledgers.get(server)
                if queue is None or ledger is None:
                    continue  # removed by a reload the placement has not caught up with
                if queue:
                    horizon = min(horizon, queue[0].t)
                if ledger.last_t is not None and now - ledger.last_t <= self.hold_s:
                    horizon = min(horizon, ledger.last_t)
            gpu_ledger.settle(max(horizon, track.reading_t(-MAX_HELD_READINGS)))
            if gpu_ledger.horizon_t is not None:
                track.forget_before(gpu_ledger.horizon_t)

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
        windows = [(w.window_s, w.advance(now)) for w in ledger.windows]
        total = ledger.total
        models = []
        for model, m in ledger.models.items():
            bands = tuple(
                BandFigures(
                    label,
                    sums.energy_j,
                    sums.input_tokens,
                    sums.output_tokens,
                    tuple(_figures(w, t.bands.get((model, label), _NO_SUMS)) for w, t in windows),
                )
                for label in self.load_bands.labels
                if (sums := total.bands.get((model, label))) is not None
            )
            sums = total.models.get(model, _NO_SUMS)
            models.append(
                ModelFigures(
                    model=model,
                    energy_j=sums.energy_j,
                    idle_energy_j=sums.idle_energy_j,
                    input_tokens=m.input.total,
                    output_tokens=m.output.total,
                    measured_input_tokens=sums.input_tokens,
                    measured_output_tokens=sums.output_tokens,
                    cached_input_tokens=m.cached_input.total if m.has_cached_input else None,
                    requests=m.requests.total if m.has_requests else None,
                    running=m.running,
                    windows=tuple(_figures(w, t.models.get(model, _NO_SUMS)) for w, t in windows),
                    bands=bands,
                )
            )
        return ServerFigures(
            server=ledger.name,
            energy_j=total.energy_j,
            idle_energy_j=total.idle_energy_j,
            idle_s=total.idle_s,
            unmeasured_s=ledger.unmeasured_s,
            first_t=ledger.first_t,
            last_t=ledger.last_t,
            models=tuple(models),
            windows=tuple(_server_window(w, t) for w, t in windows),
            split=ledger.split.fit(now - self.split_window_s),
        )


def _figures(window_s: float, sums: Sums) -> WindowFigures:
    return WindowFigures(window_s, sums.energy_j, sums.input_tokens, sums.output_tokens, sums.idle_energy_j)


def _server_window(window_s: float, totals: Totals) -> ServerWindow:
    return ServerWindow(window_s, totals.energy_j, totals.measured_s, totals.idle_energy_j, totals.idle_s)
