"""The accountant: energy readings and token scrapes in, one consistent set of figures out.

Pure: no I/O, no clock of its own. The live daemon and `tokenwatt replay` feed it the same way,
so every number it produces can be reproduced from recorded traces.

A scrape waits in a queue until every GPU of its server has a reading at or after the scrape's
instant, so that its energy is interpolated, never extrapolated. A scrape still waiting after the
gap limit is applied without energy (its interval is unmeasured).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.accounting.energy import EnergyTrack
from exporter.accounting.ledger import Interval, ServerLedger
from exporter.model import Gpu, GpuSample, ModelTokens, TokenSample
from exporter.placement import Placement


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Sums over the measured intervals that ended inside one window."""

    window_s: float
    energy_j: float
    input_tokens: float
    output_tokens: float

    def joules_per_token(self, token_type: str) -> float | None:
        """Joules per `output`, `input` or `all` tokens; None when no such tokens were counted."""
        tokens = {
            "output": self.output_tokens,
            "input": self.input_tokens,
            "all": self.input_tokens + self.output_tokens,
        }[token_type]
        return self.energy_j / tokens if tokens > 0 else None


@dataclass(frozen=True, slots=True)
class ModelFigures:
    model: str | None
    energy_j: float
    input_tokens: float
    output_tokens: float
    requests: float | None
    running: float | None
    windows: tuple[WindowFigures, ...]


@dataclass(frozen=True, slots=True)
class ServerFigures:
    server: str
    idle_energy_j: float
    idle_s: float
    unmeasured_s: float
    models: tuple[ModelFigures, ...]


@dataclass(frozen=True, slots=True)
class GpuFigures:
    gpu: Gpu
    energy_j: float
    power_w: float | None
    t: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    gpus: tuple[GpuFigures, ...]
    servers: tuple[ServerFigures, ...]


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
    ) -> None:
        self.windows_s = tuple(windows_s)
        self.gap_limit_s = gap_limit_s
        retain_s = max(self.windows_s, default=0.0) + 2 * gap_limit_s
        self._retain_s = retain_s
        self.placement = Placement({s: frozenset() for s in servers})
        self.tracks: dict[str, EnergyTrack] = {}
        self.ledgers = {s: ServerLedger(s, retain_s) for s in servers}
        self._pending: dict[str, deque[_Scrape]] = {s: deque() for s in servers}

    def set_placement(self, placement: Placement) -> None:
        self.placement = placement

    def add_energy(self, samples: Iterable[GpuSample]) -> list[Gpu]:
        """Record energy readings; return the GPUs whose counter was found reset."""
        reset: list[Gpu] = []
        for s in samples:
            track = self.tracks.get(s.gpu.uuid)
            if track is None:
                track = self.tracks[s.gpu.uuid] = EnergyTrack(s.gpu, self._retain_s)
            if track.add(s):
                reset.append(s.gpu)
        return reset

    def add_tokens(self, samples: Sequence[TokenSample]) -> None:
        """Queue one scrape of one server (samples share their server and instant)."""
        if not samples:
            return
        server, t = samples[0].server, samples[0].t
        self._pending[server].append(_Scrape(t, tuple(s.tokens for s in samples)))

    def settle(self, now: float) -> list[Interval]:
        """Apply every queued scrape whose energy is known, or whose wait exceeded the gap limit."""
        closed: list[Interval] = []
        for server, queue in self._pending.items():
            uuids = self.placement.gpus.get(server, frozenset())
            while queue:
                scrape = queue[0]
                ready = bool(uuids) and all(
                    uuid in self.tracks and self.tracks[uuid].covers(scrape.t) for uuid in uuids
                )
                if not ready and now - scrape.t <= self.gap_limit_s:
                    break
                queue.popleft()
                interval = self.ledgers[server].record(
                    scrape.t,
                    scrape.models,
                    self._energy_at(uuids, scrape.t) if ready else None,
                    {uuid: self.placement.share(server, uuid) for uuid in uuids},
                )
                if interval is not None:
                    closed.append(interval)
        return closed

    def _energy_at(self, uuids: Iterable[str], t: float) -> dict[str, float] | None:
        energy: dict[str, float] = {}
        for uuid in uuids:
            e = self.tracks[uuid].energy_at(t, self.gap_limit_s)
            if e is None:
                return None
            energy[uuid] = e
        return energy

    def snapshot(self, now: float) -> Snapshot:
        gpus = tuple(
            GpuFigures(track.gpu, track.energy_j, track.power_w, track.latest_t or 0.0)
            for track in sorted(self.tracks.values(), key=lambda tr: tr.gpu.index)
        )
        return Snapshot(gpus, tuple(self._server_figures(ledger, now) for ledger in self.ledgers.values()))

    def _server_figures(self, ledger: ServerLedger, now: float) -> ServerFigures:
        models = []
        for model, m in ledger.models.items():
            windows = tuple(_window(ledger.intervals, model, now, w) for w in self.windows_s)
            models.append(
                ModelFigures(
                    model=model,
                    energy_j=m.energy_j,
                    input_tokens=m.input.total,
                    output_tokens=m.output.total,
                    requests=m.requests.total if m.has_requests else None,
                    running=m.running,
                    windows=windows,
                )
            )
        return ServerFigures(
            ledger.name, ledger.idle_energy_j, ledger.idle_s, ledger.unmeasured_s, tuple(models)
        )


def _window(intervals: Iterable[Interval], model: str | None, now: float, window_s: float) -> WindowFigures:
    energy = inputs = outputs = 0.0
    start = now - window_s
    for interval in intervals:
        if interval.energy_j is None or not (start < interval.t_end <= now):
            continue
        for part in interval.models:
            if part.model == model and part.energy_j is not None:
                energy += part.energy_j
                inputs += part.input_tokens
                outputs += part.output_tokens
    return WindowFigures(window_s, energy, inputs, outputs)
