"""Shared test helpers: real tools, free loopback ports."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from types import ModuleType

import pytest

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The path of a command-line tool the test needs.

    Outside CI a missing tool skips the test with the reason; under CI=true it fails it, because a
    check that silently did not run is worse than a red build.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/test installs it)"
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_module(name: str) -> ModuleType:
    """A Python package the test needs; a missing one skips the test, or fails it under CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"the Python package {name} is not installed (scripts/test installs it)"
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
