"""`tokenwatt replay`: the live accounting, run offline over recorded traces.

The energy file has the columns `timestamp,gpu,energy_joules` (cumulative joules per GPU; resets
allowed); the tokens file `timestamp,server,model,input_tokens,output_tokens` (cumulative; resets
allowed) and optionally `cached_input_tokens`, `running` and `requests`. Timestamps are Unix
seconds. The rows of one server that share a timestamp form one scrape.

Readings and scrapes are fed to the same `Accountant` the daemon uses, in time order, settling
after each as the daemon would, so a replay reproduces the live numbers; the results are the
accountant's figures, and its ratio rule (`figures.per_token`) divides them. The gap limit is the
daemon's default for the energy interval (`exporter.energy.gap_limit_s`); the interval is taken as
the 90th percentile of the spacing of the readings, because the daemon's extra readings around
scrapes are milliseconds apart and would make a median far shorter than the periodic interval.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

from exporter.accounting.book import Accountant
from exporter.accounting.figures import ModelFigures, ServerFigures, per_token
from exporter.config import EnergyConfig
from exporter.energy import gap_limit_s
from exporter.placement import Holding, Placement
from exporter.values import Gpu, GpuSample, ModelTokens, TokenSample

ENERGY_COLUMNS = ("timestamp", "gpu", "energy_joules")
TOKEN_COLUMNS = ("timestamp", "server", "model", "input_tokens", "output_tokens")
OPTIONAL_TOKEN_COLUMNS = ("cached_input_tokens", "running", "requests")


class ReplayError(Exception):
    """Bad input: names the file, the line (1 is the header) and the problem."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class EnergySplitFigures:
    prefill_joules_per_token: float
    decode_joules_per_token: float
    static_power_watts: float
    r_squared: float
    samples: int


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One server and model over the span from the server's first to its last token sample."""

    server: str
    model: str | None
    first_timestamp: float | None
    last_timestamp: float | None
    energy_joules: float
    """Energy of the measured intervals, idle included."""
    input_tokens: float
    output_tokens: float
    cached_input_tokens: float | None
    requests: float | None
    joules_per_output_token: float | None
    joules_per_input_token: float | None
    joules_per_token: float | None
    active_joules_per_output_token: float | None
    idle_energy_joules: float
    server_idle_seconds: float
    server_unmeasured_seconds: float
    energy_split: EnergySplitFigures | None
    """The server's prefill/decode/static fit over the whole span; None when ill-conditioned."""


def read_energy(path: Path) -> list[GpuSample]:
    """Parse an energy trace; raise `ReplayError` on the first bad row."""
    samples: list[GpuSample] = []
    gpus: dict[str, Gpu] = {}
    last_t: dict[str, tuple[float, int]] = {}
    for line, row in _rows(path, ENERGY_COLUMNS, ()):
        t = _number(path, line, row, "timestamp")
        name = _text(path, line, row, "gpu")
        joules = _number(path, line, row, "energy_joules")
        if joules < 0:
            raise ReplayError(path, line, f"column energy_joules: {joules!r} is negative")
        _check_order(path, line, f"gpu {name}", t, last_t.get(name))
        last_t[name] = (t, line)
        gpu = gpus.get(name)
        if gpu is None:
            index = int(name) if name.isdigit() else len(gpus)
            gpu = gpus[name] = Gpu(index, name, "replayed")
        samples.append(GpuSample(gpu, t, joules, None))
    return samples


def read_tokens(path: Path) -> list[TokenSample]:
    """Parse a token trace; raise `ReplayError` on the first bad row."""
    samples: list[TokenSample] = []
    last_t: dict[tuple[str, str | None], tuple[float, int]] = {}
    for line, row in _rows(path, TOKEN_COLUMNS, OPTIONAL_TOKEN_COLUMNS):
        t = _number(path, line, row, "timestamp")
        server = _text(path, line, row, "server")
        model = row.get("model") or None
        _check_order(path, line, f"server {server} model {model}", t, last_t.get((server, model)))
        last_t[(server, model)] = (t, line)
        tokens = ModelTokens(
            model=model,
            input_tokens=_counter(path, line, row, "input_tokens"),
            output_tokens=_counter(path, line, row, "output_tokens"),
            requests=_optional(path, line, row, "requests"),
            running=_optional(path, line, row, "running"),
            cached_input_tokens=_optional(path, line, row, "cached_input_tokens"),
        )
        samples.append(TokenSample(server, t, tokens))
    return samples


