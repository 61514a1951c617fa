"""The prometheus_client collector: one consistent snapshot of the accounting, rendered as metrics.

Everything a scrape of `/metrics` returns comes from a single `Snapshot` and a single `Health`
taken at the same moment, so a server's energy and token counters are always sampled at the same
instant and `rate(energy) / rate(tokens)` is exact over any range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.accounting.book import Snapshot, WindowFigures
from exporter.exposition.pod_labels import with_pod_labels
from exporter.values import Gpu, PodRef, TokenType


def positive_ratios(
    windows: Iterable[WindowFigures], ratio: Callable[[WindowFigures, TokenType], float | None]
) -> Iterator[tuple[TokenType, str, float]]:
    """(token_type, window label, value) of every per-token ratio that has a positive value.

    A window without tokens of a type has no ratio, and gets no sample rather than NaN or +Inf.
    """
    for w in windows:
        for token_type in TokenType:
            value = ratio(w, token_type)
            if value is not None and value > 0:
                yield token_type, window_label(w.window_s), value


@dataclass(frozen=True, slots=True)
class TargetHealth:
    server: str
    up: bool
    scrape_duration_s: float | None
    last_success_t: float | None
    """Unix time of the latest successful scrape."""
    errors: tuple[tuple[str, int], ...]
    """Failed scrapes so far, by reason."""
    gpus: tuple[Gpu, ...] = ()
    """The GPUs placed on this server."""
    energy_read_duration_s: float | None = None
    """The energy reads taken around the latest successful scrape."""


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source: str
    up: bool
    read_duration_s: float | None
    errors: tuple[tuple[str, int], ...]
    refresh_s: float | None = None
    """Observed time between changes of the source's values, for sources slower than our reads."""
    unchanged: tuple[tuple[Gpu, float], ...] = ()
    """Each GPU of a source that holds values (a scraped dcgm-exporter), and how long its value held."""


@dataclass(frozen=True, slots=True)
class PlacementHealth:
    """The kubelet placement's state (absent with static placement)."""

    up: bool
    errors: tuple[tuple[str, int], ...]
    """Failed calls to the kubelet so far, by reason (and Get refusals, once each)."""


@dataclass(frozen=True, slots=True)
class DraHealth:
    """The DRA ResourceSlice view's state (absent without `placement.dra.enabled`)."""

    up: bool
    errors: tuple[tuple[str, int], ...]
    """Failed calls to the Kubernetes API so far, by reason (and expired watches)."""
    devices: int
    """Devices of the driver the view holds."""
    unresolved: int
    """Claim devices of the servers' pods that no ResourceSlice names."""


@dataclass(frozen=True, slots=True)
class Health:
    version: str
    source: SourceHealth
    targets: tuple[TargetHealth, ...]
    placement: PlacementHealth | None = None
    pods: tuple[tuple[str, PodRef], ...] = ()
    """Server name -> the pod it runs in: its series carry `namespace` and `pod` labels."""
    internal_errors: tuple[tuple[str, int], ...] = ()
    """Unexpected exceptions so far, by component."""
    reload_successful: bool = True
    reload_success_t: float | None = None
    """Unix time of the latest successful config load (start-up or reload)."""
    auth_refused: int = 0
    """Requests refused because their client failed to log in too often."""
    dra: DraHealth | None = None


