"""YAML configuration to typed, validated settings.

Every error names the field (as a path such as `servers[1].interval`), the value found and what is
allowed, so `tokenwatt check-config` can print one actionable line per problem.
"""

from __future__ import annotations

import ipaddress
import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.accounting.cardinality import DEFAULT_MAX_MODELS, DEFAULT_MODEL_EXPIRY_S
from exporter.logs import clean
from exporter.safe_yaml import YamlInputError, load_yaml_file
from exporter.tokens.profiles import GENERIC_KIND, PROFILES, Series, ServerProfile, generic_profile
from exporter.values import Derived, PodRef

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
MAX_PROBLEM_CHARS = 500
"""An error line shows at most this much of what the file holds."""

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedConfig(_Strict):
    gpus: int = Field(2, ge=1, le=64)
    idle_watts: float = Field(70.0, ge=0)
    joules_per_input_token: float = Field(0.04, ge=0)
    joules_per_output_token: float = Field(0.6, ge=0)
    gpu_model: str = "Simulated GPU"


def _dcgm_address(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"expected HOST:PORT such as localhost:5555 or a unix socket path, got {show(value)}"
        )
    if value.startswith(("/", "unix://")):
        return value
    host, colon, port = value.rpartition(":")
    if colon and (not host or not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(
            f"{show(value)} is not HOST:PORT (port 1 to 65535) nor a unix socket path starting with /"
        )
    return value


class DcgmConfig(_Strict):
    address: Annotated[str, BeforeValidator(_dcgm_address)] = "localhost:5555"
    """nv-hostengine's HOST[:PORT] (default port 5555), or a unix socket path."""
    embedded: bool = False
    """Start DCGM inside tokenwatt instead of connecting to a host engine."""
    bindings_path: str | None = None
    """Directory holding pydcgm.py and friends, searched after sys.path."""
    library_path: str | None = None
    """Directory holding libdcgm.so.4, where it is not on the loader's search path."""
    timeout: Duration = 5.0


class DcgmExporterConfig(_Strict):
    url: str = "http://localhost:9400/metrics"
    timeout: Duration = 5.0
    collect_interval: Duration = 30.0
    """The exporter's own --collect-interval: how often its values change."""
    node_name: str | None = None
    """Keep only series whose Hostname label is this node (the exporter may serve several nodes)."""
    max_page_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: object) -> str:
        return _url(value)


EnergySourceName = Literal["auto", "dcgm", "nvml", "dcgm_exporter", "amd", "simulated"]


class EnergyConfig(_Strict):
    source: EnergySourceName = "auto"
    interval: Duration = 1.0
    timeout: Duration = 5.0
    """Deadline of one read: a read that overruns it is a failed read (`reason="timeout"`)."""
    gap_limit: Duration | None = None
    """Readings further apart than this do not bracket a token instant; default five intervals."""
    dcgm: DcgmConfig = DcgmConfig()
    dcgm_exporter: DcgmExporterConfig = DcgmExporterConfig()
    simulated: SimulatedConfig = SimulatedConfig()

    @property
    def gap_limit_s(self) -> float:
        if self.gap_limit is not None:
            return self.gap_limit
        if self.source == "dcgm_exporter":
            # Its values move once per collect interval: two refreshes are normally that far apart.
            return max(5 * self.interval, 2 * self.dcgm_exporter.collect_interval)
        return 5 * self.interval


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
ServerKind = Literal[
    "auto", "vllm", "sglang", "tgi", "llamacpp", "triton", "trtllm", "nim", "lmdeploy", "ray", "aphrodite",
    "dynamo", "generic",
]


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


class GenericSeriesConfig(_Strict):
    name: Annotated[str, BeforeValidator(_metric_name)]
    where: dict[LabelName, str] = Field(default_factory=dict)
    """Only samples carrying every one of these label values count."""

    def series(self) -> Series:
        return Series(self.name, tuple(sorted(self.where.items())))


GenericSeriesList = list[Annotated[GenericSeriesConfig, BeforeValidator(_series_entry)]]


