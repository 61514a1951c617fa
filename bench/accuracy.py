"""Accuracy of tokenwatt and of the usual PromQL recipe against ground truth.

    python3 bench/accuracy.py [--energy-interval SECONDS]

For every scenario of `traces.py` this runs the real `Accountant` the way the daemon drives it
(readings and scrapes fed in the order they arrive, settled as they come), twice: with energy
also read right before and after every scrape (the daemon with a source that reads fresh: NVML,
AMD) and with the periodic reads only (a source that refreshes on its own schedule: DCGM
watches). It compares both with an emulation of

    sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[w])) / 1000 / rate(<output tokens>[w])

with dcgm-exporter refreshing every 30 s, Prometheus scraping it and the server every 15 s, and
`rate()` extrapolating as Prometheus 2.x does. Both are evaluated every 5 s and compared with the
truth over what each claims to measure: tokenwatt's window is the intervals between its token
samples that ended inside it (it reports those, so they are what it is checked against); the
recipe's is the range `[T - w, T]`. On shared GPUs tokenwatt is fed the tenants' measured
activity (per pod on a GPU shared whole, per MIG instance), and measured once more without it
(equal shares, MIG slices) to compare the share methods. It prints the markdown tables of
`docs/accuracy.md`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from traces import (
    SCENARIOS,
    Scenario,
    Scrape,
    Truth,
    energy_counter,
    simulate,
    skewed,
    token_counters,
    tokenwatt_energy,
    tokenwatt_scrapes,
)

from exporter.accounting.book import Accountant
from exporter.placement import Holding, Placement
from exporter.values import Gpu, GpuActivity, GpuSample, ModelTokens, PodRef, TokenSample

WINDOWS_S = (60.0, 300.0)
COMPLETION_WINDOWS_S = (60.0, 300.0, 900.0)
EVALUATE_EVERY_S = 5.0
FIRST_EVALUATION_S = 360.0
FIT_FROM_S = 600.0
SKEW = {"shared": {"a": 360.0, "b": 240.0}, "mig": {"a": 360.0, "b": 240.0}}
"""Power per busy second by tenant (their `full_w`), for the share-method rows of skewed tenants:
a draws 1.5x the power of b for the same activity."""


@dataclass(frozen=True)
class Errors:
    """Relative errors (fractions) over the evaluation instants of one window length."""

    values: tuple[float, ...]
    tokens: tuple[float, ...]
    """Output tokens in the window of each evaluation."""

    @property
    def worst(self) -> float:
        return max(self.values) if self.values else float("nan")

    @property
    def worst_tokens(self) -> float:
        return self.tokens[self.values.index(self.worst)] if self.values else float("nan")

    @property
    def p99(self) -> float:
        ordered = sorted(self.values)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")

    @property
    def p95(self) -> float:
        ordered = sorted(self.values)
        return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def worst_with(self, min_tokens: float) -> float:
        """The worst error over the windows that hold at least `min_tokens` output tokens."""
        found = [e for e, n in zip(self.values, self.tokens, strict=True) if n >= min_tokens]
        return max(found) if found else float("nan")


@dataclass(frozen=True)
class FitError:
    server: str
    prefill: float
    decode: float
    static: float
    worst_prefill: float
    worst_decode: float
    worst_static: float
    r_squared: float
    samples: int


# --- tokenwatt -------------------------------------------------------------------------------


def run_tokenwatt(
    truth: Truth,
    scrapes: list[Scrape],
    energy_seed: int,
    windows: tuple[float, ...],
    energy_interval_s: float = 1.0,
    periodic_only: bool = False,
    activity: bool = True,
) -> tuple[dict[str, dict[float, Errors]], list[FitError]]:
    """Feed the `Accountant` as the daemon does; energy is also read around every scrape unless
    `periodic_only` (a source that refreshes on its own schedule, such as DCGM watches). With
    `activity`, each reading of a shared GPU comes with the tenants' activity since the GPU's
    previous reading."""
    scenario = truth.scenario
    gpus = [Gpu(g, f"GPU-{g}", "simulated") for g in range(scenario.gpus)]
    served = [s for s in scenario.servers if s.scraped]
    acc = Accountant([s.name for s in served], windows, 5 * energy_interval_s)
    acc.set_placement(
        Placement(
            {
                s.name: frozenset(Holding(f"GPU-{g}", *(s.mig or (None, None))) for g in s.gpus)
                for s in served
            },
            {s.name: PodRef("bench", s.name, f"uid-{s.name}") for s in served},
        )
    )
    previous_t: dict[int, float] = {}
    readings = tokenwatt_energy(
        truth, random.Random(energy_seed), energy_interval_s, () if periodic_only else scrapes
    )
    # A reading taken right after a response is applied before that scrape's tokens (kind 0 < 1).
    events: list[tuple[float, int, object]] = [(r.t, 0, r) for r in readings]
    events += [(s.arrival, 1, s) for s in scrapes]
    evaluations = [
        FIRST_EVALUATION_S + i * EVALUATE_EVERY_S
        for i in range(int((scenario.duration_s - 5 - FIRST_EVALUATION_S) / EVALUATE_EVERY_S))
    ]
    events += [(t, 2, None) for t in evaluations]
    events.sort(key=lambda e: (e[0], e[1]))
    errors: dict[str, dict[float, list[tuple[float, float]]]] = {
        s.name: {w: [] for w in windows} for s in served
    }
    fits: dict[str, list[tuple[float, float, float, float, int]]] = {s.name: [] for s in served}
    for now, kind, event in events:
        if kind == 0:
            assert isinstance(event, type(readings[0]))
            if activity and event.gpu in previous_t:
                acc.add_activity([_activity(truth, event.gpu, previous_t[event.gpu], event.t)])
            previous_t[event.gpu] = event.t
            acc.add_energy([GpuSample(gpus[event.gpu], event.t, event.joules, None)])
        elif kind == 1:
            assert isinstance(event, Scrape)
            tokens = ModelTokens(
                "model",
                event.input_tokens,
                event.output_tokens,
                running=event.running,
                cached_input_tokens=event.cached_input_tokens,
            )
            acc.add_tokens([TokenSample(event.server, event.t, tokens)])
        acc.settle(now)
        if kind != 2:
            continue
        snap = acc.snapshot(now)
        for server in snap.servers:
            (model,) = server.models
            for w in model.windows:
                measured = w.joules_per_token("output")
                true = _truth_over_intervals(truth, acc, server.server, now, w.window_s)
                if measured is not None and true is not None:
                    errors[server.server][w.window_s].append((abs(measured / true - 1), w.output_tokens))
            if server.split is not None and now >= FIT_FROM_S:
                s = server.split
                fits[server.server].append(
                    (s.prefill_j_per_token, s.decode_j_per_token, s.static_w, s.r_squared, s.samples)
                )
    results = {s: {w: _errors(v) for w, v in by_w.items()} for s, by_w in errors.items()}
    return results, [_fit_error(truth, server, found) for server, found in fits.items() if found]


def _activity(truth: Truth, gpu: int, t0: float, t1: float) -> GpuActivity:
    """The tenants' measured activity on `gpu` over (t0, t1]: per pod, or per MIG instance."""
    pods, instances = {}, {}
    for spec in truth.scenario.servers:
        busy = truth.busy.get((gpu, spec.name))
        if busy is None:
            continue
        mean = (busy.at(t1) - busy.at(t0)) / (t1 - t0)
        if spec.mig is None:
            pods[f"uid-{spec.name}"] = mean
        else:
            instances[spec.mig[0]] = mean
    return GpuActivity(f"GPU-{gpu}", t1, pods=pods, instances=instances)


