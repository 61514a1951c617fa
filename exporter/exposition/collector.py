"""The metric families of `/metrics`: one consistent snapshot of the accounting, as samples.

Everything a scrape of `/metrics` returns comes from a single `Snapshot` and a single `Health`
taken at the same moment, so a server's energy and token counters are always sampled at the same
instant and `rate(energy) / rate(tokens)` is exact over any range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Literal

from exporter.accounting.figures import ModelFigures, ServerFigures, Snapshot, WindowFigures
from exporter.config import Derived
from exporter.values import Gpu, PodLabels, TokenType

_TOKEN_TYPES = tuple(TokenType)


def positive_ratios(
    windows: Iterable[WindowFigures], ratio: Callable[[WindowFigures, TokenType], float | None]
) -> Iterator[tuple[TokenType, str, float]]:
    """(token_type, window label, value) of every per-token ratio that has a positive value.

    A window without tokens of a type has no ratio, and gets no sample rather than NaN or +Inf.
    """
    for w in windows:
        for token_type in _TOKEN_TYPES:
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
class DiscoveryHealth:
    """Pod discovery (absent with `discovery.source: none`)."""

    up: bool
    servers: int
    """Discovered servers scraped now."""
    rejected: tuple[tuple[str, int], ...]
    """Pods chosen for scraping but skipped for wrong annotations, by reason."""
    errors: tuple[tuple[str, str, int], ...]
    """Failed Kubernetes API requests so far: (request, reason, count)."""


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
    pods: tuple[tuple[str, PodLabels], ...] = ()
    """Server name -> the labels of the pod it runs in, which its series carry."""
    discovery: DiscoveryHealth | None = None
    internal_errors: tuple[tuple[str, int], ...] = ()
    """Unexpected exceptions so far, by component."""
    reload_successful: bool = True
    reload_success_t: float | None = None
    """Unix time of the latest successful config load (start-up or reload)."""
    auth_refused: int = 0
    """Requests refused because their client failed to log in too often."""
    dra: DraHealth | None = None


@lru_cache(maxsize=64)  # the configured windows: a handful
def window_label(seconds: float) -> str:
    """A window's label value in Prometheus duration notation (60 -> "1m", 90 -> "90s")."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Sample = tuple[tuple[str, ...], float]
"""A series' label values (in the order of its family's label names) and its value."""

_LEVELS = (Derived.NONE, Derived.ESSENTIAL, Derived.ALL)


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: its name as `# TYPE` prints it, its type, help text and label names."""

    name: str
    type: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()
    level: Derived = Derived.NONE
    """The lowest `exposition.derived` level that emits it: NONE for counters and the gauges that are
    not windowed ratios (every level emits them)."""
    server_at: int = field(init=False)
    """Index of the `server` label (-1 without one): its pod's labels join the series."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "server_at", self.labels.index("server") if "server" in self.labels else -1)

    def emitted_at(self, derived: Derived) -> bool:
        return _LEVELS.index(self.level) <= _LEVELS.index(derived)


def _counter(name: str, help: str, *labels: str) -> Family:
    return Family(f"{name}_total", "counter", help, labels)


def _gauge(name: str, help: str, *labels: str, level: Derived = Derived.NONE) -> Family:
    return Family(name, "gauge", help, labels, level)


GPU = ("gpu", "uuid", "gpu_model")
SERVER_MODEL = ("server", "model")
RATIO = ("server", "model", "token_type", "window")

