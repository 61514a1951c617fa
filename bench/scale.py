"""Benchmark: tokenwatt and a real Prometheus scraping the same fleet of fake vLLM servers, side by side.

    python bench/scale.py [--targets 50,200,500,1000] [--duration 30] [--warmup 15] [--out FILE]
    python bench/scale.py --steady          # 8 servers x 8 GPUs until the 15-minute steady state

For each number of targets N, in one run: a fleet of N fake vLLM servers (bench/fleet.py: one process,
N loopback ports, the real vLLM 0.32 page with advancing counters), tokenwatt (`python -m exporter.cli
run`, simulated GPUs, the given interval, windows 1m/5m/15m) scraping all N, and the Debian
`prometheus` binary (a temporary data directory, the same interval) scraping the same N. After a
warm-up, over the measured span:

- CPU per target-scrape of each (utime + stime from /proc/PID/stat, divided by the scrapes the fleet
  saw from it), its CPU share of one core, RSS (VmRSS) at the end and the highest seen;
- scrapes per second per target and the share of scrapes on time (the gap to the previous scrape of
  the same target within 10 % of the interval), both counted at the fleet, which logs the arrival of
  every scrape per client and target; the off-time scrapes with their target and gap;
- then tokenwatt's own `/metrics`: latency p50/p99 of sequential GETs and of concurrent readers, its
  size and series count, and the on-time share of its scrapes while it is being read.

The ratios tokenwatt/Prometheus (CPU per target-scrape, RSS) close each row. Results are printed as
tables and written as JSON (`--out`). `--profile` runs tokenwatt under cProfile and prints its top
functions per step (profiling slows it: its timing figures are then not comparable). The machine's
other load moves every figure: the load average is recorded with each step.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
FLEET = Path(__file__).resolve().parent / "fleet.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 120.0
"""How long every process gets to start and tokenwatt to report every target up."""
STOP_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 120.0
"""Deadline of one GET of tokenwatt's /metrics."""
MISSES_KEPT = 50
"""Off-time scrapes listed per client and step in the JSON (all are counted)."""
SHARED_MISS_S = 0.25
TOP_FUNCTIONS = 15
PROFILE = "tokenwatt.prof"
STEADY_S = 900.0
"""The longest window (15m): from then on every retained structure is at its full size."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_wait_seconds(pid: int) -> float:
    """Time every thread of a process spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))]


@dataclass
class Scraper:
    """One process that scrapes the fleet (tokenwatt or Prometheus), over the measured span."""

    targets: int
    span_s: float
    scrapes: int
    gaps: int
    on_time: int
    cpu_s: float
    rss_mib: float
    rss_max_mib: float
    missed_targets: int
    """Targets with at least one off-time scrape in the span."""
    shared_misses: int
    """Off-time scrapes within `SHARED_MISS_S` of an off-time scrape by the other process: the
    machine (or the fleet) stalled both, rather than this process alone."""
    misses: list[tuple[int, float, float]]
    """Off-time scrapes (target, seconds into the span, gap), the first `MISSES_KEPT`."""
    scrapes_per_s_per_target: float = 0.0
    on_time_share: float = 0.0
    cpu_ms_per_scrape: float = 0.0
    waited_s: float = 0.0
    """Runnable but waiting for a CPU (the machine's other load), summed over the threads."""
    cpu_share: float = 0.0
    """Of one core."""
    waited_share: float = 0.0

    def __post_init__(self) -> None:
        self.scrapes_per_s_per_target = self.scrapes / self.span_s / self.targets
        self.on_time_share = self.on_time / self.gaps if self.gaps else 0.0
        self.cpu_ms_per_scrape = 1000 * self.cpu_s / self.scrapes if self.scrapes else float("nan")
        self.cpu_share = self.cpu_s / self.span_s
        self.waited_share = self.waited_s / self.span_s


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        if not seconds:
            return cls(0, float("nan"), float("nan"), float("nan"))
        ms = [1000 * s for s in seconds]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 99), max(ms))


@dataclass
class Step:
    targets: int
    load_average: tuple[float, float, float]
    tokenwatt: Scraper
    prometheus: Scraper | None
    fleet_cpu_share: float
    page_bytes: int
    series: int
    targets_up: int
    sequential: Latency
    concurrent: Latency
    on_time_while_read: float | None
    """tokenwatt's on-time share while its /metrics was being read (None: the reads took under an
    interval)."""
    log_problems: int
    """Lines of tokenwatt's log at level warning or above."""
    unscraped_at_start: dict[str, int]
    """Targets a process had not scraped once when the warm-up began (it began at the latest
    `START_TIMEOUT_S` after the start)."""
    cpu_ratio: float | None
    rss_ratio: float | None
    timeline: list[dict[str, float]]
    """Every few seconds from the start of the measured span: CPU shares and RSS of each process."""
    profile: list[str]


