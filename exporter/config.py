"""YAML configuration to typed, validated settings.

Every error names the field (as a path such as `servers[1].interval`), the value found and what is
allowed, so `tokenwatt check-config` can print one actionable line per problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from exporter.tokens.profiles import PROFILES

DEFAULT_PORT = 9839
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_GPU_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z-]+")


class ConfigError(Exception):
    """The configuration is invalid; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> float:
    """A Prometheus-style duration (`500ms`, `1s`, `1m30s`) in seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration string such as 500ms, 1s or 5m, got {value!r}")
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"{value!r} is not a duration; use a number with a unit ms, s, m, h or d, e.g. 500ms, 5m"
        )
    if total <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _listen(value: object) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:{DEFAULT_PORT}, got {value!r}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"the port in {value!r} must be a number from 0 (any free port) to 65535")
    if not host:
        raise ValueError(f"the host in {value!r} is empty; use 0.0.0.0 for every interface")
    return value


Listen = Annotated[str, BeforeValidator(_listen)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedConfig(_Strict):
    gpus: int = Field(2, ge=1, le=64)
    idle_watts: float = Field(70.0, ge=0)
    joules_per_input_token: float = Field(0.04, ge=0)
    joules_per_output_token: float = Field(0.6, ge=0)
    gpu_model: str = "Simulated GPU"


EnergySourceName = Literal["simulated"]


class EnergyConfig(_Strict):
    source: EnergySourceName = "simulated"
    interval: Duration = 1.0
    gap_limit: Duration | None = None
    """Readings further apart than this do not bracket a token instant; default five intervals."""
    simulated: SimulatedConfig = SimulatedConfig()

    @property
    def gap_limit_s(self) -> float:
        return self.gap_limit if self.gap_limit is not None else 5 * self.interval


def _gpu_selector(value: object) -> int | str:
    if isinstance(value, bool):
        raise ValueError(f"expected a GPU index or UUID, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"GPU index {value} is negative")
        return value
    if isinstance(value, str) and _GPU_UUID.fullmatch(value):
        return value
    raise ValueError(f"expected a GPU index (0, 1, ...) or a UUID (GPU-..., MIG-...), got {value!r}")


GpuSelector = Annotated[int | str, BeforeValidator(_gpu_selector)]
ServerKind = Literal["auto", "vllm"]


def _server_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a server name: use 1-128 letters, digits and _ . : -")
    return value


def _url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not a URL: it must start with http:// or https:// and name a host")
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


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """`auto`: console on a terminal, JSON otherwise."""


class Config(_Strict):
    listen: Listen = DEFAULT_LISTEN
    energy: EnergyConfig = EnergyConfig()
    servers: list[ServerConfig] = Field(default_factory=list)
    windows: list[Duration] = Field(default_factory=lambda: [60.0, 300.0, 900.0])
    logging: LoggingConfig = LoggingConfig()

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
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the file: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {e}".replace("\n", " ")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"])
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_problem(err) for err in e.errors()]) from None


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
        return f"{path}: {err['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
    if kind in ("missing",):
        return f"{path}: required, but missing"
    where = path or "config"
    if kind.startswith(("value_error", "assertion_error")) or "input" not in err:
        return f"{where}: {message}"
    return f"{where}: {message} (got {err['input']!r})"


def known_kinds() -> list[str]:
    return ["auto", *PROFILES]