def parse_map(values: Sequence[str]) -> dict[str, list[str]]:
    """`SERVER=GPU[,GPU…]` arguments to the GPUs of each server."""
    mapping: dict[str, list[str]] = {}
    for value in values:
        server, sep, gpus = value.partition("=")
        names = [g.strip() for g in gpus.split(",") if g.strip()]
        if not sep or not server or not names:
            raise ValueError(f"--map {value!r}: expected SERVER=GPU[,GPU...], e.g. llama=0,1")
        if server in mapping:
            raise ValueError(f"--map {value!r}: server {server} is mapped twice")
        mapping[server] = names
    return mapping


def replay_traces(
    energy: Sequence[GpuSample],
    tokens: Sequence[TokenSample],
    mapping: Mapping[str, Sequence[str]],
    energy_path: Path | str = "energy",
    tokens_path: Path | str = "tokens",
) -> list[ReplayResult]:
    """Account the traces; a server without a mapping uses every GPU of the energy trace."""
    gpus = {s.gpu.uuid for s in energy}
    servers = list(dict.fromkeys(s.server for s in tokens))
    for server, names in mapping.items():
        if server not in servers:
            raise ReplayError(tokens_path, None, f"--map names server {server!r}, which has no token samples")
        missing = [n for n in names if n not in gpus]
        if missing:
            raise ReplayError(
                energy_path, None, f"--map {server}= names GPU {missing[0]!r}, which has no readings"
            )
    span = _span(energy, tokens)
    gap_limit = _gap_limit(energy)
    acc = Accountant(servers, [], gap_limit, split_window_s=span + 1.0, hold_s=math.inf)
    acc.set_placement(Placement({s: frozenset(Holding(u) for u in mapping.get(s, gpus)) for s in servers}))
    for now, event in _timeline(energy, tokens):
        if isinstance(event, list):
            acc.add_tokens(event)
        else:
            acc.add_energy([event])
        acc.settle(now)
    end = max([s.t for s in energy] + [s.t for s in tokens], default=0.0)
    acc.settle(end + gap_limit + 1.0)
    snap = acc.snapshot(end + gap_limit + 1.0)
    return [_result(s, m) for s in snap.servers for m in s.models]


def _timeline(
    energy: Sequence[GpuSample], tokens: Sequence[TokenSample]
) -> Iterator[tuple[float, GpuSample | list[TokenSample]]]:
    """Readings and scrapes in time order (a reading first where they share an instant)."""
    scrapes: dict[tuple[str, float], list[TokenSample]] = defaultdict(list)
    for s in tokens:
        scrapes[(s.server, s.t)].append(s)
    events: list[tuple[float, int, int, GpuSample | list[TokenSample]]] = [
        (s.t, 0, i, s) for i, s in enumerate(energy)
    ]
    events += [(t, 1, i, group) for i, ((_, t), group) in enumerate(scrapes.items())]
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    for t, _, _, event in events:
        yield t, event


def _gap_limit(energy: Sequence[GpuSample]) -> float:
    by_gpu: dict[str, list[float]] = defaultdict(list)
    for s in energy:
        by_gpu[s.gpu.uuid].append(s.t)
    spacings = [_p90([b - a for a, b in pairwise(ts)]) for ts in by_gpu.values() if len(ts) > 1]
    # model_construct: the interval is a measured number of seconds, not a duration string to parse
    return gap_limit_s(EnergyConfig.model_construct(interval=max(spacings))) if spacings else math.inf


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


