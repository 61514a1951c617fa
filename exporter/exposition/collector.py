"""The prometheus_client collector: one consistent snapshot of the accounting, rendered as metrics.

Everything a scrape of `/metrics` returns comes from a single `Snapshot` and a single `Health`
taken at the same moment, so a server's energy and token counters are always sampled at the same
instant and `rate(energy) / rate(tokens)` is exact over any range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.accounting.book import Snapshot

TOKEN_TYPES = ("output", "input", "all")


@dataclass(frozen=True, slots=True)
class TargetHealth:
    server: str
    up: bool
    scrape_duration_s: float | None
    last_success_t: float | None
    """Unix time of the latest successful scrape."""
    errors: tuple[tuple[str, int], ...]
    """Failed scrapes so far, by reason."""


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source: str
    up: bool
    read_duration_s: float | None
    errors: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Health:
    version: str
    source: SourceHealth
    targets: tuple[TargetHealth, ...]


def window_label(seconds: float) -> str:
    """A window's label value in Prometheus duration notation (60 -> "1m", 90 -> "90s")."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


class TokenwattCollector(Collector):
    """Yields every tokenwatt metric from a snapshot taken when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], tuple[Snapshot, Health]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap, health = self._snapshot()
        yield from self._gpu_metrics(snap)
        yield from self._server_metrics(snap)
        yield from self._health_metrics(health)

    def _gpu_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        labels = ["gpu", "uuid", "gpu_model"]
        energy = CounterMetricFamily(
            "tokenwatt_gpu_energy_joules",
            "Energy used by the GPU since tokenwatt started reading it.",
            labels=labels,
        )
        power = GaugeMetricFamily(
            "tokenwatt_gpu_power_watts", "GPU board power at the latest reading.", labels=labels
        )
        for g in snap.gpus:
            values = [str(g.gpu.index), g.gpu.uuid, g.gpu.model]
            energy.add_metric(values, g.energy_j)
            if g.power_w is not None:
                power.add_metric(values, g.power_w)
        yield energy
        yield power

    def _server_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            "tokenwatt_server_energy_joules",
            "GPU energy attributed to the model, idle included, at the instant of its token counters.",
            labels=["server", "model"],
        )
        tokens = CounterMetricFamily(
            "tokenwatt_server_tokens",
            "Tokens processed, by token type (input: prompt tokens including cache hits; output: generated).",
            labels=["server", "model", "token_type"],
        )
        requests = CounterMetricFamily(
            "tokenwatt_server_requests", "Requests the server finished.", labels=["server", "model"]
        )
        running = GaugeMetricFamily(
            "tokenwatt_server_running_requests",
            "Requests in flight at the latest scrape.",
            labels=["server", "model"],
        )
        idle = CounterMetricFamily(
            "tokenwatt_server_idle_energy_joules",
            "Energy attributed to the server while it processed no token and ran no request.",
            labels=["server"],
        )
        idle_s = CounterMetricFamily(
            "tokenwatt_server_idle_seconds",
            "Time the server spent idle (measured intervals only).",
            labels=["server"],
        )
        unmeasured = CounterMetricFamily(
            "tokenwatt_server_unmeasured_seconds",
            "Time whose energy could not be measured (a gap in the energy readings); left out of ratios.",
            labels=["server"],
        )
        jpt = GaugeMetricFamily(
            "tokenwatt_joules_per_token",
            "Joules per token over the window: measured energy divided by tokens of that type.",
            labels=["server", "model", "token_type", "window"],
        )
        tpj = GaugeMetricFamily(
            "tokenwatt_tokens_per_joule",
            "Tokens per joule over the window (the inverse of tokenwatt_joules_per_token).",
            labels=["server", "model", "token_type", "window"],
        )
        for s in snap.servers:
            idle.add_metric([s.server], s.idle_energy_j)
            idle_s.add_metric([s.server], s.idle_s)
            unmeasured.add_metric([s.server], s.unmeasured_s)
            for m in s.models:
                model = m.model or ""
                energy.add_metric([s.server, model], m.energy_j)
                tokens.add_metric([s.server, model, "input"], m.input_tokens)
                tokens.add_metric([s.server, model, "output"], m.output_tokens)
                if m.requests is not None:
                    requests.add_metric([s.server, model], m.requests)
                if m.running is not None:
                    running.add_metric([s.server, model], m.running)
                for w in m.windows:
                    for token_type in TOKEN_TYPES:
                        value = w.joules_per_token(token_type)
                        if value is None or value <= 0:
                            continue
                        labels = [s.server, model, token_type, window_label(w.window_s)]
                        jpt.add_metric(labels, value)
                        tpj.add_metric(labels, 1.0 / value)
        yield from (energy, tokens, requests, running, idle, idle_s, unmeasured, jpt, tpj)

    def _health_metrics(self, health: Health) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tokenwatt_target_up",
            "1 if the latest scrape of the server's metrics succeeded.",
            labels=["server"],
        )
        scrape_s = GaugeMetricFamily(
            "tokenwatt_target_scrape_duration_seconds", "Duration of the latest scrape.", labels=["server"]
        )
        last_scrape = GaugeMetricFamily(
            "tokenwatt_target_last_success_timestamp_seconds",
            "Unix time of the latest successful scrape of the server.",
            labels=["server"],
        )
        scrape_errors = CounterMetricFamily(
            "tokenwatt_target_scrape_errors", "Failed scrapes, by reason.", labels=["server", "reason"]
        )
        for t in health.targets:
            up.add_metric([t.server], 1.0 if t.up else 0.0)
            if t.scrape_duration_s is not None:
                scrape_s.add_metric([t.server], t.scrape_duration_s)
            if t.last_success_t is not None:
                last_scrape.add_metric([t.server], t.last_success_t)
            for reason, count in t.errors:
                scrape_errors.add_metric([t.server, reason], count)
        src = health.source
        source_up = GaugeMetricFamily(
            "tokenwatt_energy_source_up", "1 if the latest energy read succeeded.", labels=["source"]
        )
        source_up.add_metric([src.source], 1.0 if src.up else 0.0)
        read_s = GaugeMetricFamily(
            "tokenwatt_energy_read_duration_seconds", "Duration of the latest energy read.", labels=["source"]
        )
        if src.read_duration_s is not None:
            read_s.add_metric([src.source], src.read_duration_s)
        read_errors = CounterMetricFamily(
            "tokenwatt_energy_read_errors", "Failed energy reads, by reason.", labels=["source", "reason"]
        )
        for reason, count in src.errors:
            read_errors.add_metric([src.source, reason], count)
        build = GaugeMetricFamily(
            "tokenwatt_build_info", "tokenwatt's version; always 1.", labels=["version"]
        )
        build.add_metric([health.version], 1.0)
        yield from (up, scrape_s, last_scrape, scrape_errors, source_up, read_s, read_errors, build)
