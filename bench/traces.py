"""Synthetic traces with known ground truth, for the accuracy report.

A request-level simulation on a 100 ms grid. Requests arrive (Poisson, at a rate that follows the
scenario's load pattern), are prefilled at a fixed speed and then decode one token stream each.
Each GPU's power is its static power plus, for every server on it, `prefill_j` joules per computed
prompt token and `decode_j` per generated token, spread evenly over the server's GPUs. Power is
constant within a grid step, so cumulative energy and tokens are exact at any instant: that is
the ground truth.

On a GPU with several tenants (servers sharing it whole, MIG instances, a tenant tokenwatt does not
serve), a tenant's activity is its power above static over its `full_w` (the power it draws when it
keeps the whole GPU busy; tenants differ in it, as real workloads differ in power per busy second),
and its true energy is its own work plus the static power split by activity at every step (with
nobody active: equally, or by slices of seven on MIG). Activity is measured the way NVML samples
and DCGM ratios are: a whole percent per 100 ms step.

From the truth the generator derives what each observer would see:
- tokenwatt: each server's metrics page scraped every second with up to 300 ms of jitter; the
  counters are read at an unknown instant inside a 5-40 ms request whose midpoint is the recorded
  instant. Energy is read every second per GPU (small timing noise) and, for sources whose every
  read asks the hardware (NVML, AMD), also right before each scrape is sent and right after its
  response arrives, as the daemon does; a source that refreshes on its own schedule (DCGM
  watches) gives the periodic reads only.
- the usual PromQL recipe: dcgm-exporter refreshing its energy value every 30 s, Prometheus
  scraping it and the server every 15 s.
Counter resets on both sides (server restarts with downtime, energy counters restarting from zero)
and completion-time token counters (SGLang's `*_tokens_total`) are part of some scenarios.

`python bench/traces.py SCENARIO DIR [--periodic-only]` writes the tokenwatt view as `E.csv` and
`T.csv` for `tokenwatt replay` (with energy read around every scrape unless `--periodic-only`).
"""

from __future__ import annotations

import bisect
import csv
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

STEP_S = 0.1
PREFILL_TOKENS_PER_S = 16_000.0
DECODE_TOKENS_PER_S = 40.0


@dataclass(frozen=True)
class Load:
    """Arrival rate and request shape at one instant."""

    requests_per_s: float
    prompt_mean: float
    output_mean: float
    cached_fraction: float = 0.0


@dataclass(frozen=True)
class ServerSpec:
    name: str
    gpus: tuple[int, ...]
    prefill_j: float
    """True joules per computed prompt token (whole server)."""
    decode_j: float
    """True joules per generated token (whole server)."""
    load: Callable[[float], Load]
    restarts: tuple[tuple[float, float], ...] = ()
    """(crash instant, downtime): arrivals stop 60 s before, counters restart from zero after."""
    completion_counters: bool = False
    """The server's plain token counters move only when a request completes (SGLang)."""
    full_w: float = 300.0
    """Power above static when the server's work keeps a whole GPU busy (its activity's scale)."""
    mig: tuple[int, int] | None = None
    """(GPU instance ID, compute slices) when the server holds a MIG instance of its GPU."""
    scraped: bool = True
    """False for a tenant tokenwatt does not serve (its energy must stay unattributed)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    gpus: int
    static_w: float
    servers: tuple[ServerSpec, ...]
    energy_resets: tuple[tuple[int, float], ...] = ()
    """(GPU, instant) where the GPU's energy counter restarts from zero."""
    seed: int = 1


@dataclass
class Series:
    """A quantity that is piecewise linear on the grid: its cumulative value at every step."""

    values: list[float] = field(default_factory=list)

    def at(self, t: float) -> float:
        k = t / STEP_S
        i = min(max(int(k), 0), len(self.values) - 2)
        frac = min(max(k - i, 0.0), 1.0)
        return self.values[i] + (self.values[i + 1] - self.values[i]) * frac


@dataclass
class StepSeries:
    """A counter that jumps at given instants (completion-time counters)."""

    times: list[float]
    totals: list[float]

    def at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t)
        return self.totals[i - 1] if i else 0.0


