"""The import layering that docs/architecture.md states, checked on the source (AST, no import).

Each package of `exporter` sits in one layer; it may import packages of lower layers only, never one
of its own layer or above. A module in no layer fails the check: a new package gets a place here
and on the page. The accounting layer is pure: no clock, no I/O, no concurrency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS: list[tuple[str, ...]] = [  # top to bottom, as on docs/architecture.md
    ("exporter.cli",),
    ("exporter.demo", "exporter.replay"),
    ("exporter.app",),
    ("exporter.pollers", "exporter.exposition", "exporter.discovery", "exporter.config_file"),
    ("exporter.accounting", "exporter.energy", "exporter.tokens"),
    ("exporter.placement",),
    ("exporter.pages", "exporter.kube"),
    ("exporter", "exporter.config", "exporter.values", "exporter.logs", "exporter.safe_yaml",
     "exporter.backoff"),
]  # fmt: skip
IMPURE = (
    "asyncio",
    "aiohttp",
    "grpc",
    "os",
    "socket",
    "subprocess",
    "threading",
    "time",
    "prometheus_client",
)
"""What the accounting layer may not import: it is given every time and every reading."""


def package_of(name: str) -> str:
    """The layered package of a module or an imported name: `exporter.energy.nvml` -> `exporter.energy`.

    A name of no layered package is the root's (`exporter.__version__`); that a module file of no
    layered package is a failure is the job of `test_every_module_has_a_layer`.
    """
    unit = ".".join(name.split(".")[:2])
    return unit if unit in LAYER_OF else "exporter"


LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of `exporter` (its dotted name) and the absolute names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "exporter").rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{path}:{node.lineno}: a relative import"
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[module_name(path)] = names
    return found


IMPORTS = imports()


def upward_or_sideways(package: str) -> list[str]:
    """`module -> imported` for each import of `package` that is not of a lower layer."""
    layer = LAYER_OF[package]
    wrong = []
    for module, names in IMPORTS.items():
        if package_of(module) != package:
            continue
        for name in sorted(names):
            if name.split(".")[0] != "exporter" or package_of(name) == package:
                continue
            if LAYER_OF[package_of(name)] <= layer:
                wrong.append(f"{module} -> {name}")
    return wrong


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in IMPORTS if m != "exporter" and ".".join(m.split(".")[:2]) not in LAYER_OF]
    assert unplaced == [], "give each package a layer here and on docs/architecture.md"


@pytest.mark.parametrize(
    "package",
    [p for layer in LAYERS for p in layer],
)
def test_a_package_imports_only_lower_layers(package: str) -> None:
    assert upward_or_sideways(package) == []


def test_accounting_is_pure() -> None:
    impure = sorted(
        f"{module} -> {name}"
        for module, names in IMPORTS.items()
        if package_of(module) == "exporter.accounting"
        for name in names
        if name.split(".")[0] in IMPURE
    )
    assert impure == []
