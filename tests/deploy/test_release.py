"""The Python package as it would be released: `python -m build` makes the sdist and the wheel,
`twine check` reads them as PyPI would, and each installs into a fresh virtual environment and runs.

build and twine run from a virtual environment of their own: twine needs a newer `packaging` than
checkov (in the deploy extra) allows, so they cannot share one environment with the deploy extra.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from tests.conftest import free_port
from tests.deploy.artifacts import REPO
from tests.test_demo import fetch, output_jpt_1m

pytestmark = pytest.mark.tools  # build, twine and pip in fresh virtual environments

RELEASE_TOOLS = ("build==1.6.1", "twine==7.0.0")


def run(args: Sequence[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def make_venv(path: Path, *requirements: str | Path) -> Path:
    """A fresh virtual environment with `requirements` installed; its bin/ directory."""
    created = run([sys.executable, "-m", "venv", path], cwd=path.parent)
    assert created.returncode == 0, created.stderr
    bin_dir = path / "bin"
    installed = run([bin_dir / "python", "-m", "pip", "install", "--quiet", *requirements], cwd=path.parent)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return bin_dir


@dataclass(frozen=True, slots=True)
class Dist:
    tools: Path
    """bin/ of the environment holding build and twine."""
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    root = tmp_path_factory.mktemp("release")
    tools = make_venv(root / "tools", *RELEASE_TOOLS)
    built = run([tools / "python", "-m", "build", "--outdir", root / "dist", REPO], cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    (sdist,) = (root / "dist").glob("*.tar.gz")
    (wheel,) = (root / "dist").glob("*.whl")
    return Dist(tools, sdist, wheel)


def test_sdist_and_wheel_are_named_for_the_one_version(dist: Dist) -> None:
    assert dist.sdist.name == f"tokenwatt-{__version__}.tar.gz"
    assert dist.wheel.name == f"tokenwatt-{__version__}-py3-none-any.whl"
    # The version is written once, in exporter/__init__.py; the rest reads it from there.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "exporter/__init__.py"
    chart = yaml.safe_load((REPO / "helm" / "tokenwatt" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert re.search(rf"^## {re.escape(__version__)}$", (REPO / "CHANGELOG.md").read_text(), re.M)


def test_twine_check_is_clean(dist: Dist) -> None:
    result = run([dist.tools / "twine", "check", "--strict", dist.sdist, dist.wheel], cwd=dist.sdist.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_package_and_its_command_only(dist: Dist) -> None:
    names = zipfile.ZipFile(dist.wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"exporter", f"tokenwatt-{__version__}.dist-info"}
    entry_points = zipfile.ZipFile(dist.wheel).read(f"tokenwatt-{__version__}.dist-info/entry_points.txt")
    assert "tokenwatt = exporter.cli:main" in entry_points.decode()
    with tarfile.open(dist.sdist) as sdist:
        tops = {m.name.split("/")[1] for m in sdist.getmembers()}
    ours = {"exporter", "docs", "README.md", "CHANGELOG.md", "pyproject.toml"}
    # hatchling adds .gitignore (it decides what a build leaves out) and PKG-INFO.
    assert tops == ours | {"PKG-INFO", ".gitignore"}


@pytest.mark.parametrize("artifact", ["wheel", "sdist"])
def test_installs_in_a_fresh_venv_and_serves_the_demo(artifact: str, dist: Dist, tmp_path: Path) -> None:
    bin_dir = make_venv(tmp_path / "venv", getattr(dist, artifact))
    version = run([bin_dir / "tokenwatt", "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout == f"tokenwatt {__version__}\n", version

    port = free_port()
    demo = subprocess.Popen(
        [bin_dir / "tokenwatt", "demo", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        page = ""
        while output_jpt_1m(page) is None and time.monotonic() < deadline:
            time.sleep(0.2)
            page = fetch(f"http://127.0.0.1:{port}/metrics") or ""
        assert output_jpt_1m(page) is not None, "no joules per token within 20 s"
        assert f'tokenwatt_build_info{{version="{__version__}"}} 1.0' in page
    finally:
        demo.send_signal(signal.SIGTERM)
        _, stderr = demo.communicate(timeout=10)
    assert demo.returncode == 0, stderr
    # Installed from the artifact, not imported from this source tree.
    where = run([bin_dir / "python", "-c", "import exporter; print(exporter.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(tmp_path / "venv")), where