@dataclass
class ServerTruth:
    spec: ServerSpec
    computed_input: Series
    cached_input: Series
    output: Series
    running: list[int]
    completed_input: StepSeries
    completed_output: StepSeries
    down: list[tuple[float, float]]

    def is_down(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.down)

    def epoch(self, t: float) -> float:
        """The start of the server's current process: its counters count from there."""
        starts = [b for _, b in self.down if b <= t]
        return max(starts) if starts else 0.0

    def output_count(self, t: float) -> float:
        """Generated tokens as whole tokens: each process counts from zero, a token at a time."""
        epochs = [0.0] + [b for _, b in self.down]
        ends = [a for a, _ in self.down] + [math.inf]
        count = 0.0
        for start, end in zip(epochs, ends, strict=True):
            if start > t:
                break
            count += math.floor(self.output.at(min(t, end)) - self.output.at(start))
        return count

    def running_at(self, t: float) -> int:
        return self.running[min(int(t / STEP_S), len(self.running) - 1)]


@dataclass
class Truth:
    scenario: Scenario
    gpu_energy: list[Series]
    servers: dict[str, ServerTruth]
    tenant_energy: dict[tuple[int, str], Series] = field(default_factory=dict)
    """(GPU, server) -> the server's true energy on that GPU."""
    busy: dict[tuple[int, str], Series] = field(default_factory=dict)
    """(GPU, server) -> cumulative measured activity (busy seconds of the whole GPU)."""

    def shares(self, server: str) -> dict[int, float]:
        """Equal shares of the server's GPUs (the fit's reference for the static power)."""
        spec = self.servers[server].spec
        return {g: 1.0 / sum(1 for s in self.scenario.servers if g in s.gpus) for g in spec.gpus}

    def server_energy(self, server: str, t0: float, t1: float) -> float:
        """The server's true energy from t0 to t1 (its work, and static power by activity)."""
        return sum(
            self.tenant_energy[(g, server)].at(t1) - self.tenant_energy[(g, server)].at(t0)
            for g in self.servers[server].spec.gpus
        )

    def output_tokens(self, server: str, t0: float, t1: float) -> float:
        """Tokens generated between t0 and t1 (whole tokens, as the server's counter counts them)."""
        server_truth = self.servers[server]
        return server_truth.output_count(t1) - server_truth.output_count(t0)


def simulate(scenario: Scenario) -> Truth:
    rng = random.Random(scenario.seed)
    steps = int(scenario.duration_s / STEP_S)
    power = [[scenario.static_w] * steps for _ in range(scenario.gpus)]
    work: dict[tuple[int, str], list[float]] = {}
    servers: dict[str, ServerTruth] = {}
    for spec in scenario.servers:
        d_prefill = [0.0] * (steps + 1)
        d_cached = [0.0] * (steps + 1)
        d_decode = [0.0] * (steps + 1)
        d_running = [0] * (steps + 1)
        completions: list[tuple[float, float, float]] = []
        quiet = [(crash - 60.0, crash + downtime) for crash, downtime in spec.restarts]
        for k in range(steps):
            t = k * STEP_S
            if any(a <= t < b for a, b in quiet):
                continue
            load = spec.load(t)
            for _ in range(_poisson(rng, load.requests_per_s * STEP_S)):
                prompt = min(int(rng.expovariate(1 / load.prompt_mean)) + 1, int(4 * load.prompt_mean))
                output = min(int(rng.expovariate(1 / load.output_mean)) + 1, int(4 * load.output_mean))
                cached = int(prompt * load.cached_fraction * rng.random())
                computed = prompt - cached
                prefill_steps = max(1, math.ceil(computed / PREFILL_TOKENS_PER_S / STEP_S))
                decode_steps = max(1, math.ceil(output / DECODE_TOKENS_PER_S / STEP_S))
                end = min(k + prefill_steps + decode_steps, steps)
                _spread(d_prefill, k, k + prefill_steps, computed / (prefill_steps * STEP_S))
                _spread(d_cached, k, k + prefill_steps, cached / (prefill_steps * STEP_S))
                _spread(d_decode, k + prefill_steps, end, output / (decode_steps * STEP_S))
                d_running[k] += 1
                d_running[end] -= 1
                if end < steps:
                    completions.append((end * STEP_S, float(prompt), float(output)))
        prefill_rate = _accumulate(d_prefill, steps)
        cached_rate = _accumulate(d_cached, steps)
        decode_rate = _accumulate(d_decode, steps)
        running = [int(r) for r in _accumulate([float(x) for x in d_running], steps)]
        for g in spec.gpus:
            row = power[g]
            mine = work[(g, spec.name)] = [0.0] * steps
            for k in range(steps):
                mine[k] = (spec.prefill_j * prefill_rate[k] + spec.decode_j * decode_rate[k]) / len(spec.gpus)
                row[k] += mine[k]
        completions.sort()
        times = [c[0] for c in completions]
        servers[spec.name] = ServerTruth(
            spec=spec,
            computed_input=_integrate(prefill_rate),
            cached_input=_integrate(cached_rate),
            output=_integrate(decode_rate),
            running=running,
            completed_input=StepSeries(times, _cumsum([c[1] for c in completions])),
            completed_output=StepSeries(times, _cumsum([c[2] for c in completions])),
            down=[(crash, crash + downtime) for crash, downtime in spec.restarts],
        )
    truth = Truth(scenario, [_integrate(row) for row in power], servers)
    for g in range(scenario.gpus):
        tenants = [s for s in scenario.servers if g in s.gpus]
        activity = {s.name: [w / s.full_w for w in work[(g, s.name)]] for s in tenants}
        idle_share = {s.name: s.mig[1] / 7 if s.mig else 1 / len(tenants) for s in tenants}
        for s in tenants:
            own, busy = [], []
            for k in range(steps):
                total = sum(a[k] for a in activity.values())
                share = activity[s.name][k] / total if total > 0 else idle_share[s.name]
                own.append(work[(g, s.name)][k] + scenario.static_w * share)
                busy.append(round(100 * activity[s.name][k]) / 100)
            truth.tenant_energy[(g, s.name)] = _integrate(own)
            truth.busy[(g, s.name)] = _integrate(busy)
    return truth


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _spread(delta: list[float], start: int, end: int, rate: float) -> None:
    if end > start:
        delta[start] += rate
        delta[min(end, len(delta) - 1)] -= rate