GPU_ENERGY = _counter(
    "tokenwatt_gpu_energy_joules",
    "Energy used by the GPU since tokenwatt started reading it.",
    *GPU,
    "method",
)
GPU_POWER = _gauge("tokenwatt_gpu_power_watts", "GPU board power at the latest reading.", *GPU)
GPU_LAST_READING = _gauge(
    "tokenwatt_gpu_last_reading_timestamp_seconds",
    "Unix time of the GPU's latest energy reading (the source's own timestamp).",
    *GPU,
)
GPU_SHARE = _gauge(
    "tokenwatt_gpu_share",
    "The server's share of the GPU's energy over the stretch up to its latest reading, by split method.",
    "server", "gpu", "uuid", "method",
)  # fmt: skip
SERVER_ENERGY = _counter(
    "tokenwatt_server_energy_joules",
    "GPU energy attributed to the model, idle included, at the instant of its token counters.",
    *SERVER_MODEL,
)
SERVER_TOKENS = _counter(
    "tokenwatt_server_tokens",
    "Tokens processed, by token type (input: prompt tokens including cache hits; output: generated).",
    *SERVER_MODEL, "token_type",
)  # fmt: skip
SERVER_REQUESTS = _counter("tokenwatt_server_requests", "Requests the server finished.", *SERVER_MODEL)
SERVER_RUNNING = _gauge(
    "tokenwatt_server_running_requests", "Requests in flight at the latest scrape.", *SERVER_MODEL
)
SERVER_IDLE_ENERGY = _counter(
    "tokenwatt_server_idle_energy_joules",
    "Energy attributed to the server while it processed no token and ran no request.",
    "server",
)
SERVER_IDLE_SECONDS = _counter(
    "tokenwatt_server_idle_seconds", "Time the server spent idle (measured intervals only).", "server"
)
SERVER_UNMEASURED = _counter(
    "tokenwatt_server_unmeasured_seconds",
    "Time whose energy could not be measured (a gap in the energy readings); left out of ratios.",
    "server",
)
JOULES_PER_TOKEN = _gauge(
    "tokenwatt_joules_per_token",
    "Joules per token over the window: measured energy divided by tokens of that type.",
    *RATIO, level=Derived.ESSENTIAL,
)  # fmt: skip
TOKENS_PER_JOULE = _gauge(
    "tokenwatt_tokens_per_joule",
    "Tokens per joule over the window (the inverse of tokenwatt_joules_per_token).",
    *RATIO, level=Derived.ALL,
)  # fmt: skip
GPU_UNATTRIBUTED = _counter(
    "tokenwatt_gpu_unattributed_energy_joules",
    "GPU energy attributed to no server, up to the GPU's settled horizon.",
    *GPU,
)
ACTIVE_JOULES_PER_TOKEN = _gauge(
    "tokenwatt_active_joules_per_token",
    "Joules per token over the window, idle intervals left out.",
    *RATIO, level=Derived.ALL,
)  # fmt: skip
SERVER_POWER = _gauge(
    "tokenwatt_server_power_watts",
    "Average power attributed to the server over the window (measured intervals).",
    "server", "window", level=Derived.ESSENTIAL,
)  # fmt: skip
SERVER_IDLE_POWER = _gauge(
    "tokenwatt_server_idle_power_watts",
    "Loaded-idle power: idle energy divided by idle time within the window.",
    "server", "window", level=Derived.ALL,
)  # fmt: skip
PREFILL = _gauge(
    "tokenwatt_prefill_joules_per_token",
    "Fitted energy per computed prompt token (prefix-cache hits excluded).",
    "server",
)
DECODE = _gauge("tokenwatt_decode_joules_per_token", "Fitted energy per generated token.", "server")
STATIC = _gauge("tokenwatt_static_power_watts", "Fitted power drawn whatever the load.", "server")
SPLIT_R_SQUARED = _gauge(
    "tokenwatt_energy_split_r_squared",
    "Coefficient of determination (R squared) of the prefill/decode/static fit.",
    "server",
)
SPLIT_SAMPLES = _gauge(
    "tokenwatt_energy_split_samples", "Intervals the prefill/decode/static fit used.", "server"
)
BAND_ENERGY = _counter(
    "tokenwatt_server_band_energy_joules",
    "Energy of the intervals whose running requests fall in the load band.",
    *SERVER_MODEL, "band",
)  # fmt: skip
BAND_TOKENS = _counter(
    "tokenwatt_server_band_tokens",
    "Tokens of the intervals whose running requests fall in the load band.",
    *SERVER_MODEL, "band", "token_type",
)  # fmt: skip
BAND_JOULES_PER_TOKEN = _gauge(
    "tokenwatt_band_joules_per_token",
    "Joules per token over the window, within one load band.",
    *SERVER_MODEL, "band", "token_type", "window", level=Derived.ALL,
)  # fmt: skip
COST = _counter(
    "tokenwatt_server_energy_cost",
    "Cost of the server's energy at the facility: energy * PUE * price per kWh.",
    *SERVER_MODEL, "currency",
)  # fmt: skip
COST_PER_TOKEN = _gauge(
    "tokenwatt_cost_per_token",
    "Cost per token over the window (idle included), in the configured currency.",
    *RATIO, "currency", level=Derived.ALL,
)  # fmt: skip
CARBON = _counter(
    "tokenwatt_server_carbon_grams",
    "Carbon emitted for the server's energy: energy * PUE * grid gCO2e per kWh.",
    *SERVER_MODEL,
)
CARBON_PER_TOKEN = _gauge(
    "tokenwatt_carbon_grams_per_token",
    "Grams of CO2e per token over the window (idle included).",
    *RATIO, level=Derived.ALL,
)  # fmt: skip
TARGET_UP = _gauge(
    "tokenwatt_target_up", "1 if the latest scrape of the server's metrics succeeded.", "server"
)
TARGET_SCRAPE_DURATION = _gauge(
    "tokenwatt_target_scrape_duration_seconds",
    "Duration of the latest scrape: the HTTP request and the parsing of the page alone.",
    "server",
)
TARGET_ENERGY_READ_DURATION = _gauge(
    "tokenwatt_target_energy_read_duration_seconds",
    "Duration of the energy reads taken around the latest successful scrape.",
    "server",
)
TARGET_LAST_SUCCESS = _gauge(
    "tokenwatt_target_last_success_timestamp_seconds",
    "Unix time of the latest successful scrape of the server.",
    "server",
)
TARGET_SCRAPE_ERRORS = _counter(
    "tokenwatt_target_scrape_errors", "Failed scrapes, by reason.", "server", "reason"
)
SERVER_GPU_INFO = _gauge(
    "tokenwatt_server_gpu_info",
    "1 for each GPU placed on the server; join on gpu/uuid to attribute GPU series to servers.",
    "server", *GPU,
)  # fmt: skip
SOURCE_UP = _gauge("tokenwatt_energy_source_up", "1 if the latest energy read succeeded.", "source")
SOURCE_READ_DURATION = _gauge(
    "tokenwatt_energy_read_duration_seconds", "Duration of the latest energy read.", "source"
)
SOURCE_READ_ERRORS = _counter(
    "tokenwatt_energy_read_errors", "Failed energy reads, by reason.", "source", "reason"
)
SOURCE_REFRESH = _gauge(
    "tokenwatt_energy_source_refresh_seconds",
    "Observed time between changes of the energy source's values (a scraped dcgm-exporter).",
    "source",
)
SOURCE_GPU_UNCHANGED = _gauge(
    "tokenwatt_energy_source_gpu_unchanged_seconds",
    "Time the GPU's value on the source's page has not changed (a scraped dcgm-exporter).",
    "source", *GPU,
)  # fmt: skip
BUILD_INFO = _gauge("tokenwatt_build_info", "tokenwatt's version; always 1.", "version")
INTERNAL_ERRORS = _counter(
    "tokenwatt_internal_errors",
    "Unexpected exceptions in a component, each logged with its traceback; the component restarts.",
    "component",
)
RELOAD_SUCCESSFUL = _gauge(
    "tokenwatt_config_last_reload_successful", "1 if the latest config reload succeeded."
)
RELOAD_SUCCESS_TIME = _gauge(
    "tokenwatt_config_last_reload_success_timestamp_seconds",
    "Unix time of the latest successful config load (start-up or reload).",
)
AUTH_RATE_LIMITED = _counter(
    "tokenwatt_http_auth_rate_limited",
    "Requests refused (HTTP 429) because their client failed basic auth too often.",
)
PLACEMENT_UP = _gauge(
    "tokenwatt_placement_up",
    "1 if the latest call to the placement source (the kubelet; the Kubernetes API for DRA) "
    "succeeded; while 0 the last good placement stays in force.",
    "source",
)
PLACEMENT_ERRORS = _counter(
    "tokenwatt_placement_errors",
    "Failed calls to the kubelet's pod-resources API, or to the Kubernetes API for DRA, by reason.",
    "source", "reason",
)  # fmt: skip
DRA_DEVICES = _gauge(
    "tokenwatt_placement_dra_devices",
    "Devices of the DRA driver that its ResourceSlices on this node publish (last good view).",
)
DRA_UNRESOLVED = _gauge(
    "tokenwatt_placement_dra_unresolved_devices",
    "Devices of the servers' DRA claims that no ResourceSlice names (placed on no GPU).",
)
DISCOVERY_UP = _gauge(
    "tokenwatt_discovery_up",
    "1 if the latest list or watch of the node's pods succeeded; while 0 the last view stays in force.",
    "source",
)
DISCOVERED_SERVERS = _gauge("tokenwatt_discovered_servers", "Discovered servers scraped now.", "source")
DISCOVERY_REJECTED = _gauge(
    "tokenwatt_discovery_rejected_pods",
    "Pods chosen for scraping but skipped because their annotations are wrong, by reason.",
    "source", "reason",
)  # fmt: skip
DISCOVERY_ERRORS = _counter(
    "tokenwatt_discovery_errors",
    "Failed requests to the Kubernetes API, by request (list, watch, owner) and reason.",
    "source", "request", "reason",
)  # fmt: skip
REJECTED_READINGS = _counter(
    "tokenwatt_energy_rejected_readings",
    "GPU energy readings the validation gate rejected (a gap, never a value), by reason.",
    "reason",
)
REJECTED_SCRAPES = _counter(
    "tokenwatt_target_rejected_scrapes",
    "Scrapes whose values the validation gate rejected (a gap, never a value), by reason.",
    "server", "reason",
)  # fmt: skip
DROPPED_MODELS = _counter(
    "tokenwatt_server_dropped_models",
    "Models left out of the accounting by the server's max_models cap (one per model per scrape).",
    "server",
)

