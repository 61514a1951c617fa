"""The configuration's typed, validated settings.

Every error names the field (as a path such as `servers[1].interval`), the value found and what is
allowed, so `tokenwatt check-config` can print one actionable line per problem. This module imports
nothing else of tokenwatt: every layer may read its settings, and what the settings mean (a server
kind's profile, an energy source's driver) is decided where that layer lives. Reading the file is
`exporter.config_file`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import reprlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

DEFAULT_PORT = 9839
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_GPU_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z-]+")
_POD_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9.-]+/[A-Za-z0-9._-]+")
_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")
MIN_DURATION_S = 0.001
MAX_DURATION_S = 31 * 86400.0
DEFAULT_MAX_MODELS = 64
DEFAULT_MODEL_EXPIRY_S = 600.0

_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 6
_SHOW.maxlevel = 3


def show(value: object) -> str:
    """A short repr of a value from the file: long strings and big or deep structures abridged."""
    return _SHOW.repr(value)


class ConfigError(Exception):
    """The configuration is invalid; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> float:
    """A Prometheus-style duration (`500ms`, `1s`, `1m30s`) in seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration string such as 500ms, 1s or 5m, got {show(value)}")
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"{show(value)} is not a duration; use a number with a unit ms, s, m, h or d, e.g. 500ms, 5m"
        )
    if not MIN_DURATION_S <= total <= MAX_DURATION_S:
        raise ValueError(f"{show(value)} is out of range; a duration is from 1ms to 31d")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


def validate_listen(value: object) -> str:
    """A HOST:PORT listen address, or ValueError saying what is wrong with it."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:{DEFAULT_PORT}, got {show(value)}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"the port in {show(value)} must be a number from 0 (any free port) to 65535")
    if not host:
        raise ValueError(f"the host in {show(value)} is empty; use 0.0.0.0 for every interface")
    if not _valid_host(host[1:-1] if host.startswith("[") and host.endswith("]") else host):
        raise ValueError(
            f"the host in {show(value)} is neither an IP address nor a host name; "
            "write IPv6 addresses in brackets, e.g. [::1]:9839"
        )
    return value


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))
    return True


Listen = Annotated[str, BeforeValidator(validate_listen)]


class Strict(BaseModel):
    """A settings model: frozen, and a key it does not know is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=Strict)


class EnergyConfig(Strict):
    """`energy:`: the settings every source shares, and each source's own section kept as written.

    Which names `source` allows and what a section holds belong to the sources (`exporter.energy`);
    `config_file.validate_config` checks both against the registry, and a source reads its section
    with `section`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    source: str = "auto"
    interval: Duration = 1.0
    timeout: Duration = 5.0
    """Deadline of one read: a read that overruns it is a failed read (`reason="timeout"`)."""
    gap_limit: Duration | None = None
    """Readings further apart than this do not bracket a token instant; the default depends on the
    source (`exporter.energy.gap_limit_s`)."""

    def section(self, name: str, model: type[S]) -> S:
        """The `energy.<name>:` section as the source's settings model (its defaults where absent)."""
        return model.model_validate((self.model_extra or {}).get(name, {}))


def _gpu_selector(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError(f"expected a GPU index or UUID, got {show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"GPU index {value} is negative")
        return value
    if isinstance(value, str) and _GPU_UUID.fullmatch(value):
        return value
    raise ValueError(f"expected a GPU index (0, 1, ...) or a UUID (GPU-..., MIG-...), got {show(value)}")


GpuSelector = Annotated[int | str, BeforeValidator(_gpu_selector)]
AUTO_KIND = "auto"
"""`servers[].kind` that has the kind detected from the server's first page."""
GENERIC_KIND = "generic"
"""`servers[].kind` of a server read through the families its `generic:` mapping names; the other kinds
are the profiles of `exporter.tokens.profiles`, where `config_file.validate_config` checks them."""


def _server_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value):
        raise ValueError(f"{show(value)} is not a server name: use 1-128 letters, digits and _ . : -")
    return value


def _url(value: object) -> str:
    allowed = "it must start with http:// or https://, name a host and, if any, a port from 1 to 65535"
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value) or re.search(r"\s", value):
        raise ValueError(f"{show(value)} is not a URL: {allowed}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{show(value)} is not a URL ({e}): {allowed}") from None
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        raise ValueError(f"{show(value)} is not a URL: {allowed}")
    return value