def _accumulate(delta: list[float], steps: int) -> list[float]:
    out, level = [], 0.0
    for k in range(steps):
        level += delta[k]
        out.append(max(level, 0.0))
    return out


def _integrate(rate: list[float]) -> Series:
    values, total = [0.0], 0.0
    for r in rate:
        total += r * STEP_S
        values.append(total)
    return Series(values)


def _cumsum(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


# --- what the observers see ---------------------------------------------------------------


@dataclass(frozen=True)
class EnergyReading:
    t: float
    gpu: int
    joules: float
    """The counter as the source reports it: arbitrary origin, restarts from zero on a reset."""


@dataclass(frozen=True)
class Scrape:
    t: float
    """The recorded instant (midpoint of the request)."""
    sent: float
    """When the request was sent."""
    arrival: float
    """When the response was complete (when the sample can be used)."""
    server: str
    input_tokens: float
    output_tokens: float
    cached_input_tokens: float
    running: float


def energy_counter(truth: Truth, gpu: int, t: float) -> float:
    """The raw counter value: a large origin until the first reset, then energy since the reset."""
    resets = [r for g, r in truth.scenario.energy_resets if g == gpu and r <= t]
    e = truth.gpu_energy[gpu]
    if resets:
        return e.at(t) - e.at(max(resets))
    return 5.0e8 + 1.0e7 * gpu + e.at(t)


def tokenwatt_energy(
    truth: Truth, rng: random.Random, interval_s: float = 1.0, beside: Sequence[Scrape] = ()
) -> list[EnergyReading]:
    """Periodic readings of every GPU, plus readings of every GPU just before and after `beside`.

    The daemon reads the whole source around each successful scrape when the source reads fresh:
    right before sending the request and right after the response, so the scrape's recorded
    instant (the midpoint) lies between readings one request duration apart.
    """
    readings = []
    for g in range(truth.scenario.gpus):
        offset = rng.uniform(0, interval_s)
        t = offset
        while t < truth.scenario.duration_s - 1:
            at = t + rng.uniform(-0.02, 0.02)
            readings.append(_reading(truth, g, at))
            t += interval_s
    for s in beside:
        for at in (s.sent, s.arrival):
            readings.extend(_reading(truth, g, at) for g in range(truth.scenario.gpus))
    readings.sort(key=lambda r: r.t)
    return readings


def _reading(truth: Truth, gpu: int, t: float) -> EnergyReading:
    return EnergyReading(t, gpu, round(energy_counter(truth, gpu, t), 3))


def token_counters(server: ServerTruth, t: float, completion: bool) -> tuple[float, float, float]:
    """Input (cached included), output and cached counters as the server reports them at `t`."""
    t0 = server.epoch(t)
    if completion:
        return (
            math.floor(server.completed_input.at(t) - server.completed_input.at(t0)),
            math.floor(server.completed_output.at(t) - server.completed_output.at(t0)),
            0.0,
        )
    computed = server.computed_input.at(t) - server.computed_input.at(t0)
    cached = server.cached_input.at(t) - server.cached_input.at(t0)
    output = server.output.at(t) - server.output.at(t0)
    return math.floor(computed + cached), math.floor(output), math.floor(cached)


def tokenwatt_scrapes(
    truth: Truth,
    rng: random.Random,
    completion: bool = False,
    interval_s: float = 1.0,
    request_s: tuple[float, float] = (0.005, 0.040),
) -> list[Scrape]:
    scrapes = []
    for name, server in truth.servers.items():
        if not server.spec.scraped:
            continue
        nominal = rng.uniform(0, interval_s)
        while nominal < truth.scenario.duration_s - 2:
            start = max(0.0, nominal + rng.uniform(-0.3, 0.3))
            duration = rng.uniform(*request_s)
            read_at = start + rng.uniform(0, duration)
            nominal += interval_s
            if server.is_down(read_at):
                continue
            inputs, outputs, cached = token_counters(server, read_at, completion)
            scrapes.append(
                Scrape(
                    start + duration / 2,
                    start,
                    start + duration,
                    name,
                    inputs,
                    outputs,
                    cached,
                    server.running_at(read_at),
                )
            )
    scrapes.sort(key=lambda s: s.arrival)
    return scrapes


def write_csv(truth: Truth, directory: Path, seed: int = 7, periodic_only: bool = False) -> None:
    """Write the tokenwatt view of a scenario as `E.csv` and `T.csv` for `tokenwatt replay`.

    Energy is read around every scrape too, as the daemon does with NVML or AMD, unless
    `periodic_only` (what a DCGM source gives).
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    scrapes = tokenwatt_scrapes(truth, rng)
    with (directory / "E.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "gpu", "energy_joules"])
        for r in tokenwatt_energy(truth, rng, beside=() if periodic_only else scrapes):
            w.writerow([f"{r.t:.4f}", r.gpu, f"{r.joules:.3f}"])
    with (directory / "T.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "timestamp",
                "server",
                "model",
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "running",
            ]
        )
        for s in sorted(scrapes, key=lambda s: (s.server, s.t)):
            w.writerow(
                [
                    f"{s.t:.4f}",
                    s.server,
                    "model",
                    int(s.input_tokens),
                    int(s.output_tokens),
                    int(s.cached_input_tokens),
                    int(s.running),
                ]
            )


# --- scenarios ------------------------------------------------------------------------------


def _steady(t: float) -> Load:
    return Load(6.0, 800.0, 200.0)


def _segments(seed: int, duration_s: float, idle: bool) -> Callable[[float], Load]:
    """Bursty traffic: segments of 5-60 s with their own rate and request mix."""
    rng = random.Random(seed)
    starts, loads = [], []
    t = 0.0
    while t < duration_s:
        starts.append(t)
        if idle and rng.random() < 0.15:
            loads.append(Load(0.0, 1.0, 1.0))
            t += rng.uniform(60, 240)
            continue
        burst = rng.random() < 0.4
        rate = rng.uniform(8, 25) if burst else rng.uniform(0.3, 3)
        loads.append(Load(rate, rng.uniform(100, 4000), rng.uniform(30, 400), rng.choice([0.0, 0.0, 0.5])))
        t += rng.uniform(5, 60)

    def load(t: float) -> Load:
        return loads[bisect.bisect_right(starts, t) - 1]

    return load


def _long_requests(seed: int, duration_s: float) -> Callable[[float], Load]:
    base = _segments(seed, duration_s, idle=False)

    def load(t: float) -> Load:
        b = base(t)
        return Load(b.requests_per_s / 3, b.prompt_mean, b.output_mean * 3)

    return load


DURATION_S = 1800.0

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "steady",
        "one server on 2 GPUs, constant arrival rate and request mix",
        DURATION_S,
        2,
        90.0,
        (ServerSpec("llm", (0, 1), prefill_j=0.06, decode_j=0.45, load=_steady),),
    ),
    Scenario(
        "bursty",
        "one server on 2 GPUs, 5-60 s segments of 0.3-25 req/s with their own prompt/output mix",
        DURATION_S,
        2,
        90.0,
        (
            ServerSpec(
                "llm", (0, 1), prefill_j=0.06, decode_j=0.45, load=_segments(11, DURATION_S, idle=False)
            ),
        ),
        seed=2,
    ),
    Scenario(
        "idle",
        "bursty traffic with idle stretches of 1-4 minutes",
        DURATION_S,
        2,
        90.0,
        (
            ServerSpec(
                "llm", (0, 1), prefill_j=0.06, decode_j=0.45, load=_segments(12, DURATION_S, idle=True)
            ),
        ),
        seed=3,
    ),
    Scenario(
        "resets",
        "bursty traffic; the server restarts twice (30 s down) and both GPUs' energy counters restart",
        DURATION_S,
        2,
        90.0,
        (
            ServerSpec(
                "llm",
                (0, 1),
                prefill_j=0.06,
                decode_j=0.45,
                load=_segments(13, DURATION_S, idle=False),
                restarts=((500.0, 30.0), (1300.0, 30.0)),
            ),
        ),
        energy_resets=((0, 900.0), (1, 903.5), (0, 1310.0)),
        seed=4,
    ),
    Scenario(
        "completion",
        "SGLang-like: long requests; plain counters move at completion, realtime counters every step",
        DURATION_S,
        2,
        90.0,
        (
            ServerSpec(
                "llm",
                (0, 1),
                prefill_j=0.06,
                decode_j=0.45,
                load=_long_requests(14, DURATION_S),
                completion_counters=True,
            ),
        ),
        seed=5,
    ),
    Scenario(
        "shared",
        "two servers on one node: a on GPUs 0-2, b on GPUs 2-3 (GPU 2 split equally)",
        DURATION_S,
        4,
        90.0,
        (
            ServerSpec(
                "a",
                (0, 1, 2),
                prefill_j=0.08,
                decode_j=0.6,
                load=_segments(15, DURATION_S, idle=True),
            ),
            ServerSpec("b", (2, 3), prefill_j=0.04, decode_j=0.3, load=_steady),
        ),
        seed=6,
    ),
    Scenario(
        "mig",
        "one MIG GPU: a on a 3g instance (bursty, idle stretches), b on a 2g (steady), and a 2g"
        " instance whose tenant tokenwatt does not serve",
        DURATION_S,
        1,
        90.0,
        (
            ServerSpec(
                "a",
                (0,),
                prefill_j=0.05,
                decode_j=0.35,
                load=_segments(16, DURATION_S, idle=True),
                mig=(1, 3),
            ),
            ServerSpec("b", (0,), prefill_j=0.03, decode_j=0.2, load=_steady, mig=(2, 2)),
            ServerSpec(
                "other",
                (0,),
                prefill_j=0.03,
                decode_j=0.25,
                load=_segments(17, DURATION_S, idle=False),
                mig=(3, 2),
                scraped=False,
            ),
        ),
        seed=7,
    ),
)


def skewed(scenario: Scenario, full_w: dict[str, float]) -> Scenario:
    """The scenario with tenants that differ in power per busy second (`full_w` by server)."""
    servers = tuple(replace(s, full_w=full_w.get(s.name, s.full_w)) for s in scenario.servers)
    return replace(scenario, name=f"{scenario.name}, skewed", servers=servers)


def scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise SystemExit(f"no scenario {name!r}; choose one of {', '.join(s.name for s in SCENARIOS)}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--periodic-only"]
    if len(args) != 2:
        raise SystemExit("usage: python bench/traces.py SCENARIO DIR [--periodic-only]")
    write_csv(simulate(scenario(args[0])), Path(args[1]), periodic_only="--periodic-only" in sys.argv)
