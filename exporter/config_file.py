"""Reading the configuration: a YAML file, or a mapping, to a validated `Config`.

The file is read through `safe_yaml` (bounded in bytes, depth and expansion); every problem becomes
one line of `ConfigError`, with credentials in URLs redacted and its length bounded, since the
file's values may be shown to whoever asks for a reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.config import Config, ConfigError, EnergyConfig, show
from exporter.energy.select import SOURCES
from exporter.kube.selector import parse_label_selector
from exporter.logs import clean
from exporter.safe_yaml import YamlInputError, load_yaml_file
from exporter.tokens.profiles import KINDS

MAX_PROBLEM_CHARS = 500
"""An error line shows at most this much of what the file holds."""
ENERGY_SOURCES = ("auto", *(s.name for s in SOURCES))
"""What `energy.source` allows."""
SECTIONS = {s.name: s.settings for s in SOURCES if s.settings is not None}
"""The `energy.<source>:` sections and their models."""


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
    """The config `data` holds; `ConfigError` lists every problem. Besides the model's own checks,
    what `config` cannot know (it imports nothing of ours) is checked here: `energy.source` and the
    `energy.<source>:` sections against the registry of energy sources, `servers[].kind` against
    the server kinds, and the discovery label selector's syntax."""
    energy, servers = data.get("energy"), data.get("servers")
    problems = _energy_problems(energy) if isinstance(energy, dict) else []
    problems += _kind_problems(servers) if isinstance(servers, list) else []
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        problems = [_problem(err) for err in e.errors()] + problems
    else:
        try:
            parse_label_selector(config.discovery.kubernetes.label_selector)
        except ValueError as e:
            problems.append(f"discovery.kubernetes.label_selector: {e}")
    if problems:
        raise ConfigError([clean(p, MAX_PROBLEM_CHARS) for p in problems])
    # Every section as its model, defaults where the file has none: equal settings, equal configs.
    sections = {name: config.energy.section(name, model) for name, model in SECTIONS.items()}
    return config.model_copy(update={"energy": config.energy.model_copy(update=sections)})


def _energy_problems(energy: dict[Any, Any]) -> list[str]:
    """`energy.source` a registered source or `auto`; every other key of `energy:` that is not a
    shared setting a registered source's section, valid by that source's settings model."""
    source = energy.get("source")
    problems = _choice("energy.source", source, ENERGY_SOURCES) if isinstance(source, str) else []
    for key, section in energy.items():
        if key in EnergyConfig.model_fields:
            continue
        if key not in SECTIONS:
            problems.append(_problem({"loc": ("energy", key), "type": "extra_forbidden", "msg": ""}))
            continue
        try:
            SECTIONS[key].model_validate(section)
        except ValidationError as e:
            problems += [_problem({**err, "loc": ("energy", key, *err["loc"])}) for err in e.errors()]
    return problems


def _kind_problems(servers: list[Any]) -> list[str]:
    """Every `servers[].kind` one of `tokens.profiles.KINDS`."""
    return [
        problem
        for i, server in enumerate(servers)
        if isinstance(server, dict) and isinstance(server.get("kind"), str)
        for problem in _choice(f"servers[{i}].kind", server["kind"], KINDS)
    ]


def _choice(path: str, value: str, allowed: Sequence[str]) -> list[str]:
    """No problem where `value` is allowed, else one in the form of a `Literal` field's."""
    if value in allowed:
        return []
    names = [repr(a) for a in allowed]
    return [f"{path}: {show(value)} is not allowed; input should be {', '.join(names[:-1])} or {names[-1]}"]


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