Url = Annotated[str, BeforeValidator(_url)]
"""An http:// or https:// URL naming a host and, if any, a port from 1 to 65535."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _metric_name(value: object) -> str:
    if not isinstance(value, str) or not _METRIC_NAME.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a sample name: use letters, digits, _ and :, not starting with a digit "
            "(e.g. my_prompt_tokens_total, or a histogram's my_input_length_sum)"
        )
    return value


def _label_name(value: object) -> str:
    if not isinstance(value, str) or not _LABEL_NAME.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a label name: use letters, digits and _, not starting with a digit"
        )
    return value


def _series_entry(value: object) -> object:
    """A bare sample name is shorthand for `{name: NAME}`."""
    return {"name": value} if isinstance(value, str) else value


LabelName = Annotated[str, BeforeValidator(_label_name)]


class GenericSeriesConfig(Strict):
    name: Annotated[str, BeforeValidator(_metric_name)]
    where: dict[LabelName, str] = Field(default_factory=dict)
    """Only samples carrying every one of these label values count."""


GenericSeriesList = list[Annotated[GenericSeriesConfig, BeforeValidator(_series_entry)]]


class GenericConfig(Strict):
    """The families of a server tokenwatt has no profile for; each quantity is the sum of its series."""

    model_label: LabelName | None = None
    input_tokens: GenericSeriesList = Field(min_length=1)
    output_tokens: GenericSeriesList = Field(min_length=1)
    requests: GenericSeriesList = Field(default_factory=list)
    running: GenericSeriesList = Field(default_factory=list)
    cached_input_tokens: GenericSeriesList = Field(default_factory=list)
    replica_labels: list[LabelName] = Field(default_factory=list)


POD_UID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _pod(value: object) -> str:
    if isinstance(value, str) and value.count("/") == 1:
        namespace, name = value.split("/")
        if _POD_NAMESPACE.fullmatch(namespace) and _POD_NAME.fullmatch(name):
            return value
    raise ValueError(
        f"expected NAMESPACE/NAME of a pod (lower-case letters, digits, - and .), such as llm/vllm-0, "
        f"got {value!r}"
    )


def _resource_name(value: object) -> str:
    if not isinstance(value, str) or not _RESOURCE_NAME.fullmatch(value):
        raise ValueError(f"expected an extended resource name such as example.com/gpu, got {value!r}")
    return value


class ServerConfig(Strict):
    name: Annotated[str, BeforeValidator(_server_name)]
    url: Url
    kind: str = AUTO_KIND
    gpus: list[GpuSelector] | None = None
    """Indices or UUIDs; None means every GPU the energy source sees."""
    interval: Duration = 1.0
    timeout: Duration = 5.0
    max_page_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    generic: GenericConfig | None = None
    """The families to read; required by `kind: generic` and only allowed with it."""
    pod: Annotated[str, BeforeValidator(_pod)] | None = None
    """NAMESPACE/NAME of the pod the server runs in; its GPUs come from the kubelet."""
    pod_uid: str | None = Field(None, pattern=POD_UID_PATTERN)
    """UID of the Kubernetes pod the server runs in (Downward API `metadata.uid`): matches the
    server to its pod's processes, so a GPU it shares whole is split by measured activity. With
    kubelet placement, the pod named by POD_NAMESPACE/POD_NAME takes it from POD_UID when not given."""
    max_models: int = Field(DEFAULT_MAX_MODELS, ge=1, le=10_000)
    """Models of this server taken into the accounting; more are dropped (and counted)."""
    model_expiry: Duration = DEFAULT_MODEL_EXPIRY_S
    """A model not on the page for this long leaves the accounting and `/metrics`."""

    @model_validator(mode="after")
    def _check_generic(self) -> ServerConfig:
        if self.pod is not None and self.gpus is not None:
            raise ValueError(
                f"gpus: {self.gpus!r} and pod: {self.pod!r} are both set; give one: pod: takes the pod's "
                "GPUs from the kubelet, gpus: lists them"
            )
        if self.kind == GENERIC_KIND and self.generic is None:
            raise ValueError(
                "kind: generic needs a generic: mapping that names at least input_tokens and output_tokens"
            )
        if self.generic is not None and self.kind != GENERIC_KIND:
            raise ValueError(f"generic: is only read with kind: generic, but kind is {self.kind!r}")
        return self


class KubeletConfig(Strict):
    socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    """The kubelet's pod-resources socket (mount its directory, not the file)."""

    @field_validator("socket")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} is not an absolute path; give the socket's full path")
        return value

    interval: Duration = 10.0
    """How often the pods' devices are asked for (again at once when a server restarts)."""
    timeout: Duration = 5.0
    """Deadline of each call to the kubelet."""
    resources: list[Annotated[str, BeforeValidator(_resource_name)]] = Field(default_factory=list)
    """Resource names to place besides nvidia.com/gpu, nvidia.com/gpu.shared, nvidia.com/mig-* and
    amd.com/gpu (e.g. a renamed nvidia.com/a100)."""


