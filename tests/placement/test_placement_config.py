"""The placement: config and a server's pod:, including its default from the Downward API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config import ConfigError
from exporter.config_file import validate_config
from tests.helpers import run_cli

URL = "http://127.0.0.1:8000/metrics"


def config(servers: list[dict[str, Any]], source: str = "kubelet", **kubelet: Any) -> dict[str, Any]:
    return {"placement": {"source": source, "kubelet": kubelet}, "servers": servers}


UID = "0f5c2a9e-6d41-4b8e-9c2a-1e7d3b5a8c40"
OTHER_UID = "7a1e4c2b-3d5f-4a6b-8c9d-0e1f2a3b4c5d"


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    return e.value.problems


def test_defaults_are_static_and_the_kubelet_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    c = validate_config({"servers": [{"name": "a", "url": URL}]})
    assert c.placement.source == "static"
    assert c.placement.kubelet.socket == Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    assert c.placement.kubelet.interval == 10.0
    assert c.placement.kubelet.timeout == 5.0
    assert c.servers[0].pod is None


def test_pods_and_kubelet_settings() -> None:
    c = validate_config(
        config(
            [{"name": "a", "url": URL, "pod": "llm/vllm-0"}, {"name": "b", "url": URL, "gpus": [1]}],
            socket="/run/pr/kubelet.sock",
            interval="30s",
            resources=["nvidia.com/a100"],
        )
    )
    assert c.servers[0].pod == "llm/vllm-0"
    assert c.servers[1].pod is None
    assert c.placement.kubelet.socket == Path("/run/pr/kubelet.sock")
    assert c.placement.kubelet.interval == 30.0
    assert c.placement.kubelet.resources == ["nvidia.com/a100"]


def test_gpus_and_pod_together_name_both() -> None:
    (problem,) = problems(config([{"name": "a", "url": URL, "gpus": [0], "pod": "llm/vllm-0"}]))
    assert problem.startswith("servers[0]: ")
    assert "gpus: [0]" in problem and "pod: 'llm/vllm-0'" in problem


@pytest.mark.parametrize("pod", ["vllm-0", "llm/", "/vllm", "LLM/vllm", "a/b/c", 3])
def test_bad_pod_names(pod: object) -> None:
    (problem,) = problems(config([{"name": "a", "url": URL, "pod": pod}]))
    assert problem.startswith("servers[0].pod: expected NAMESPACE/NAME")
    assert repr(pod) in problem


def test_pod_needs_kubelet_placement() -> None:
    (problem,) = problems(config([{"name": "a", "url": URL, "pod": "llm/vllm-0"}], source="static"))
    assert "servers[0].pod: 'llm/vllm-0' needs placement.source: kubelet" in problem


def test_bad_placement_settings() -> None:
    found = problems(
        {
            "placement": {
                "source": "k8s",
                "kubelet": {"socket": "kubelet.sock", "interval": "soon", "resources": ["gpu"], "port": 1},
            }
        }
    )
    assert found == [
        "placement.source: 'k8s' is not allowed; input should be 'static' or 'kubelet'",
        "placement.kubelet.socket: 'kubelet.sock' is not an absolute path; give the socket's full path",
        "placement.kubelet.interval: 'soon' is not a duration; use a number with a unit ms, s, m, h or d, "
        "e.g. 500ms, 5m",
        "placement.kubelet.resources[0]: expected an extended resource name such as example.com/gpu, "
        "got 'gpu'",
        "placement.kubelet.port: unknown key (check its spelling and its place in the file)",
    ]


def test_a_bare_server_is_the_pod_of_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "llm")
    monkeypatch.setenv("POD_NAME", "vllm-7f9c-xk2p")
    monkeypatch.setenv("POD_UID", UID)
    servers = [
        {"name": "a", "url": URL},
        {"name": "b", "url": URL, "pod": "other/pod-1"},
        {"name": "c", "url": URL, "gpus": [0]},
    ]
    c = validate_config(config(servers))
    assert [s.pod for s in c.servers] == ["llm/vllm-7f9c-xk2p", "other/pod-1", None]
    # POD_UID is the UID of the Downward API's pod only; a configured pod_uid wins over it.
    assert [s.pod_uid for s in c.servers] == [UID, None, None]
    own = validate_config(config([{"name": "a", "url": URL, "pod_uid": OTHER_UID}]))
    assert own.servers[0].pod_uid == OTHER_UID
    # Static placement ignores the environment: the server keeps every GPU, as before.
    assert validate_config(config(servers[:1], source="static")).servers[0].pod is None


def test_a_bare_server_without_the_downward_api_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("POD_NAME", "vllm-0")
    (problem,) = problems(config([{"name": "a", "url": URL}]))
    assert "servers[0] (a): with placement.source: kubelet give pod: NAMESPACE/NAME" in problem
    assert "POD_NAMESPACE and POD_NAME" in problem


def test_check_config_exits_2_naming_both_fields(tmp_path: Path) -> None:

    path = tmp_path / "tokenwatt.yml"
    path.write_text(
        f"placement: {{source: kubelet}}\nservers: [{{name: a, url: '{URL}', gpus: [0], pod: llm/vllm-0}}]\n"
    )
    done = run_cli("check-config", str(path))
    assert done.returncode == 2
    assert "servers[0]: gpus: [0] and pod: 'llm/vllm-0' are both set" in done.stdout + done.stderr