FamilySamples = tuple[Family, Iterable[Sample]]


class TokenwattCollector:
    """Where `/metrics` takes its snapshot from, and which derived figures it carries."""

    def __init__(
        self, snapshot: Callable[[], tuple[Snapshot, Health]], derived: Derived = Derived.ALL
    ) -> None:
        self.snapshot = snapshot
        self.derived = derived


def families(snap: Snapshot, health: Health, derived: Derived) -> Iterator[FamilySamples]:
    """Each family emitted at the `derived` level, with its samples (computed as they are read:
    the windowed ratios a level leaves out are never computed)."""
    for family, samples in _families(snap, health):
        if family.emitted_at(derived):
            yield family, samples


def _families(snap: Snapshot, health: Health) -> Iterator[FamilySamples]:
    yield from _gpu_families(snap)
    jpt = cache(lambda: tuple(_ratios(snap, WindowFigures.joules_per_token)))
    yield from _server_families(snap, jpt)
    yield from _accounting_families(snap, jpt)
    yield from _health_families(health)
    yield from _placement_families(health.placement, health.dra)
    yield from _discovery_families(health.discovery)
    yield from _rejection_families(snap)


def _models(snap: Snapshot) -> Iterator[tuple[ServerFigures, ModelFigures, str]]:
    for s in snap.servers:
        for m in s.models:
            yield s, m, m.model or ""