_DRA_DRIVER = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+")


def _dra_driver(value: object) -> str:
    if not isinstance(value, str) or not _DRA_DRIVER.fullmatch(value):
        raise ValueError(
            "expected a DRA driver name, a lower-case DNS subdomain such as gpu.nvidia.com, "
            f"got {show(value)}"
        )
    return value


class DraConfig(Strict):
    enabled: bool = False
    """Place GPUs that pod-resources reports as DRA claims, through the driver's ResourceSlices."""
    driver: Annotated[str, BeforeValidator(_dra_driver)] = "gpu.nvidia.com"
    """The DRA driver whose claims are GPUs (NVIDIA's DRA driver for GPUs by default)."""


class PlacementConfig(Strict):
    source: Literal["static", "kubelet"] = "static"
    """`static`: each server's gpus: (all GPUs without it); `kubelet`: the GPUs of each server's pod."""
    kubelet: KubeletConfig = KubeletConfig()
    dra: DraConfig = DraConfig()

    @model_validator(mode="after")
    def _dra_needs_kubelet(self) -> PlacementConfig:
        if self.dra.enabled and self.source != "kubelet":
            raise ValueError(
                f"dra.enabled: true needs source: kubelet (it is {self.source!r}): "
                "DRA claims are read from the kubelet's pod-resources API"
            )
        return self


_K8S_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_K8S_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY = re.compile(rf"(({_K8S_PREFIX})/)?{_K8S_NAME}")
"""A Kubernetes label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters."""
LABEL_VALUE = re.compile(rf"({_K8S_NAME})?")
"""A Kubernetes label value: empty, or up to 63 characters starting and ending alphanumeric."""


