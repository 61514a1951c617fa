"""The example inference Deployments of docs/deployment.md: valid for Kubernetes, and discoverable.

Each example is read from the page, validated by kubernetes-validate, and its metrics URL resolved
from its annotations and container ports by the rules the page documents. That URL must be where
the server in the image serves its metrics (ports and paths from the servers' own sources), on a
port the pod declares, with a kind tokenwatt knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from lightkube.resources.core_v1 import Pod

from exporter.discovery.pods import target_of
from exporter.tokens.profiles import PROFILES
from tests.deploy.artifacts import REPO
from tests.deploy.packaging import run_tool

DOC = REPO / "docs" / "deployment.md"
SECTION = "### Example Deployments"


@dataclass(frozen=True, slots=True)
class Server:
    kind: str
    ports: frozenset[int]
    """Ports the image's server serves its metrics page on."""
    path: str
    flags: tuple[str, ...]
    """Arguments without which the server serves no metrics."""


SERVERS = {
    "vllm/vllm-openai": Server("vllm", frozenset({8000}), "/metrics", ()),
    "lmsysorg/sglang": Server("sglang", frozenset({30000}), "/metrics", ("--enable-metrics",)),
    # The API port (the image sets PORT=80) and, since 3.3.0, --prometheus-port (9000).
    "ghcr.io/huggingface/text-generation-inference": Server("tgi", frozenset({80, 9000}), "/metrics", ()),
}


def examples() -> list[dict[str, Any]]:
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return [yaml.safe_load(block) for block in blocks]


EXAMPLES = examples()
IDS = [e["metadata"]["name"] for e in EXAMPLES]


@dataclass(frozen=True, slots=True)
class Target:
    """Where discovery scrapes a pod, and which rule gave the port."""

    scheme: str
    port: int
    path: str
    kind: str
    port_from: str


def target(template: dict[str, Any]) -> Target:
    """Where discovery (`target_of`, the daemon's own rules) scrapes a running pod of the template."""
    metadata = {**template["metadata"], "name": "example-0", "namespace": "inference"}
    status = {"phase": "Running", "podIP": "10.0.0.7"}
    pod = Pod.from_dict({"metadata": metadata, "spec": template["spec"], "status": status})
    found = target_of(pod, require_annotation=True, pod_labels=())
    assert found is not None
    url = urlsplit(found.url)
    assert url.port is not None
    annotations = template["metadata"]["annotations"]
    ports = ("tokenwatt.io/port", "prometheus.io/port")
    port_from = next((key for key in ports if key in annotations), "container port")
    return Target(url.scheme, url.port, url.path, found.kind, port_from)


def server_of(deployment: dict[str, Any]) -> tuple[Server, dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return SERVERS[container["image"].rsplit(":", 1)[0]], container


def test_the_page_has_one_example_deployment_per_server() -> None:
    assert [e["kind"] for e in EXAMPLES] == ["Deployment"] * len(SERVERS)
    assert {server_of(e)[0].kind for e in EXAMPLES} == {s.kind for s in SERVERS.values()}


@pytest.mark.tools  # kubernetes-validate
def test_the_examples_are_valid_for_kubernetes_1_30(tmp_path: Path) -> None:
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump_all(EXAMPLES, sort_keys=False))
    result = run_tool("kubernetes-validate", "--strict", "-k", "1.30.0", str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("passed for resource") == len(EXAMPLES), output


@pytest.mark.parametrize("deployment", EXAMPLES, ids=IDS)
def test_discovery_finds_the_servers_own_metrics_page(deployment: dict[str, Any]) -> None:
    server, container = server_of(deployment)
    found = target(deployment["spec"]["template"])
    assert (found.scheme, found.path, found.kind) == ("http", server.path, server.kind)
    assert found.port in server.ports
    assert found.port in {p["containerPort"] for p in container["ports"]}
    assert found.kind in PROFILES
    assert set(server.flags) <= set(container.get("args", []))
    # The pod template's own labels select it: the Deployment is one workload.
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_examples_show_each_way_the_port_is_found() -> None:
    found = {target(e["spec"]["template"]).port_from for e in EXAMPLES}
    assert found == {"tokenwatt.io/port", "prometheus.io/port", "container port"}
