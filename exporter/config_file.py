"""Reading the configuration: a YAML file, or a mapping, to a validated `Config`.

The file is read through `safe_yaml` (bounded in bytes, depth and expansion); every problem becomes
one line of `ConfigError`, with credentials in URLs redacted and its length bounded, since the
file's values may be shown to whoever asks for a reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.config import Config, ConfigError, show
from exporter.kube.selector import parse_label_selector
from exporter.logs import clean
from exporter.safe_yaml import YamlInputError, load_yaml_file

MAX_PROBLEM_CHARS = 500
"""An error line shows at most this much of what the file holds."""


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
    kubernetes = config.discovery.kubernetes
    if kubernetes.kubeconfig is not None and not kubernetes.kubeconfig.is_absolute():
        kubernetes = kubernetes.model_copy(update={"kubeconfig": path.parent / kubernetes.kubeconfig})
        discovery = config.discovery.model_copy(update={"kubernetes": kubernetes})
        config = config.model_copy(update={"discovery": discovery})
    return config


def validate_config(data: dict[str, Any]) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([clean(_problem(err), MAX_PROBLEM_CHARS) for err in e.errors()]) from None
    # Checked here rather than in the model, since `config` imports nothing of ours.
    try:
        parse_label_selector(config.discovery.kubernetes.label_selector)
    except ValueError as e:
        raise ConfigError([clean(f"discovery.kubernetes.label_selector: {e}", MAX_PROBLEM_CHARS)]) from None
    return config


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
