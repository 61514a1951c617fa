"""Fixtures that install the fake GPU libraries of `tests/fakes/` as importable modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FAKES = Path(__file__).parent.parent / "fakes"
DCGM_BINDINGS = FAKES / "dcgm"
DCGM_MODULES = ("pydcgm", "dcgm_agent", "dcgm_structs", "dcgm_fields", "fake_hostengine")


def load_fresh(name: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import `path` as top-level module `name`, fresh for this test, undone afterwards."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake `pynvml`, importable as `pynvml`; its `DRIVER` is the simulated machine."""
    return load_fresh("pynvml", FAKES / "nvml" / "pynvml.py", monkeypatch)


@pytest.fixture
def dcgm_bindings_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget any DCGM bindings module and restore `sys.path` afterwards (sources add to it)."""
    for name in DCGM_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in DCGM_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def fake_dcgm(dcgm_bindings_clean: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake DCGM bindings on `sys.path`; returns the fake host engine that drives them."""
    monkeypatch.syspath_prepend(str(DCGM_BINDINGS))
    return importlib.import_module("fake_hostengine").ENGINE


@pytest.fixture
def fake_amdsmi(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake `amdsmi`, importable as `amdsmi`; its `SMI` is the simulated machine."""
    return load_fresh("amdsmi", FAKES / "amd" / "amdsmi.py", monkeypatch)