class GenericConfig(_Strict):
    """The families of a server tokenwatt has no profile for; each quantity is the sum of its series."""

    model_label: LabelName | None = None
    input_tokens: GenericSeriesList = Field(min_length=1)
    output_tokens: GenericSeriesList = Field(min_length=1)
    requests: GenericSeriesList = Field(default_factory=list)
    running: GenericSeriesList = Field(default_factory=list)
    cached_input_tokens: GenericSeriesList = Field(default_factory=list)
    replica_labels: list[LabelName] = Field(default_factory=list)

    def profile(self) -> ServerProfile:
        return generic_profile(
            model_label=self.model_label,
            input_tokens=[s.series() for s in self.input_tokens],
            output_tokens=[s.series() for s in self.output_tokens],
            requests=[s.series() for s in self.requests],
            running=[s.series() for s in self.running],
            cached_input_tokens=[s.series() for s in self.cached_input_tokens],
            replica_labels=self.replica_labels,
        )


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


class ServerConfig(_Strict):
    name: Annotated[str, BeforeValidator(_server_name)]
    url: Annotated[str, BeforeValidator(_url)]
    kind: ServerKind = "auto"
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

    @property
    def pod_ref(self) -> PodRef | None:
        """The pod as the kubelet names it (namespace and name); None for a server that is no pod."""
        if self.pod is None:
            return None
        namespace, name = self.pod.split("/")
        return PodRef(namespace, name)
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

    @property
    def token_kind(self) -> str | ServerProfile:
        """How the scraper reads the page: `auto`, a built-in kind, or the generic profile."""
        return self.generic.profile() if self.generic is not None else self.kind


class KubeletConfig(_Strict):
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


class PlacementConfig(_Strict):
    source: Literal["static", "kubelet"] = "static"
    """`static`: each server's gpus: (all GPUs without it); `kubelet`: the GPUs of each server's pod."""
    kubelet: KubeletConfig = KubeletConfig()


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """`auto`: console on a terminal, JSON otherwise."""


class PricingConfig(_Strict):
    price_per_kwh: float = Field(ge=0)
    """Price of one kWh at the facility meter, in `currency`."""
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    """ISO 4217 code, e.g. USD, EUR."""


class CarbonConfig(_Strict):
    grams_per_kwh: float = Field(ge=0)
    """Grid carbon intensity in gCO2e per kWh."""


class EnergySplitConfig(_Strict):
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


class ExpositionConfig(_Strict):
    derived: Derived = Derived.ALL
    """Which windowed ratios `/metrics` carries besides the counters; recording rules compute the rest."""


class Config(_Strict):
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
    def _check(self) -> Config:
        names = [s.name for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"server names must be unique; repeated: {', '.join(dupes)}")
        if not self.windows:
            raise ValueError("windows must list at least one duration")
        return self


def load_config(path: Path) -> Config:
    """Read and validate a YAML config file; raise `ConfigError` listing every problem."""
    try:
        data = load_yaml_file(path)
    except YamlInputError as e:
        raise ConfigError([clean(str(e), MAX_PROBLEM_CHARS)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"])
    config = validate_config(data)
    if config.web_config_file is not None and not config.web_config_file.is_absolute():
        config = config.model_copy(update={"web_config_file": path.parent / config.web_config_file})
    return config


def validate_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([clean(_problem(err), MAX_PROBLEM_CHARS) for err in e.errors()]) from None


def _problem(err: Any) -> str:
    path = ""
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" not in str(part) and part not in ("int", "str", "float"):  # pydantic's type tags
            path += f".{part}" if path else str(part)
    message = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key (check its spelling and its place in the file)"
    if kind == "literal_error":
        return f"{path}: {show(err['input'])} is not allowed; {message[0].lower()}{message[1:]}"
    if kind in ("missing",):
        return f"{path}: required, but missing"
    where = path or "config"
    if kind.startswith(("value_error", "assertion_error")) or "input" not in err:
        return f"{where}: {message}"
    return f"{where}: {message} (got {show(err['input'])})"


def known_kinds() -> list[str]:
    return ["auto", *PROFILES, GENERIC_KIND]
