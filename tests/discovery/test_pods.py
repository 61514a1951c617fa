"""Which pods are servers and where their metrics are, from Pod objects shaped as the API server
returns them; label selectors and the discovery config."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.core.selector import build_selector
from lightkube.resources.core_v1 import Pod

from exporter.config import ConfigError, pod_label_name
from exporter.config_file import validate_config
from exporter.discovery.pods import Owner, PodRejected, target_of
from exporter.kube.selector import parse_label_selector
from tests.fakes.kube_api import PODS, FakeKubeApi, owner, pod

API = FakeKubeApi()


def stored(annotations: dict[str, str] | None = None, **kw: Any) -> Pod:
    return Pod.from_dict(API.put(PODS, pod("llm", kw.pop("name", "vllm-0"), "node-1", annotations=annotations,
                                           **kw)))


SCRAPE = {"tokenwatt.io/scrape": "true"}


def test_annotations_say_where_the_metrics_are() -> None:
    t = target_of(stored({**SCRAPE, "tokenwatt.io/port": "8000"}), True, [])
    assert t is not None and t.url == "http://127.0.0.1:8000/metrics" and t.kind == "auto"
    assert t.server == "llm/vllm-0" and t.pod.uid is not None
    full = {**SCRAPE, "tokenwatt.io/port": "8443", "tokenwatt.io/path": "/v1/metrics",
            "tokenwatt.io/scheme": "https", "tokenwatt.io/kind": "sglang",
            "prometheus.io/port": "9", "prometheus.io/path": "/other"}
    t = target_of(stored(full, ip="fd00:10:244::17"), True, [])
    assert t is not None and (t.url, t.kind) == ("https://[fd00:10:244::17]:8443/v1/metrics", "sglang")


def test_port_and_path_fall_back_to_prometheus_annotations_then_container_ports() -> None:
    t = target_of(stored({**SCRAPE, "prometheus.io/port": "8080", "prometheus.io/path": "/stats"}), True, [])
    assert t is not None and t.url == "http://127.0.0.1:8080/stats"
    ports = [("grpc", 50051), ("http", 8000), ("metrics", 9400)]
    t = target_of(stored(SCRAPE, ports=ports), True, [])
    assert t is not None and t.url == "http://127.0.0.1:9400/metrics"  # `metrics` before `http`
    t = target_of(stored(SCRAPE, ports=ports[:2]), True, [])
    assert t is not None and t.url == "http://127.0.0.1:8000/metrics"


def test_only_chosen_running_pods_with_an_ip() -> None:
    assert target_of(stored({"tokenwatt.io/port": "8000"}), True, []) is None  # not annotated
    chosen = {**SCRAPE, "tokenwatt.io/port": "8000"}
    assert target_of(stored(chosen, phase="Pending", ip=None), True, []) is None
    assert target_of(stored(chosen, phase="Succeeded"), True, []) is None
    # Without require_annotation (the label selector chose the pod), only "false" opts out.
    assert target_of(stored({"tokenwatt.io/port": "8000"}), False, []) is not None
    assert target_of(stored({"tokenwatt.io/scrape": "false", "tokenwatt.io/port": "8000"}), False, []) is None


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({"tokenwatt.io/port": "http"}, "bad_port"),
        ({"tokenwatt.io/port": "0"}, "bad_port"),
        ({"prometheus.io/port": "70000"}, "bad_port"),
        ({}, "no_port"),
        ({"tokenwatt.io/port": "80", "tokenwatt.io/path": "metrics"}, "bad_path"),
        ({"tokenwatt.io/port": "80", "tokenwatt.io/path": "/m?x=1"}, "bad_path"),
        ({"tokenwatt.io/port": "80", "tokenwatt.io/scheme": "grpc"}, "bad_scheme"),
        ({"tokenwatt.io/port": "80", "tokenwatt.io/kind": "generic"}, "unknown_kind"),
        ({"tokenwatt.io/port": "80", "tokenwatt.io/kind": "VLLM"}, "unknown_kind"),
    ],
)
def test_wrong_annotations_are_rejected_with_a_reason(annotations: dict[str, str], reason: str) -> None:
    with pytest.raises(PodRejected) as e:
        target_of(stored({**SCRAPE, **annotations}), True, [])
    assert e.value.reason == reason


def test_owner_labels_and_allowlisted_pod_labels() -> None:
    labels = {"app.kubernetes.io/name": "vllm", "team": "search", "pod-template-hash": "6c9d",
              "leaderworkerset.sigs.k8s.io/name": "big-model"}
    t = target_of(stored({**SCRAPE, "tokenwatt.io/port": "80"}, labels=labels,
                         owners=[owner("ReplicaSet", "vllm-6c9d", "u-1")]),
                  True, ["team", "app.kubernetes.io/name", "absent"])
    assert t is not None
    assert t.labels == (("label_team", "search"), ("label_app_kubernetes_io_name", "vllm"))
    assert (t.owner, t.template_hash, t.lws) == (Owner("ReplicaSet", "vllm-6c9d"), "6c9d", "big-model")
    not_controller = {**owner("ReplicaSet", "x", "u-2"), "controller": False}
    t = target_of(stored({**SCRAPE, "tokenwatt.io/port": "80"}, owners=[not_controller]), True, [])
    assert t is not None and t.owner is None


def test_label_selectors() -> None:
    assert build_selector(parse_label_selector("app=vllm, tier in (gpu, a100),!canary,team")) == (
        "app=vllm,tier in (a100,gpu),!canary,team"
    )
    assert build_selector(parse_label_selector("example.com/role!=batch,env notin (dev)")) == (
        "example.com/role!=batch,env notin (dev)"
    )
    assert parse_label_selector("  ") == {}
    for bad, says in (("app in prod", "not a label key"), ("a,,b", "empty requirement"),
                      ("app=a b", "not a label"), ("a=1,a=2", "a second requirement"),
                      ("app=" + "x" * 64, "not a label value")):
        with pytest.raises(ValueError, match=says):
            parse_label_selector(bad)
    assert pod_label_name("app.kubernetes.io/name") == "label_app_kubernetes_io_name"


def kube_config(**kubernetes: Any) -> dict[str, Any]:
    return {"placement": {"source": "kubelet"},
            "discovery": {"source": "kubernetes", "kubernetes": {"node_name": "node-1", **kubernetes}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    return e.value.problems


def test_discovery_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = validate_config(kube_config(pod_labels=["team"], grace_period="10m"))
    k = config.discovery.kubernetes
    assert (config.discovery.node, k.grace_period, k.interval, k.timeout, k.require_annotation) == (
        "node-1", 600.0, 1.0, 5.0, True
    )
    assert validate_config({}).discovery.source == "none"
    monkeypatch.setenv("NODE_NAME", "gpu-7")
    assert validate_config(kube_config(node_name="")).discovery.node == "gpu-7"
    monkeypatch.delenv("NODE_NAME")
    assert problems(kube_config(node_name="")) == [
        "config: discovery.kubernetes.node_name is empty and NODE_NAME is not set: give the node's name, "
        "or set NODE_NAME from the Downward API (fieldRef spec.nodeName)"
    ]
    assert problems({**kube_config(), "placement": {"source": "static"}}) == [
        "config: discovery.source: kubernetes needs placement.source: kubelet (it is 'static'): the GPUs "
        "of discovered pods come from the kubelet"
    ]
    assert problems(kube_config(label_selector="app in prod")) == [
        "discovery.kubernetes.label_selector: 'app in prod': 'app in prod' is not a label key (an optional "
        "DNS prefix and /, then a name of up to 63 letters, digits, - _ and ., starting and ending "
        "alphanumeric)"
    ]
    assert problems(kube_config(require_annotation=False)) == [
        "discovery.kubernetes: require_annotation: false needs a label_selector: without either, every pod "
        "on the node would be scraped"
    ]
    assert problems(kube_config(pod_labels=["a.b", "a_b"])) == [
        "discovery.kubernetes: pod_labels: a.b, a_b all become the label label_a_b; keep one"
    ]
    assert problems(kube_config(pod_labels=["-x"])) == [
        "discovery.kubernetes.pod_labels[0]: '-x' is not a Kubernetes label key such as app or "
        "app.kubernetes.io/name"
    ]
    unknown = problems({"discovery": {"source": "consul"}})
    assert unknown[0].startswith("discovery.source: 'consul' is not allowed")