def _gpu_labels(gpu: Gpu) -> tuple[str, str, str]:
    return str(gpu.index), gpu.uuid, gpu.model


def _gpu_families(snap: Snapshot) -> Iterator[FamilySamples]:
    gpus = snap.gpus
    yield GPU_ENERGY, (((*_gpu_labels(g.gpu), g.gpu.energy_method), g.energy_j) for g in gpus)
    yield GPU_POWER, ((_gpu_labels(g.gpu), g.power_w) for g in gpus if g.power_w is not None)
    yield GPU_LAST_READING, ((_gpu_labels(g.gpu), g.t) for g in gpus)
    yield (
        GPU_SHARE,
        (((s.server, str(g.gpu.index), g.gpu.uuid, s.method), s.share) for g in gpus for s in g.shares),
    )


RatioSample = tuple[tuple[str, str, str, str], float]
"""(server, model, token_type, window) and the ratio."""


def _ratios(
    snap: Snapshot, ratio: Callable[[WindowFigures, TokenType], float | None]
) -> Iterator[RatioSample]:
    """(server, model, token_type, window) and value of every positive ratio of every model."""
    for s, m, model in _models(snap):
        for token_type, window, value in positive_ratios(m.windows, ratio):
            yield (s.server, model, token_type, window), value


def _later(samples: Callable[[], Iterable[RatioSample]]) -> Iterator[RatioSample]:
    """The samples, computed when the first is read (never, for a family the level leaves out)."""
    yield from samples()