def _truth_over_intervals(
    truth: Truth, acc: Accountant, server: str, now: float, window_s: float
) -> float | None:
    """True J/output token over the measured intervals that ended in (now - window, now]."""
    energy = tokens = 0.0
    for interval in acc.ledgers[server].intervals:
        if interval.energy_j is None or not (now - window_s < interval.t_end <= now):
            continue
        energy += truth.server_energy(server, interval.t_start, interval.t_end)
        tokens += truth.output_tokens(server, interval.t_start, interval.t_end)
    return energy / tokens if tokens > 0 else None


def _fit_error(truth: Truth, server: str, found: list[tuple[float, float, float, float, int]]) -> FitError:
    spec = truth.servers[server].spec
    true_static = truth.scenario.static_w * sum(truth.shares(server).values())
    rel = [
        (abs(p / spec.prefill_j - 1), abs(d / spec.decode_j - 1), abs(c / true_static - 1))
        for p, d, c, _, _ in found
    ]
    p, d, c, r2, n = found[-1]
    return FitError(
        server,
        p / spec.prefill_j - 1,
        d / spec.decode_j - 1,
        c / true_static - 1,
        max(e[0] for e in rel),
        max(e[1] for e in rel),
        max(e[2] for e in rel),
        r2,
        n,
    )


# --- the PromQL recipe ---------------------------------------------------------------------


