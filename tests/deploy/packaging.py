"""What the packaging tests read and run: the chart, its renderings, the plain manifests, the tools."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_module, require_tool
from tests.deploy.artifacts import PROMETHEUS_DIR, REPO

CHART_DIR = REPO / "helm" / "tokenwatt"
SIDECAR_CHART_DIR = Path(__file__).parent / "sidecar-chart"
K8S_DIR = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
RULE_COPIES = {
    CHART_DIR / "files" / "rules.yml": PROMETHEUS_DIR / "rules.yml",
    CHART_DIR / "files" / "alerts.yml": PROMETHEUS_DIR / "alerts.yml",
}
WORKLOAD_KINDS = frozenset({"DaemonSet", "Deployment"})


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(name), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@dataclass(frozen=True, slots=True)
class Rendering:
    """One `helm template` of a chart: the manifests of each template file, parsed."""

    name: str
    files: Mapping[str, str]
    """Template path -> rendered text (NOTES.txt included)."""

    def manifests(self) -> Iterator[dict[str, Any]]:
        for path, text in self.files.items():
            if path.endswith(".yaml"):
                yield from (m for m in yaml.safe_load_all(text) if m)

    def kinds(self) -> list[str]:
        return sorted(m["kind"] for m in self.manifests())

    def one(self, kind: str) -> dict[str, Any]:
        found = [m for m in self.manifests() if m["kind"] == kind]
        assert len(found) == 1, f"{self.name}: expected one {kind}, got {len(found)}"
        return found[0]

    def yaml_text(self) -> str:
        return "".join(f"---\n{yaml.safe_dump(m, sort_keys=False)}" for m in self.manifests())


def render(name: str, values: Mapping[str, Any], chart: Path = CHART_DIR) -> Rendering:
    helm = require_module("helm_python")
    files = helm.Chart.load(str(chart)).render(dict(values), name="tw", namespace="monitoring")
    return Rendering(name, files)


def render_sidecar_chart(values: Mapping[str, Any], workdir: Path) -> Rendering:
    """The inference chart of tests/deploy/sidecar-chart with helm/tokenwatt as its dependency."""
    parent = workdir / "inference"
    shutil.copytree(SIDECAR_CHART_DIR, parent)
    shutil.copytree(CHART_DIR, parent / "charts" / "tokenwatt")
    return render("sidecar-chart", values, parent)


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    return spec


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in items if i["name"] == name)


def sidecar_container(rendering: Rendering) -> dict[str, Any]:
    """The tokenwatt container the install notes of a sidecar rendering tell the user to add."""
    notes = rendering.files["tokenwatt/templates/NOTES.txt"]
    snippet = notes.split("spec.containers (same namespace):\n")[1].split("\nand these")[0]
    container: dict[str, Any] = yaml.safe_load(snippet)[0]
    return container