class Process:
    """A child process with its log file; stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Fleet:
    def __init__(self, targets: int, interval_s: float) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(FLEET), "--targets", str(targets), "--interval", str(interval_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet exited with {self.popen.wait()} before listening")
        ports = json.loads(line)
        self.ports: list[int] = ports["ports"]
        self.control: int = ports["control"]

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/metrics" for p in self.ports]

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"http://127.0.0.1:{self.control}/stats") as resp:
            resp.raise_for_status()
            stats: dict[str, Any] = await resp.json()
            return stats

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(STOP_TIMEOUT_S)


def duration(seconds: float) -> str:
    """A duration both Prometheus and tokenwatt read (whole milliseconds)."""
    return f"{round(seconds * 1000)}ms"


def tokenwatt_config(urls: list[str], port: int, gpus: int, interval_s: float) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "energy": {"source": "simulated", "interval": duration(interval_s), "simulated": {"gpus": gpus}},
        "windows": ["1m", "5m", "15m"],
        "logging": {"level": "info", "format": "json"},
        "servers": [
            {"name": f"fake-{i:04d}", "url": url, "kind": "vllm", "interval": duration(interval_s)}
            for i, url in enumerate(urls)
        ],
    }


def prometheus_config(urls: list[str], interval_s: float) -> dict[str, Any]:
    targets = [url.removeprefix("http://").removesuffix("/metrics") for url in urls]
    return {
        "global": {"scrape_interval": duration(interval_s), "scrape_timeout": duration(interval_s)},
        "scrape_configs": [{"job_name": "fleet", "static_configs": [{"targets": targets}]}],
    }


@dataclass
class Snapshot:
    wall: float
    fleet_now: float
    stats: dict[str, Any]
    cpu: dict[str, float]
    """Per process name."""
    waited: dict[str, float]
    """Run-queue wait per process name."""


async def snapshot(session: aiohttp.ClientSession, fleet: Fleet, pids: dict[str, int]) -> Snapshot:
    stats = await fleet.stats(session)
    return Snapshot(
        time.monotonic(),
        stats["now"],
        stats["clients"],
        {n: cpu_seconds(p) for n, p in pids.items()},
        {n: run_queue_wait_seconds(p) for n, p in pids.items()},
    )


def _near(ordered: list[float], t: float) -> bool:
    i = bisect.bisect_left(ordered, t - SHARED_MISS_S)
    return i < len(ordered) and ordered[i] <= t + SHARED_MISS_S


def scraper_figures(
    client: str, before: Snapshot, after: Snapshot, pid: int, rss_max: float, targets: int
) -> Scraper:
    empty = {"scrapes": [0] * targets, "gaps": [0] * targets, "on_time": [0] * targets, "misses": []}
    b, a = before.stats.get(client, empty), after.stats.get(client, empty)
    misses = [(t, at - before.fleet_now, gap) for t, at, gap in a["misses"] if at > before.fleet_now]
    others = sorted(
        at - before.fleet_now
        for name, arrivals in after.stats.items()
        if name != client
        for _, at, _ in arrivals["misses"]
        if at > before.fleet_now
    )
    span = after.wall - before.wall
    return Scraper(
        targets=targets,
        span_s=span,
        scrapes=sum(a["scrapes"]) - sum(b["scrapes"]),
        gaps=sum(a["gaps"]) - sum(b["gaps"]),
        on_time=sum(a["on_time"]) - sum(b["on_time"]),
        cpu_s=after.cpu[client] - before.cpu[client],
        waited_s=after.waited[client] - before.waited[client],
        rss_mib=rss_mib(pid),
        rss_max_mib=max(rss_max, rss_mib(pid)),
        missed_targets=len({m[0] for m in misses}),
        shared_misses=sum(1 for _, at, _ in misses if _near(others, at)),
        misses=[(t, round(s, 3), round(g, 3)) for t, s, g in misses[:MISSES_KEPT]],
    )


async def wait_until_scraping(
    session: aiohttp.ClientSession, fleet: Fleet, processes: list[Process]
) -> dict[str, int]:
    """Wait until every process has scraped every target once (counted at the fleet: a /metrics GET
    of an overloaded tokenwatt could itself take longer than the wait), or `START_TIMEOUT_S`.
    Returns the targets each process had not scraped yet: an overloaded one is measured all the same."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        for p in processes:
            p.check_alive()
        clients = (await fleet.stats(session))["clients"]
        unscraped = {
            p.name: sum(1 for n in clients[p.name]["scrapes"] if n == 0)
            if p.name in clients
            else len(fleet.ports)
            for p in processes
        }
        if not any(unscraped.values()) or time.monotonic() >= deadline:
            return unscraped
        await asyncio.sleep(0.5)