def prometheus_rate(samples: list[tuple[float, float]], at: float, range_s: float) -> float | None:
    """`rate(v[range])` evaluated at `at`, as Prometheus 2.x computes it (extrapolatedRate)."""
    start = at - range_s
    window = [(t, v) for t, v in samples if start <= t <= at]
    if len(window) < 2:
        return None
    result = window[-1][1] - window[0][1]
    for (_, prev), (_, cur) in pairwise(window):
        if cur < prev:
            result += prev
    first_t, first_v = window[0]
    last_t = window[-1][0]
    sampled = last_t - first_t
    average = sampled / (len(window) - 1)
    to_start, to_end = first_t - start, at - last_t
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    extrapolate = sampled
    extrapolate += to_start if to_start < threshold else average / 2
    extrapolate += to_end if to_end < threshold else average / 2
    return result * (extrapolate / sampled) / range_s


def run_recipe(truth: Truth, seed: int, completion: bool) -> dict[str, dict[float, Errors]]:
    scenario = truth.scenario
    rng = random.Random(seed)
    refresh_offset, dcgm_offset = rng.uniform(0, 30), rng.uniform(0, 15)
    energy_series: dict[int, list[tuple[float, float]]] = {g: [] for g in range(scenario.gpus)}
    t = dcgm_offset
    while t < scenario.duration_s - 1:
        scrape_t = t + rng.uniform(0, 0.005)
        refreshes = int((scrape_t - refresh_offset) // 30)
        if refreshes >= 0:
            refreshed_at = refresh_offset + 30 * refreshes
            for g in range(scenario.gpus):
                energy_series[g].append((scrape_t, energy_counter(truth, g, refreshed_at)))
        t += 15.0
    token_series: dict[str, list[tuple[float, float]]] = {}
    scraped = {name: server for name, server in truth.servers.items() if server.spec.scraped}
    for name, server in scraped.items():
        samples = []
        t = rng.uniform(0, 15)
        while t < scenario.duration_s - 1:
            scrape_t = t + rng.uniform(0, 0.005)
            if not server.is_down(scrape_t):
                samples.append((scrape_t, token_counters(server, scrape_t, completion)[1]))
            t += 15.0
        token_series[name] = samples
    errors: dict[str, dict[float, list[tuple[float, float]]]] = {
        name: {w: [] for w in WINDOWS_S} for name in scraped
    }
    at = FIRST_EVALUATION_S
    while at < scenario.duration_s - 5:
        for name, server in scraped.items():
            for w in WINDOWS_S:
                rates = [prometheus_rate(energy_series[g], at, w) for g in server.spec.gpus]
                token_rate = prometheus_rate(token_series[name], at, w)
                true_tokens = truth.output_tokens(name, at - w, at)
                if any(r is None for r in rates) or not token_rate or true_tokens <= 0:
                    continue
                recipe = sum(r for r in rates if r is not None) / token_rate
                true = truth.server_energy(name, at - w, at) / true_tokens
                errors[name][w].append((abs(recipe / true - 1), true_tokens))
        at += EVALUATE_EVERY_S
    return {s: {w: _errors(v) for w, v in by_w.items()} for s, by_w in errors.items()}


def _tenants(scenario: Scenario, gpu: int) -> int:
    return sum(1 for s in scenario.servers if gpu in s.gpus)


def _method_rows(
    truth: Truth, scrapes: list[Scrape], measured: dict[str, dict[float, Errors]], interval: float
) -> list[str]:
    """Rows comparing, for each server on a shared GPU, its errors with the tenants' activity
    measured (`measured`, daemon mode) and without it (equal shares, MIG slices)."""
    scenario = truth.scenario
    shared = [s for s in scenario.servers if s.scraped and any(_tenants(scenario, g) > 1 for g in s.gpus)]
    if not shared:
        return []
    unmeasured, _ = run_tokenwatt(truth, scrapes, scenario.seed + 200, WINDOWS_S, interval, activity=False)
    rows = []
    for spec in shared:
        methods = ("mig_activity", "mig_slices") if spec.mig else ("activity", "equal")
        for method, found in zip(methods, (measured, unmeasured), strict=True):
            by_w = found[spec.name]
            rows.append(
                f"| {scenario.name} | {spec.name} | {method} | {_pct(by_w[60.0].median)} "
                f"| {_worst(by_w[60.0])} | {_pct(by_w[60.0].worst_with(1000))} "
                f"| {_pct(by_w[300.0].median)} | {_pct(by_w[300.0].worst)} |"
            )
    return rows


def _errors(found: list[tuple[float, float]]) -> Errors:
    return Errors(tuple(e for e, _ in found), tuple(n for _, n in found))


# --- report ----------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.3f} %" if x < 0.1 else f"{100 * x:.1f} %"


def _fit_row(scenario: str, f: FitError) -> str:
    return (
        f"| {scenario} | {f.server} | {100 * f.prefill:+.1f} % | {100 * f.decode:+.1f} % "
        f"| {100 * f.static:+.1f} % | {100 * f.worst_prefill:.1f} % | {100 * f.worst_decode:.1f} % "
        f"| {100 * f.worst_static:.1f} % | {f.r_squared:.4f} | {f.samples} |"
    )


def _worst(e: Errors) -> str:
    return f"{_pct(e.worst)} ({e.worst_tokens:,.0f} tokens)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--energy-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="tokenwatt's periodic energy reads",
    )
    interval = parser.parse_args().energy_interval
    print(f"tokenwatt reads energy every {interval:g} s (and around every scrape in daemon mode)\n")
    rows, summary, fit_rows, periodic_fit_rows, completion_rows, method_rows = [], [], [], [], [], []
    for scenario in SCENARIOS:
        truth = simulate(scenario)
        realtime = tokenwatt_scrapes(truth, random.Random(scenario.seed + 100))
        daemon, fits = run_tokenwatt(truth, realtime, scenario.seed + 200, WINDOWS_S, interval)
        periodic, periodic_fits = run_tokenwatt(
            truth, realtime, scenario.seed + 200, WINDOWS_S, interval, periodic_only=True
        )
        recipe = run_recipe(
            truth, scenario.seed + 300, completion=any(s.completion_counters for s in scenario.servers)
        )
        method_rows += _method_rows(truth, realtime, daemon, interval)
        if scenario.name in SKEW:
            skewed_truth = simulate(skewed(scenario, SKEW[scenario.name]))
            skewed_daemon, _ = run_tokenwatt(skewed_truth, realtime, scenario.seed + 200, WINDOWS_S, interval)
            method_rows += _method_rows(skewed_truth, realtime, skewed_daemon, interval)
        for server in daemon:
            cells = []
            for w in WINDOWS_S:
                a, p, b = daemon[server][w], periodic[server][w], recipe[server][w]
                ratio = b.worst / a.worst if a.worst > 0 else float("inf")
                rows.append(
                    f"| {scenario.name} | {server} | {w:.0f} s | {_pct(a.median)} | {_pct(a.p99)} "
                    f"| {_worst(a)} | {_pct(p.median)} | {_worst(p)} | {_pct(b.median)} "
                    f"| {_pct(b.worst)} | {ratio:,.0f} | {len(a.values)} |"
                )
                cells += [_pct(a.worst), _pct(p.worst), _pct(b.worst)]
            summary.append(f"| {scenario.name} | {server} | {' | '.join(cells)} |")
        fit_rows += [_fit_row(scenario.name, f) for f in fits]
        periodic_fit_rows += [_fit_row(scenario.name, f) for f in periodic_fits]
        if any(s.completion_counters for s in scenario.servers):
            plain = tokenwatt_scrapes(truth, random.Random(scenario.seed + 100), completion=True)
            on_completion, _ = run_tokenwatt(
                truth, plain, scenario.seed + 200, COMPLETION_WINDOWS_S, interval
            )
            for server, by_w in on_completion.items():
                for w, e in by_w.items():
                    completion_rows.append(
                        f"| {scenario.name} | {server} | {w:.0f} s | {_pct(e.median)} | {_pct(e.p95)} "
                        f"| {_pct(e.worst)} |"
                    )
    print(
        "| scenario | server | window | daemon median | daemon p99 | daemon worst (tokens in that window) "
        "| periodic-only median | periodic-only worst (tokens in that window) | recipe median "
        "| recipe worst | recipe worst / daemon worst | evaluations |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    print(
        "| scenario | server | 60 s: daemon | 60 s: periodic-only | 60 s: recipe "
        "| 5 min: daemon | 5 min: periodic-only | 5 min: recipe |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(summary))
    fit_header = (
        "| scenario | server | prefill (end) | decode (end) | static (end) | prefill worst | decode worst "
        "| static worst | R² (end) | samples (end) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    print("\nFit, daemon:\n")
    print(fit_header)
    print("\n".join(fit_rows))
    print("\nFit, periodic reads only:\n")
    print(fit_header)
    print("\n".join(periodic_fit_rows))
    print("\nShare methods on shared GPUs (daemon mode):\n")
    print(
        "| scenario | server | method | 60 s median | 60 s worst (tokens in that window) "
        "| 60 s worst, windows of 1,000 tokens or more | 5 min median | 5 min worst |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(method_rows))
    print()
    print("| scenario | server | window | median | p95 | worst |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(completion_rows))


if __name__ == "__main__":
    main()