def _span(energy: Sequence[GpuSample], tokens: Sequence[TokenSample]) -> float:
    times = [s.t for s in energy] + [s.t for s in tokens]
    return max(times) - min(times) if times else 0.0


def _result(server: ServerFigures, m: ModelFigures) -> ReplayResult:
    split = server.split
    measured = m.measured_input_tokens + m.measured_output_tokens
    return ReplayResult(
        server=server.server,
        model=m.model,
        first_timestamp=server.first_t,
        last_timestamp=server.last_t,
        energy_joules=m.energy_j,
        input_tokens=m.input_tokens,
        output_tokens=m.output_tokens,
        cached_input_tokens=m.cached_input_tokens,
        requests=m.requests,
        joules_per_output_token=per_token(m.energy_j, m.measured_output_tokens),
        joules_per_input_token=per_token(m.energy_j, m.measured_input_tokens),
        joules_per_token=per_token(m.energy_j, measured),
        active_joules_per_output_token=per_token(m.energy_j - m.idle_energy_j, m.measured_output_tokens),
        idle_energy_joules=m.idle_energy_j,
        server_idle_seconds=server.idle_s,
        server_unmeasured_seconds=server.unmeasured_s,
        energy_split=None
        if split is None
        else EnergySplitFigures(
            split.prefill_j_per_token,
            split.decode_j_per_token,
            split.static_w,
            split.r_squared,
            split.samples,
        ),
    )


def _rows(
    path: Path, required: Sequence[str], optional: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReplayError(path, None, f"cannot read the file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ReplayError(path, None, "not UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise ReplayError(
            path,
            1,
            f"missing column {missing[0]}; the header must have {','.join(required)}"
            f" (got {','.join(header)})",
        )
    known = set(required) | set(optional)
    unknown = [h for h in header if h not in known]
    if unknown:
        raise ReplayError(
            path, 1, f"unknown column {unknown[0]}; allowed: {', '.join((*required, *optional))}"
        )
    for number, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ReplayError(path, number, f"{len(cells)} cells, but the header has {len(header)} columns")
        yield number, {h: c.strip() for h, c in zip(header, cells, strict=True)}


def _text(path: Path, line: int, row: Mapping[str, str], column: str) -> str:
    value = row[column]
    if not value:
        raise ReplayError(path, line, f"column {column}: empty")
    return value


def _number(path: Path, line: int, row: Mapping[str, str], column: str) -> float:
    value = _text(path, line, row, column)
    try:
        number = float(value)
    except ValueError:
        raise ReplayError(path, line, f"column {column}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ReplayError(path, line, f"column {column}: {value!r} is not a finite number")
    return number


def _counter(path: Path, line: int, row: Mapping[str, str], column: str) -> float:
    value = _number(path, line, row, column)
    if value < 0:
        raise ReplayError(path, line, f"column {column}: {value!r} is negative")
    return value


def _optional(path: Path, line: int, row: Mapping[str, str], column: str) -> float | None:
    return _counter(path, line, row, column) if row.get(column) else None


def _check_order(path: Path, line: int, series: str, t: float, last: tuple[float, int] | None) -> None:
    if last is not None and t <= last[0]:
        verb = "goes backwards" if t < last[0] else "repeats"
        raise ReplayError(path, line, f"timestamp {t:g} {verb} for {series} (line {last[1]} has {last[0]:g})")


def results_json(results: Sequence[ReplayResult]) -> str:
    """A JSON array with one object per server and model."""
    return json.dumps([asdict(r) for r in results], indent=2)


def results_table(results: Sequence[ReplayResult]) -> str:
    header = ("server", "model", "energy_J", "input", "output", "J/output", "J/token", "idle_J")
    rows = [header] + [
        (
            r.server,
            r.model if r.model is not None else "(none)",
            f"{r.energy_joules:.1f}",
            f"{r.input_tokens:.0f}",
            f"{r.output_tokens:.0f}",
            _fixed(r.joules_per_output_token),
            _fixed(r.joules_per_token),
            f"{r.idle_energy_joules:.1f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