_UP = re.compile(r"^tokenwatt_target_up\{[^}]*\} (\S+)$", re.MULTILINE)


def targets_up(page: str) -> int:
    return sum(1 for value in _UP.findall(page) if float(value) == 1)


def series_count(page: str) -> int:
    return sum(1 for line in page.splitlines() if line and not line.startswith("#"))


async def read_metrics(
    session: aiohttp.ClientSession, url: str, reads: int, until: float, latencies: list[float]
) -> str:
    """GET `url` `reads` times one after the other (or until the monotonic instant `until`)."""
    page = ""
    for _ in range(reads):
        if time.monotonic() >= until:
            break
        started = time.perf_counter()
        async with asyncio.timeout(READ_TIMEOUT_S), session.get(url) as resp:
            resp.raise_for_status()
            page = await resp.text()
        latencies.append(time.perf_counter() - started)
    return page


def problems_in_log(log: Path) -> int:
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("level") in ("warning", "error", "critical"):
                count += 1
    return count


def top_functions(profile: Path) -> list[str]:
    out = io.StringIO()
    stats = pstats.Stats(str(profile), stream=out)
    stats.sort_stats("tottime").print_stats(TOP_FUNCTIONS)
    stats.sort_stats("cumulative").print_stats("exporter", TOP_FUNCTIONS)  # tokenwatt's own, not asyncio's
    return out.getvalue().splitlines()


@dataclass
class Options:
    gpus: int
    interval_s: float
    warmup_s: float
    duration_s: float
    sample_every_s: float
    reads: int
    readers: int
    reads_per_reader: int
    read_budget_s: float
    prometheus: str | None
    profile: bool


async def measure_span(
    session: aiohttp.ClientSession, fleet: Fleet, pids: dict[str, int], processes: list[Process], opt: Options
) -> tuple[Snapshot, Snapshot, list[dict[str, float]], dict[str, float]]:
    """The measured span: its first and last snapshots, a sample every `sample_every_s` (CPU and
    run-queue shares, RSS per process), and the highest RSS of each process."""
    before = last = await snapshot(session, fleet, pids)
    rss_max = {n: rss_mib(pid) for n, pid in pids.items()}
    timeline: list[dict[str, float]] = []
    while (left := opt.duration_s - (time.monotonic() - before.wall)) > 0:
        await asyncio.sleep(min(opt.sample_every_s, left))
        for p in processes:
            p.check_alive()
        now = await snapshot(session, fleet, pids)
        elapsed = now.wall - last.wall
        sample = {"t": round(now.wall - before.wall, 1)}
        for name, pid in pids.items():
            rss = rss_mib(pid)
            rss_max[name] = max(rss_max[name], rss)
            sample[f"{name}_cpu_share"] = round((now.cpu[name] - last.cpu[name]) / elapsed, 4)
            sample[f"{name}_waited_share"] = round((now.waited[name] - last.waited[name]) / elapsed, 4)
            sample[f"{name}_rss_mib"] = round(rss, 1)
        timeline.append(sample)
        last = now
    return before, last, timeline, rss_max


async def read_phases(
    session: aiohttp.ClientSession, url: str, opt: Options
) -> tuple[str, list[float], list[float]]:
    """tokenwatt's /metrics read one GET after another, then by concurrent readers: the last page
    and the latencies of each phase."""
    sequential: list[float] = []
    page = await read_metrics(session, url, opt.reads, time.monotonic() + opt.read_budget_s, sequential)
    concurrent: list[float] = []
    until = time.monotonic() + opt.read_budget_s
    await asyncio.gather(
        *(read_metrics(session, url, opt.reads_per_reader, until, concurrent) for _ in range(opt.readers))
    )
    return page, sequential, concurrent