def pod_label_name(key: str) -> str:
    """The series label a pod label becomes: `label_` and the key with every other character than a
    letter, digit or _ replaced by _ (`app.kubernetes.io/name` -> `label_app_kubernetes_io_name`)."""
    return "label_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def _label_selector(value: object) -> str:
    """Its syntax is checked where it is parsed (`exporter.kube.selector`, by `config_file`)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a Kubernetes label selector such as app=vllm, got {show(value)}")
    return value


def _pod_label_key(value: object) -> str:
    if not isinstance(value, str) or not LABEL_KEY.fullmatch(value):
        raise ValueError(f"{show(value)} is not a Kubernetes label key such as app or app.kubernetes.io/name")
    return value


class KubernetesDiscoveryConfig(Strict):
    node_name: str = ""
    """This node's name; empty: the NODE_NAME environment variable (the Downward API's spec.nodeName)."""
    kubeconfig: Path | None = None
    """A kubeconfig file; null: in-cluster credentials where KUBERNETES_SERVICE_HOST is set, else
    $KUBECONFIG. Relative to the config file's folder."""
    label_selector: Annotated[str, BeforeValidator(_label_selector)] = ""
    """Only pods these labels select (sent to the API server); with require_annotation both must hold."""
    require_annotation: bool = True
    """Only pods annotated tokenwatt.io/scrape: "true"."""
    pod_labels: list[Annotated[str, BeforeValidator(_pod_label_key)]] = Field(default_factory=list)
    """Pod labels copied onto the pod's series as label_<name, sanitized>."""
    grace_period: Duration = 300.0
    """A pod that went away keeps its counters on /metrics this long, then its series go."""
    interval: Duration = 1.0
    """Scrape interval of discovered servers."""
    timeout: Duration = 5.0
    """Scrape deadline of discovered servers, and the deadline of each Kubernetes API request."""

    @model_validator(mode="after")
    def _check(self) -> KubernetesDiscoveryConfig:
        names = [pod_label_name(k) for k in self.pod_labels]
        clashes = sorted({k for k in self.pod_labels if names.count(pod_label_name(k)) > 1})
        if clashes:
            label = pod_label_name(clashes[0])
            raise ValueError(f"pod_labels: {', '.join(clashes)} all become the label {label}; keep one")
        if not self.require_annotation and not self.label_selector.strip():
            raise ValueError(
                "require_annotation: false needs a label_selector: without either, every pod on the node "
                "would be scraped"
            )
        return self


class DiscoveryConfig(Strict):
    source: Literal["none", "kubernetes"] = "none"
    """`kubernetes`: scrape the annotated pods of this node, found through the Kubernetes API."""
    kubernetes: KubernetesDiscoveryConfig = KubernetesDiscoveryConfig()

    @property
    def node(self) -> str:
        """The node whose pods are discovered: `kubernetes.node_name`, else $NODE_NAME."""
        return self.kubernetes.node_name or os.environ.get("NODE_NAME", "")


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """`auto`: console on a terminal, JSON otherwise."""


class PricingConfig(Strict):
    price_per_kwh: float = Field(ge=0)
    """Price of one kWh at the facility meter, in `currency`."""
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    """ISO 4217 code, e.g. USD, EUR."""


class CarbonConfig(Strict):
    grams_per_kwh: float = Field(ge=0)
    """Grid carbon intensity in gCO2e per kWh."""


class EnergySplitConfig(Strict):
    window: Duration = 600.0
    """The recent intervals the prefill/decode/static fit is computed over."""
    block: Duration = 5.0
    """Consecutive intervals are summed into blocks at least this long before fitting."""


def _load_bands(value: object) -> list[int]:
    allowed = (
        "ascending positive integers (upper bounds of the bands of running requests), e.g. [4, 16, 64, 256]"
    )
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected {allowed}, got {show(value)}")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in value):
        raise ValueError(f"expected {allowed}, got {show(value)}")
    if value != sorted(set(value)):
        raise ValueError(f"{show(value)} is not ascending; expected {allowed}")
    return value


class Derived(StrEnum):
    """Which derived figures `/metrics` carries besides the counters (`exposition.derived`)."""

    ALL = "all"
    """Every windowed ratio."""
    ESSENTIAL = "essential"
    """The windowed J/token and server power only; recording rules compute the rest."""
    NONE = "none"
    """No windowed ratio: recording rules compute them all from the counters."""


class ExpositionConfig(Strict):
    derived: Derived = Derived.ALL
    """Which windowed ratios `/metrics` carries besides the counters; recording rules compute the rest."""