def window_label(seconds: float) -> str:
    """A window's label value in Prometheus duration notation (60 -> "1m", 90 -> "90s")."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


class TokenwattCollector(Collector):
    """Yields every tokenwatt metric from a snapshot taken when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], tuple[Snapshot, Health]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap, health = self.snapshot()
        yield from self._gpu_metrics(snap)
        pods = dict(health.pods)
        yield from with_pod_labels(self._server_metrics(snap), pods)
        yield from with_pod_labels(self._accounting_metrics(snap), pods)
        yield from with_pod_labels(self._health_metrics(health), pods)
        yield from self._placement_metrics(health.placement, health.dra)
        yield from with_pod_labels(self._rejection_metrics(snap), pods)

    def _placement_metrics(
        self, placement: PlacementHealth | None, dra: DraHealth | None
    ) -> Iterator[Metric]:
        if placement is None:
            return
        up = GaugeMetricFamily(
            "tokenwatt_placement_up",
            "1 if the latest call to the placement source (the kubelet; the Kubernetes API for DRA) "
            "succeeded; while 0 the last good placement stays in force.",
            labels=["source"],
        )
        up.add_metric(["kubelet"], 1.0 if placement.up else 0.0)
        errors = CounterMetricFamily(
            "tokenwatt_placement_errors",
            "Failed calls to the kubelet's pod-resources API, or to the Kubernetes API for DRA, by reason.",
            labels=["source", "reason"],
        )
        for reason, count in placement.errors:
            errors.add_metric(["kubelet", reason], count)
        if dra is not None:
            up.add_metric(["dra"], 1.0 if dra.up else 0.0)
            for reason, count in dra.errors:
                errors.add_metric(["dra", reason], count)
        yield from (up, errors)
        if dra is not None:
            yield GaugeMetricFamily(
                "tokenwatt_placement_dra_devices",
                "Devices of the DRA driver that its ResourceSlices on this node publish (last good view).",
                value=dra.devices,
            )
            yield GaugeMetricFamily(
                "tokenwatt_placement_dra_unresolved_devices",
                "Devices of the servers' DRA claims that no ResourceSlice names (placed on no GPU).",
                value=dra.unresolved,
            )

    def _gpu_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        labels = ["gpu", "uuid", "gpu_model"]
        energy = CounterMetricFamily(
            "tokenwatt_gpu_energy_joules",
            "Energy used by the GPU since tokenwatt started reading it.",
            labels=[*labels, "method"],
        )
        power = GaugeMetricFamily(
            "tokenwatt_gpu_power_watts", "GPU board power at the latest reading.", labels=labels
        )
        last = GaugeMetricFamily(
            "tokenwatt_gpu_last_reading_timestamp_seconds",
            "Unix time of the GPU's latest energy reading (the source's own timestamp).",
            labels=labels,
        )
        for g in snap.gpus:
            values = [str(g.gpu.index), g.gpu.uuid, g.gpu.model]
            energy.add_metric([*values, g.gpu.energy_method], g.energy_j)
            last.add_metric(values, g.t)
            if g.power_w is not None:
                power.add_metric(values, g.power_w)
        yield from (energy, power, last, _share_metric(snap))

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
                for token_type, window, value in positive_ratios(m.windows, WindowFigures.joules_per_token):
                    labels = [s.server, model, token_type, window]
                    jpt.add_metric(labels, value)
                    tpj.add_metric(labels, 1.0 / value)
        yield from (energy, tokens, requests, running, idle, idle_s, unmeasured, jpt, tpj)

    def _accounting_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        """Idle and active figures, GPU attribution, the energy split, load bands, cost and carbon."""
        yield from self._attribution_metrics(snap)
        yield from self._split_metrics(snap)
        yield from self._band_metrics(snap)
        yield from self._cost_metrics(snap)

    def _attribution_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        unattributed = CounterMetricFamily(
            "tokenwatt_gpu_unattributed_energy_joules",
            "GPU energy attributed to no server, up to the GPU's settled horizon.",
            labels=["gpu", "uuid", "gpu_model"],
        )
        for g in snap.gpus:
            unattributed.add_metric([str(g.gpu.index), g.gpu.uuid, g.gpu.model], g.unattributed_j)
        active = GaugeMetricFamily(
            "tokenwatt_active_joules_per_token",
            "Joules per token over the window, idle intervals left out.",
            labels=["server", "model", "token_type", "window"],
        )
        power = GaugeMetricFamily(
            "tokenwatt_server_power_watts",
            "Average power attributed to the server over the window (measured intervals).",
            labels=["server", "window"],
        )
        idle_power = GaugeMetricFamily(
            "tokenwatt_server_idle_power_watts",
            "Loaded-idle power: idle energy divided by idle time within the window.",
            labels=["server", "window"],
        )
        for s in snap.servers:
            for sw in s.windows:
                window = window_label(sw.window_s)
                if sw.power_w is not None:
                    power.add_metric([s.server, window], sw.power_w)
                if sw.idle_power_w is not None:
                    idle_power.add_metric([s.server, window], sw.idle_power_w)
            for m in s.models:
                ratios = positive_ratios(m.windows, WindowFigures.active_joules_per_token)
                for token_type, window, value in ratios:
                    active.add_metric([s.server, m.model or "", token_type, window], value)
        yield from (unattributed, active, power, idle_power)

    def _split_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        prefill = GaugeMetricFamily(
            "tokenwatt_prefill_joules_per_token",
            "Fitted energy per computed prompt token (prefix-cache hits excluded).",
            labels=["server"],
        )
        decode = GaugeMetricFamily(
            "tokenwatt_decode_joules_per_token", "Fitted energy per generated token.", labels=["server"]
        )
        static = GaugeMetricFamily(
            "tokenwatt_static_power_watts", "Fitted power drawn whatever the load.", labels=["server"]
        )
        r_squared = GaugeMetricFamily(
            "tokenwatt_energy_split_r_squared",
            "Coefficient of determination (R squared) of the prefill/decode/static fit.",
            labels=["server"],
        )
        samples = GaugeMetricFamily(
            "tokenwatt_energy_split_samples",
            "Intervals the prefill/decode/static fit used.",
            labels=["server"],
        )
        for s in snap.servers:
            if s.split is None:
                continue
            prefill.add_metric([s.server], s.split.prefill_j_per_token)
            decode.add_metric([s.server], s.split.decode_j_per_token)
            static.add_metric([s.server], s.split.static_w)
            r_squared.add_metric([s.server], s.split.r_squared)
            samples.add_metric([s.server], s.split.samples)
        yield from (prefill, decode, static, r_squared, samples)

    def _band_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            "tokenwatt_server_band_energy_joules",
            "Energy of the intervals whose running requests fall in the load band.",
            labels=["server", "model", "band"],
        )
        tokens = CounterMetricFamily(
            "tokenwatt_server_band_tokens",
            "Tokens of the intervals whose running requests fall in the load band.",
            labels=["server", "model", "band", "token_type"],
        )
        jpt = GaugeMetricFamily(
            "tokenwatt_band_joules_per_token",
            "Joules per token over the window, within one load band.",
            labels=["server", "model", "band", "token_type", "window"],
        )
        for s in snap.servers:
            for m in s.models:
                model = m.model or ""
                for b in m.bands:
                    energy.add_metric([s.server, model, b.band], b.energy_j)
                    tokens.add_metric([s.server, model, b.band, "input"], b.input_tokens)
                    tokens.add_metric([s.server, model, b.band, "output"], b.output_tokens)
                    for token_type, window, value in positive_ratios(
                        b.windows, WindowFigures.joules_per_token
                    ):
                        jpt.add_metric([s.server, model, b.band, token_type, window], value)
        yield from (energy, tokens, jpt)

    def _cost_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        tariff = snap.tariff
        if tariff.price_per_kwh is not None and tariff.currency is not None:
            cost = CounterMetricFamily(
                "tokenwatt_server_energy_cost",
                "Cost of the server's energy at the facility: energy * PUE * price per kWh.",
                labels=["server", "model", "currency"],
            )
            per_token = GaugeMetricFamily(
                "tokenwatt_cost_per_token",
                "Cost per token over the window (idle included), in the configured currency.",
                labels=["server", "model", "token_type", "window", "currency"],
            )
            for s in snap.servers:
                for m in s.models:
                    model = m.model or ""
                    cost.add_metric([s.server, model, tariff.currency], tariff.cost(m.energy_j) or 0.0)
                    for token_type, window, jpt in positive_ratios(m.windows, WindowFigures.joules_per_token):
                        labels = [s.server, model, token_type, window, tariff.currency]
                        per_token.add_metric(labels, tariff.cost(jpt) or 0.0)
            yield from (cost, per_token)
        if tariff.grams_per_kwh is not None:
            carbon = CounterMetricFamily(
                "tokenwatt_server_carbon_grams",
                "Carbon emitted for the server's energy: energy * PUE * grid gCO2e per kWh.",
                labels=["server", "model"],
            )
            carbon_per_token = GaugeMetricFamily(
                "tokenwatt_carbon_grams_per_token",
                "Grams of CO2e per token over the window (idle included).",
                labels=["server", "model", "token_type", "window"],
            )
            for s in snap.servers:
                for m in s.models:
                    model = m.model or ""
                    carbon.add_metric([s.server, model], tariff.carbon_grams(m.energy_j) or 0.0)
                    for token_type, window, jpt in positive_ratios(m.windows, WindowFigures.joules_per_token):
                        labels = [s.server, model, token_type, window]
                        carbon_per_token.add_metric(labels, tariff.carbon_grams(jpt) or 0.0)
            yield from (carbon, carbon_per_token)

    def _health_metrics(self, health: Health) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tokenwatt_target_up",
            "1 if the latest scrape of the server's metrics succeeded.",
            labels=["server"],
        )
        scrape_s = GaugeMetricFamily(
            "tokenwatt_target_scrape_duration_seconds",
            "Duration of the latest scrape: the HTTP request and the parsing of the page alone.",
            labels=["server"],
        )
        bracket_s = GaugeMetricFamily(
            "tokenwatt_target_energy_read_duration_seconds",
            "Duration of the energy reads taken around the latest successful scrape.",
            labels=["server"],
        )
        last_scrape = GaugeMetricFamily(
            "tokenwatt_target_last_success_timestamp_seconds",
            "Unix time of the latest successful scrape of the server.",
            labels=["server"],
        )
        scrape_errors = CounterMetricFamily(
            "tokenwatt_target_scrape_errors", "Failed scrapes, by reason.", labels=["server", "reason"]
        )
        gpu_info = GaugeMetricFamily(
            "tokenwatt_server_gpu_info",
            "1 for each GPU placed on the server; join on gpu/uuid to attribute GPU series to servers.",
            labels=["server", "gpu", "uuid", "gpu_model"],
        )
        for t in health.targets:
            up.add_metric([t.server], 1.0 if t.up else 0.0)
            for g in t.gpus:
                gpu_info.add_metric([t.server, str(g.index), g.uuid, g.model], 1.0)
            if t.scrape_duration_s is not None:
                scrape_s.add_metric([t.server], t.scrape_duration_s)
            if t.energy_read_duration_s is not None:
                bracket_s.add_metric([t.server], t.energy_read_duration_s)
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
        refresh = GaugeMetricFamily(
            "tokenwatt_energy_source_refresh_seconds",
            "Observed time between changes of the energy source's values (a scraped dcgm-exporter).",
            labels=["source"],
        )
        if src.refresh_s is not None:
            refresh.add_metric([src.source], src.refresh_s)
        unchanged = GaugeMetricFamily(
            "tokenwatt_energy_source_gpu_unchanged_seconds",
            "Time the GPU's value on the source's page has not changed (a scraped dcgm-exporter).",
            labels=["source", "gpu", "uuid", "gpu_model"],
        )
        for gpu, age_s in src.unchanged:
            unchanged.add_metric([src.source, str(gpu.index), gpu.uuid, gpu.model], age_s)
        build = GaugeMetricFamily(
            "tokenwatt_build_info", "tokenwatt's version; always 1.", labels=["version"]
        )
        build.add_metric([health.version], 1.0)
        yield from (up, scrape_s, bracket_s, last_scrape, scrape_errors, gpu_info)
        yield from (source_up, read_s, read_errors, refresh, unchanged, build)
        yield from self._daemon_metrics(health)

    def _daemon_metrics(self, health: Health) -> Iterator[Metric]:
        internal = CounterMetricFamily(
            "tokenwatt_internal_errors",
            "Unexpected exceptions in a component, each logged with its traceback; the component restarts.",
            labels=["component"],
        )
        for component, count in health.internal_errors:
            internal.add_metric([component], count)
        reload_ok = GaugeMetricFamily(
            "tokenwatt_config_last_reload_successful", "1 if the latest config reload succeeded."
        )
        reload_ok.add_metric([], 1.0 if health.reload_successful else 0.0)
        reload_t = GaugeMetricFamily(
            "tokenwatt_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful config load (start-up or reload).",
        )
        if health.reload_success_t is not None:
            reload_t.add_metric([], health.reload_success_t)
        refused = CounterMetricFamily(
            "tokenwatt_http_auth_rate_limited",
            "Requests refused (HTTP 429) because their client failed basic auth too often.",
        )
        refused.add_metric([], health.auth_refused)
        yield from (internal, reload_ok, reload_t, refused)

    def _rejection_metrics(self, snap: Snapshot) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            "tokenwatt_energy_rejected_readings",
            "GPU energy readings the validation gate rejected (a gap, never a value), by reason.",
            labels=["reason"],
        )
        for reason, count in snap.rejections.energy:
            energy.add_metric([reason], count)
        scrapes = CounterMetricFamily(
            "tokenwatt_target_rejected_scrapes",
            "Scrapes whose values the validation gate rejected (a gap, never a value), by reason.",
            labels=["server", "reason"],
        )
        for server, reason, count in snap.rejections.scrapes:
            scrapes.add_metric([server, reason], count)
        dropped = CounterMetricFamily(
            "tokenwatt_server_dropped_models",
            "Models left out of the accounting by the server's max_models cap (one per model per scrape).",
            labels=["server"],
        )
        for server, count in snap.dropped_models:
            dropped.add_metric([server], count)
        yield from (energy, scrapes, dropped)


def _share_metric(snap: Snapshot) -> Metric:
    share = GaugeMetricFamily(
        "tokenwatt_gpu_share",
        "The server's share of the GPU's energy over the stretch up to its latest reading, by split method.",
        labels=["server", "gpu", "uuid", "method"],
    )
    for g in snap.gpus:
        for s in g.shares:
            share.add_metric([s.server, str(g.gpu.index), g.gpu.uuid, s.method], s.share)
    return share