def start_tokenwatt(urls: list[str], port: int, opt: Options, step_dir: Path) -> Process:
    config = step_dir / "tokenwatt.yml"
    config.write_text(yaml.safe_dump(tokenwatt_config(urls, port, opt.gpus, opt.interval_s)))
    wrap = ["-m", "cProfile", "-o", str(step_dir / PROFILE)] if opt.profile else []
    argv = [sys.executable, *wrap, "-m", "exporter.cli", "run", "--config", str(config)]
    return Process("tokenwatt", argv, step_dir / "tokenwatt.log", cwd=ROOT)


def start_prometheus(binary: str, urls: list[str], interval_s: float, step_dir: Path) -> Process:
    config = step_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(urls, interval_s)))
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={step_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{free_port()}",
    ]
    return Process("prometheus", argv, step_dir / "prometheus.log")


async def run_step(targets: int, opt: Options, workdir: Path) -> Step:
    step_dir = workdir / f"n{targets}"
    step_dir.mkdir()
    fleet = Fleet(targets, opt.interval_s)
    processes: list[Process] = []
    try:
        tw_port = free_port()
        processes.append(start_tokenwatt(fleet.urls(), tw_port, opt, step_dir))
        if opt.prometheus is not None:
            processes.append(start_prometheus(opt.prometheus, fleet.urls(), opt.interval_s, step_dir))
        tw_url = f"http://127.0.0.1:{tw_port}"
        pids = {p.name: p.pid for p in processes} | {"fleet": fleet.popen.pid}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            unscraped = await wait_until_scraping(session, fleet, processes)
            print(f"  N={targets}: targets not scraped yet: {unscraped}; warming up", file=sys.stderr)
            await asyncio.sleep(opt.warmup_s)
            before, after, timeline, rss_max = await measure_span(session, fleet, pids, processes, opt)
            figures = {
                p.name: scraper_figures(p.name, before, after, p.pid, rss_max[p.name], targets)
                for p in processes
            }
            print(
                f"  N={targets}: measured {after.wall - before.wall:.0f} s; reading /metrics", file=sys.stderr
            )
            read_before = await snapshot(session, fleet, pids)
            page, sequential, concurrent = await read_phases(session, f"{tw_url}/metrics", opt)
            read_after = await snapshot(session, fleet, pids)
        while_read = scraper_figures("tokenwatt", read_before, read_after, pids["tokenwatt"], 0, targets)
    finally:
        for p in processes:
            p.stop()
        fleet.stop()
    tw, prom = figures["tokenwatt"], figures.get("prometheus")
    return Step(
        targets=targets,
        load_average=os.getloadavg(),
        tokenwatt=tw,
        prometheus=prom,
        fleet_cpu_share=(after.cpu["fleet"] - before.cpu["fleet"]) / (after.wall - before.wall),
        page_bytes=len(page.encode()),
        series=series_count(page),
        targets_up=targets_up(page),
        sequential=Latency.of(sequential),
        concurrent=Latency.of(concurrent),
        on_time_while_read=while_read.on_time_share if while_read.gaps else None,
        log_problems=problems_in_log(processes[0].log),
        unscraped_at_start=unscraped,
        # CPU time comes in clock ticks (10 ms): a short span may show none.
        cpu_ratio=tw.cpu_ms_per_scrape / prom.cpu_ms_per_scrape
        if prom and prom.cpu_ms_per_scrape > 0
        else None,
        rss_ratio=tw.rss_mib / prom.rss_mib if prom else None,
        timeline=timeline,
        profile=top_functions(step_dir / PROFILE) if opt.profile else [],
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def tables(steps: list[Step], readers: int) -> str:
    rows = [
        "| N | who | scrapes/s/target | on time | CPU ms/scrape | CPU % of a core | waiting for a CPU "
        "| RSS MiB (max) | missed targets | misses shared |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in steps:
        for name, f in (("tokenwatt", s.tokenwatt), ("prometheus", s.prometheus)):
            if f is None:
                continue
            rows.append(
                f"| {s.targets} | {name} | {f.scrapes_per_s_per_target:.3f} | {100 * f.on_time_share:.2f} % "
                f"| {f.cpu_ms_per_scrape:.3f} | {100 * f.cpu_share:.1f} | {100 * f.waited_share:.1f} % "
                f"| {f.rss_mib:.0f} ({f.rss_max_mib:.0f}) | {f.missed_targets} "
                f"| {f.shared_misses}/{f.gaps - f.on_time} |"
            )
    rows += [
        "",
        "| N | CPU/scrape tokenwatt÷Prometheus | RSS tokenwatt÷Prometheus "
        "| /metrics KiB | series | sequential p50/p99 ms "
        f"| {readers} readers p50/p99 ms | on time while read | fleet CPU % | load avg |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in steps:
        rows.append(
            f"| {s.targets} | {_ratio(s.cpu_ratio)} | {_ratio(s.rss_ratio)} | {s.page_bytes / 1024:.0f} "
            f"| {s.series} | {s.sequential.p50_ms:.1f} / {s.sequential.p99_ms:.1f} "
            f"| {s.concurrent.p50_ms:.1f} / {s.concurrent.p99_ms:.1f} | {_share(s.on_time_while_read)} "
            f"| {100 * s.fleet_cpu_share:.1f} | {s.load_average[0]:.2f} |"
        )
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(
    out: Path, info: dict[str, Any], opt: Options, steps: list[Step], failed: list[dict[str, Any]]
) -> None:
    """Written after every N, so that an interrupted run keeps what it measured."""
    results = {"machine": info, "options": asdict(opt), "steps": [asdict(s) for s in steps], "failed": failed}
    out.write_text(json.dumps(results, indent=1))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", default="50,200,500,1000", help="comma-separated N (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per N (default: 30)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after every target is up (15)")
    parser.add_argument(
        "--steady",
        action="store_true",
        help="8 servers x 8 GPUs, measured over the last --duration seconds (default 300) "
        "of the first 15 minutes, when the 15m window is full",
    )
    parser.add_argument("--gpus", type=int, default=8, help="simulated GPUs (default: 8)")
    parser.add_argument("--interval", type=float, default=1.0, help="scrape interval of both, seconds (1)")
    parser.add_argument("--reads", type=int, default=50, help="sequential GETs of /metrics (50)")
    parser.add_argument("--readers", type=int, default=20, help="concurrent readers of /metrics (20)")
    parser.add_argument("--reads-per-reader", type=int, default=5, help="GETs by each concurrent reader (5)")
    parser.add_argument(
        "--read-budget",
        type=float,
        default=30.0,
        help="at most this many seconds for each of the two read phases (30)",
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="timeline sampling, seconds (5)")
    parser.add_argument("--no-prometheus", action="store_true", help="tokenwatt alone")
    parser.add_argument("--profile", action="store_true", help="run tokenwatt under cProfile")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    parser.add_argument("--out", type=Path, default=Path("scale-results.json"), help="JSON results file")
    args = parser.parse_args(argv)
    if args.steady:
        args.targets = "8"
        if "--duration" not in (argv if argv is not None else sys.argv):
            args.duration = 300.0
        args.warmup = max(0.0, STEADY_S - args.duration)
    try:
        args.target_counts = [int(n) for n in args.targets.split(",")]
    except ValueError:
        parser.error(f"--targets: {args.targets!r} is not a comma-separated list of integers")
    if any(n < 1 for n in args.target_counts):
        parser.error(f"--targets: {args.targets!r}: every N must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prometheus = None
    if not args.no_prometheus:
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            print(
                "scale.py: the prometheus binary is not on PATH (Debian: apt-get install prometheus); "
                "or run with --no-prometheus",
                file=sys.stderr,
            )
            return 2
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # N connections each; children inherit it
    opt = Options(
        gpus=args.gpus,
        interval_s=args.interval,
        warmup_s=args.warmup,
        duration_s=args.duration,
        sample_every_s=args.sample_every,
        reads=args.reads,
        readers=args.readers,
        reads_per_reader=args.reads_per_reader,
        read_budget_s=args.read_budget,
        prometheus=prometheus,
        profile=args.profile,
    )
    info = machine()
    if prometheus is not None:
        info["prometheus"] = subprocess.run(
            [prometheus, "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    steps: list[Step] = []
    failed: list[dict[str, Any]] = []
    with _workdir(args.keep) as workdir:
        for n in args.target_counts:
            print(f"scale.py: N={n} (work directory {workdir})", file=sys.stderr)
            try:
                step = asyncio.run(run_step(n, opt, workdir))
            except (RuntimeError, TimeoutError, aiohttp.ClientError) as e:  # the other N still run
                print(f"scale.py: N={n} failed: {e}", file=sys.stderr)
                failed.append({"targets": n, "error": str(e)})
                continue
            steps.append(step)
            for line in step.profile:
                print(line)
            write_results(args.out, info, opt, steps, failed)
    write_results(args.out, info, opt, steps, failed)
    print(tables(steps, args.readers))
    for f in failed:
        print(f"N={f['targets']} failed: {f['error']}")
    print(f"\nresults: {args.out}")
    return 1 if failed else 0


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tokenwatt-scale-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