def _server_families(snap: Snapshot, jpt: Callable[[], Iterable[RatioSample]]) -> Iterator[FamilySamples]:
    """`jpt`: each model's J/token samples, computed once for every family that needs them."""
    servers = snap.servers
    yield SERVER_ENERGY, (((s.server, model), m.energy_j) for s, m, model in _models(snap))
    yield (
        SERVER_TOKENS,
        (
            sample
            for s, m, model in _models(snap)
            for sample in (
                ((s.server, model, "input"), m.input_tokens),
                ((s.server, model, "output"), m.output_tokens),
            )
        ),
    )
    yield (
        SERVER_REQUESTS,
        (((s.server, model), m.requests) for s, m, model in _models(snap) if m.requests is not None),
    )
    yield (
        SERVER_RUNNING,
        (((s.server, model), m.running) for s, m, model in _models(snap) if m.running is not None),
    )
    yield SERVER_IDLE_ENERGY, (((s.server,), s.idle_energy_j) for s in servers)
    yield SERVER_IDLE_SECONDS, (((s.server,), s.idle_s) for s in servers)
    yield SERVER_UNMEASURED, (((s.server,), s.unmeasured_s) for s in servers)
    yield JOULES_PER_TOKEN, _later(jpt)
    yield (
        TOKENS_PER_JOULE,
        ((labels, 1.0 / value) for labels, value in _later(jpt)),
    )


def _accounting_families(snap: Snapshot, jpt: Callable[[], Iterable[RatioSample]]) -> Iterator[FamilySamples]:
    """Idle and active figures, GPU attribution, the energy split, load bands, cost and carbon."""
    servers = snap.servers
    yield GPU_UNATTRIBUTED, ((_gpu_labels(g.gpu), g.unattributed_j) for g in snap.gpus)
    yield ACTIVE_JOULES_PER_TOKEN, _ratios(snap, WindowFigures.active_joules_per_token)
    yield (
        SERVER_POWER,
        (
            ((s.server, window_label(w.window_s)), power)
            for s in servers
            for w in s.windows
            if (power := w.power_w) is not None
        ),
    )
    yield (
        SERVER_IDLE_POWER,
        (
            ((s.server, window_label(w.window_s)), power)
            for s in servers
            for w in s.windows
            if (power := w.idle_power_w) is not None
        ),
    )
    fits = [((s.server,), s.split) for s in servers if s.split is not None]
    yield PREFILL, ((server, fit.prefill_j_per_token) for server, fit in fits)
    yield DECODE, ((server, fit.decode_j_per_token) for server, fit in fits)
    yield STATIC, ((server, fit.static_w) for server, fit in fits)
    yield SPLIT_R_SQUARED, ((server, fit.r_squared) for server, fit in fits)
    yield SPLIT_SAMPLES, ((server, fit.samples) for server, fit in fits)
    bands = [(s.server, model, b) for s, m, model in _models(snap) for b in m.bands]
    yield BAND_ENERGY, (((server, model, b.band), b.energy_j) for server, model, b in bands)
    yield (
        BAND_TOKENS,
        (
            sample
            for server, model, b in bands
            for sample in (
                ((server, model, b.band, "input"), b.input_tokens),
                ((server, model, b.band, "output"), b.output_tokens),
            )
        ),
    )
    yield (
        BAND_JOULES_PER_TOKEN,
        (
            ((server, model, b.band, token_type, window), value)
            for server, model, b in bands
            for token_type, window, value in positive_ratios(b.windows, WindowFigures.joules_per_token)
        ),
    )
    tariff = snap.tariff
    if tariff.price_per_kwh is not None and tariff.currency is not None:
        yield from _priced_families(snap, jpt, COST, COST_PER_TOKEN, tariff.cost, (tariff.currency,))
    if tariff.grams_per_kwh is not None:
        yield from _priced_families(snap, jpt, CARBON, CARBON_PER_TOKEN, tariff.carbon_grams, ())