class Config(Strict):
    listen: Listen = DEFAULT_LISTEN
    web_config_file: Path | None = None
    """TLS and basic auth, exporter-toolkit format; relative to the config file's folder."""
    energy: EnergyConfig = EnergyConfig()
    servers: list[ServerConfig] = Field(default_factory=list)
    windows: list[Duration] = Field(default_factory=lambda: [60.0, 300.0, 900.0])
    logging: LoggingConfig = LoggingConfig()
    load_bands: Annotated[list[int], BeforeValidator(_load_bands)] = Field(
        default_factory=lambda: [4, 16, 64, 256]
    )
    energy_split: EnergySplitConfig = EnergySplitConfig()
    pue: float = Field(1.0, ge=1.0)
    """Power usage effectiveness of the facility (total energy / IT energy), for cost and carbon."""
    pricing: PricingConfig | None = None
    carbon: CarbonConfig | None = None
    placement: PlacementConfig = PlacementConfig()
    exposition: ExpositionConfig = ExpositionConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()

    @model_validator(mode="before")
    @classmethod
    def _pods_from_environment(cls, data: object) -> object:
        """With kubelet placement, a server without pod: or gpus: is the pod named by the Downward API
        (POD_NAMESPACE, POD_NAME), and that pod's UID is POD_UID where set."""
        namespace, name = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
        if not (namespace and name and isinstance(data, dict)):
            return data
        placement, servers = data.get("placement"), data.get("servers")
        if not (isinstance(placement, dict) and placement.get("source") == "kubelet"):
            return data
        if not isinstance(servers, list):
            return data
        pod = f"{namespace}/{name}"
        unplaced = [isinstance(s, dict) and not {"pod", "gpus"} & s.keys() for s in servers]
        servers = [{**s, "pod": pod} if bare else s for s, bare in zip(servers, unplaced, strict=True)]
        uid = os.environ.get("POD_UID")
        if uid:
            servers = [
                {**s, "pod_uid": uid} if isinstance(s, dict) and s.get("pod") == pod and "pod_uid" not in s
                else s
                for s in servers
            ]
        return {**data, "servers": servers}

    @model_validator(mode="after")
    def _check_pods(self) -> Config:
        kubelet = self.placement.source == "kubelet"
        for i, s in enumerate(self.servers):
            if s.pod is not None and not kubelet:
                raise ValueError(
                    f"servers[{i}].pod: {s.pod!r} needs placement.source: kubelet "
                    f"(it is {self.placement.source!r}); with static placement list gpus: instead"
                )
            if kubelet and s.pod is None and s.gpus is None:
                raise ValueError(
                    f"servers[{i}] ({s.name}): with placement.source: kubelet give pod: NAMESPACE/NAME, "
                    "or set POD_NAMESPACE and POD_NAME (the Downward API), or list gpus:"
                )
        return self

    @model_validator(mode="after")
    def _check_discovery(self) -> Config:
        if self.placement.dra.enabled and not self.discovery.node:
            raise ValueError(
                "placement.dra.enabled: true needs this node's name to select its ResourceSlices: set "
                "discovery.kubernetes.node_name, or NODE_NAME from the Downward API (fieldRef spec.nodeName)"
            )
        if self.discovery.source != "kubernetes":
            return self
        if self.placement.source != "kubelet":
            raise ValueError(
                "discovery.source: kubernetes needs placement.source: kubelet "
                f"(it is {self.placement.source!r}): the GPUs of discovered pods come from the kubelet"
            )
        if not self.discovery.node:
            raise ValueError(
                "discovery.kubernetes.node_name is empty and NODE_NAME is not set: give the node's name, "
                "or set NODE_NAME from the Downward API (fieldRef spec.nodeName)"
            )
        return self

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [s.name for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"server names must be unique; repeated: {', '.join(dupes)}")
        if not self.windows:
            raise ValueError("windows must list at least one duration")
        return self