def _priced_families(
    snap: Snapshot,
    jpt: Callable[[], Iterable[RatioSample]],
    total: Family,
    per_token: Family,
    convert: Callable[[float], float | None],
    extra: tuple[str, ...],
) -> Iterator[FamilySamples]:
    """A cost of energy (money, carbon): each model's total, and per token over each window.

    `extra` are the values of the labels both families add (the currency).
    """
    yield total, (((s.server, model, *extra), convert(m.energy_j) or 0.0) for s, m, model in _models(snap))
    yield (
        per_token,
        (((*labels, *extra), convert(value) or 0.0) for labels, value in _later(jpt)),
    )


def _health_families(health: Health) -> Iterator[FamilySamples]:
    targets = health.targets
    yield TARGET_UP, (((t.server,), 1.0 if t.up else 0.0) for t in targets)
    yield (
        TARGET_SCRAPE_DURATION,
        (((t.server,), t.scrape_duration_s) for t in targets if t.scrape_duration_s is not None),
    )
    yield (
        TARGET_ENERGY_READ_DURATION,
        (((t.server,), t.energy_read_duration_s) for t in targets if t.energy_read_duration_s is not None),
    )
    yield (
        TARGET_LAST_SUCCESS,
        (((t.server,), t.last_success_t) for t in targets if t.last_success_t is not None),
    )
    yield TARGET_SCRAPE_ERRORS, (((t.server, reason), count) for t in targets for reason, count in t.errors)
    yield SERVER_GPU_INFO, (((t.server, *_gpu_labels(g)), 1.0) for t in targets for g in t.gpus)
    src = health.source
    yield SOURCE_UP, [((src.source,), 1.0 if src.up else 0.0)]
    yield (
        SOURCE_READ_DURATION,
        [((src.source,), src.read_duration_s)] if src.read_duration_s is not None else [],
    )
    yield SOURCE_READ_ERRORS, (((src.source, reason), count) for reason, count in src.errors)
    yield SOURCE_REFRESH, [((src.source,), src.refresh_s)] if src.refresh_s is not None else []
    yield SOURCE_GPU_UNCHANGED, (((src.source, *_gpu_labels(gpu)), age_s) for gpu, age_s in src.unchanged)
    yield BUILD_INFO, [((health.version,), 1.0)]
    yield INTERNAL_ERRORS, (((component,), count) for component, count in health.internal_errors)
    yield RELOAD_SUCCESSFUL, [((), 1.0 if health.reload_successful else 0.0)]
    yield RELOAD_SUCCESS_TIME, [((), health.reload_success_t)] if health.reload_success_t is not None else []
    yield AUTH_RATE_LIMITED, [((), health.auth_refused)]


def _placement_families(placement: PlacementHealth | None, dra: DraHealth | None) -> Iterator[FamilySamples]:
    if placement is None:
        return
    dra_up = [(("dra",), 1.0 if dra.up else 0.0)] if dra is not None else []
    yield PLACEMENT_UP, [(("kubelet",), 1.0 if placement.up else 0.0), *dra_up]
    dra_errors = dra.errors if dra is not None else ()
    yield (
        PLACEMENT_ERRORS,
        [
            *((("kubelet", reason), count) for reason, count in placement.errors),
            *((("dra", reason), count) for reason, count in dra_errors),
        ],
    )
    if dra is not None:
        yield DRA_DEVICES, [((), dra.devices)]
        yield DRA_UNRESOLVED, [((), dra.unresolved)]


def _discovery_families(discovery: DiscoveryHealth | None) -> Iterator[FamilySamples]:
    if discovery is None:
        return
    yield DISCOVERY_UP, [(("kubernetes",), 1.0 if discovery.up else 0.0)]
    yield DISCOVERED_SERVERS, [(("kubernetes",), discovery.servers)]
    yield DISCOVERY_REJECTED, ((("kubernetes", reason), count) for reason, count in discovery.rejected)
    yield (
        DISCOVERY_ERRORS,
        ((("kubernetes", request, reason), count) for request, reason, count in discovery.errors),
    )


def _rejection_families(snap: Snapshot) -> Iterator[FamilySamples]:
    rejections = snap.rejections
    yield REJECTED_READINGS, (((reason,), count) for reason, count in rejections.energy)
    yield REJECTED_SCRAPES, (((server, reason), count) for server, reason, count in rejections.scrapes)
    yield DROPPED_MODELS, (((server,), count) for server, count in snap.dropped_models)
