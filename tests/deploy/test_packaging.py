"""The Dockerfile, the Helm chart and the plain manifests, checked by the real tools.

helm (the Helm SDK through helm-python-sdk) lints and renders the chart; kubernetes-validate checks
every rendered manifest against Kubernetes 1.30's schemas; checkov and hadolint check security and
style; kustomize builds deploy/k8s; `tokenwatt check-config` reads every tokenwatt.yml we ship.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.packaging import (
    CHART_DIR,
    DOCKERFILE,
    K8S_DIR,
    RULE_COPIES,
    WORKLOAD_KINDS,
    Rendering,
    by_name,
    containers,
    render,
    render_sidecar_chart,
    require_module,
    run_tool,
    sidecar_container,
)
from tests.helpers import run_cli

pytestmark = pytest.mark.tools  # helm, kubectl, kubernetes-validate, checkov, hadolint

SERVERS = [{"name": "llama-70b", "url": "http://127.0.0.1:8000/metrics", "kind": "vllm", "interval": "1s"}]
BCRYPT_HASH = "$2b$10$QKnGDoNHUjWm/M4S3ZJqLOE5PeJhHC3B.mwnzJPgrJJ1Wf0xIg9fq"
# The defaults discover the node's pods and place them through the kubelet; a static server list
# with GPUs by `gpus:` (or every GPU) turns both off.
STATIC = {"discovery": {"source": "none"}, "placement": {"source": "static"}}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "daemonset-defaults": {},
    "daemonset-nvml-gpu-operator": {
        "config": {"energy": {"source": "nvml", "interval": "1s"}, "servers": SERVERS, **STATIC},
        "gpuAccess": {"runtimeClassName": "nvidia", "visibleDevices": "all"},
        "daemonset": {"nodeSelector": {"nvidia.com/gpu.present": "true"}, "priorityClassName": "high"},
        "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
    },
    "daemonset-dcgm-exporter-hostnetwork": {
        "config": {
            "listen": "0.0.0.0:9900",
            "energy": {
                "source": "dcgm_exporter",
                "interval": "2s",
                "dcgm_exporter": {"url": "http://nvidia-dcgm-exporter.gpu-operator.svc:9400/metrics"},
            },
            "servers": SERVERS,
            **STATIC,
        },
        "daemonset": {"hostNetwork": True},
        "service": {"internalTrafficPolicy": "Local"},
        "image": {"digest": "sha256:" + "0" * 64},
    },
    "daemonset-dcgm-basic-auth": {
        "config": {"energy": {"source": "dcgm", "dcgm": {"address": "nvidia-dcgm.gpu-operator.svc:5555"}}},
        "webConfig": {"enabled": True, "config": {"basic_auth_users": {"prometheus": BCRYPT_HASH}}},
        "serviceMonitor": {
            "enabled": True,
            "basicAuth": {
                "username": {"name": "tokenwatt-scrape", "key": "username"},
                "password": {"name": "tokenwatt-scrape", "key": "password"},
            },
        },
    },
    "daemonset-tls-existing-secret": {
        "webConfig": {"enabled": True, "existingSecret": "tokenwatt-tls", "tls": True},
        "serviceMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": False}},
    },
    "sidecar-configmap-only": {
        "mode": "sidecar",
        "config": {"energy": {"source": "dcgm_exporter"}, "servers": SERVERS, **STATIC},
    },
    "sidecar-with-service": {
        "mode": "sidecar",
        "config": {
            "energy": {"source": "dcgm_exporter"},
            "servers": [{**SERVERS[0], "gpus": ["GPU-5fd4c8a3-7e2b-4c3d-9a1f-2b8e6d4c1a07"]}],
            **STATIC,
        },
        "sidecar": {"podSelector": {"app.kubernetes.io/name": "llama-70b"}, "readinessProbe": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    },
    # Placement from the kubelet: the sidecar's server is its own pod (POD_NAME/POD_NAMESPACE); the
    # DaemonSet's servers name their pods.
    "sidecar-kubelet": {
        "mode": "sidecar",
        "config": {
            "energy": {"source": "dcgm_exporter"},
            "discovery": {"source": "none"},
            "placement": {"source": "kubelet"},
            "servers": SERVERS,
        },
    },
    "daemonset-kubelet": {
        "config": {
            "energy": {"source": "nvml"},
            "discovery": {"source": "none"},
            "placement": {"source": "kubelet", "kubelet": {"interval": "5s"}},
            "servers": [{**SERVERS[0], "url": "http://vllm.llm.svc:8000/metrics", "pod": "llm/vllm-0"}],
        },
        "gpuAccess": {"runtimeClassName": "nvidia", "visibleDevices": "all"},
    },
    # Discovery with its options, DRA-allocated GPUs placed through ResourceSlices.
    "daemonset-discovery-dra": {
        "config": {
            "energy": {"source": "nvml"},
            "discovery": {
                "source": "kubernetes",
                "kubernetes": {
                    "label_selector": "app.kubernetes.io/component=inference",
                    "pod_labels": ["team", "app.kubernetes.io/version"],
                    "grace_period": "10m",
                },
            },
            "placement": {"source": "kubelet", "dra": {"enabled": True, "driver": "gpu.nvidia.com"}},
        },
        "gpuAccess": {"runtimeClassName": "nvidia", "visibleDevices": "all"},
    },
    # DRA in the inference pod: its own account reads the ResourceSlices, the chart grants nothing.
    "sidecar-dra": {
        "mode": "sidecar",
        "config": {
            "energy": {"source": "dcgm_exporter"},
            "discovery": {"source": "none"},
            "placement": {"source": "kubelet", "dra": {"enabled": True}},
            "servers": SERVERS,
        },
    },
    # DRA for listed servers, no discovery: the API is read for ResourceSlices only.
    "daemonset-dra-listed-servers": {
        "config": {
            "discovery": {"source": "none"},
            "placement": {"source": "kubelet", "dra": {"enabled": True}},
            "servers": [{**SERVERS[0], "url": "http://vllm.llm.svc:8000/metrics", "pod": "llm/vllm-0"}],
        },
    },
}
STATIC_PLACED = {
    "daemonset-nvml-gpu-operator",
    "daemonset-dcgm-exporter-hostnetwork",
    "sidecar-configmap-only",
    "sidecar-with-service",
    "sidecar-chart",
}
SIDECAR_POD = {"POD_NAMESPACE": "inference", "POD_NAME": "llama-70b-7d9f8c6b5-x2x4q"}
NODE = {"NODE_NAME": "gpu-node-1"}
"""What the Downward API gives a DaemonSet pod that discovers the pods of its node."""
DOWNWARD = {
    "metadata.namespace": SIDECAR_POD["POD_NAMESPACE"],
    "metadata.name": SIDECAR_POD["POD_NAME"],
    "metadata.uid": "5b0c7a2e-3f41-4d7c-9e8a-1c2d3e4f5a6b",
    "spec.nodeName": NODE["NODE_NAME"],
}
"""The Downward API's answers for the fields the chart's containers ask it about."""


@pytest.fixture(scope="module")
def renderings() -> dict[str, Rendering]:
    return {name: render(name, values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def sidecar_chart(tmp_path_factory: pytest.TempPathFactory) -> Rendering:
    values = {"tokenwatt": VALUE_SETS["sidecar-with-service"]}
    return render_sidecar_chart(values, tmp_path_factory.mktemp("sidecar-chart"))


@pytest.fixture(scope="module")
def kustomized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run_tool("kubectl", "kustomize", str(K8S_DIR))
    assert result.returncode == 0, result.stderr
    out = tmp_path_factory.mktemp("kustomize") / "k8s.yaml"
    out.write_text(result.stdout)
    return out


# --- helm lint and render ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "defaults",
        "daemonset-nvml-gpu-operator",
        "sidecar-with-service",
        "daemonset-kubelet",
        "sidecar-kubelet",
        "daemonset-discovery-dra",
        "daemonset-dra-listed-servers",
    ],
)
def test_chart_lints_clean_in_strict_mode(name: str) -> None:
    helm = require_module("helm_python")
    report = helm.lint(str(CHART_DIR), VALUE_SETS.get(name, {}), strict=True)
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert report["errors"] == [] and findings == [], report


def test_each_mode_renders_what_it_should(renderings: dict[str, Rendering]) -> None:
    # The default install discovers pods: the API access for that comes with it.
    assert renderings["daemonset-defaults"].kinds() == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    assert renderings["daemonset-nvml-gpu-operator"].kinds() == [
        "ConfigMap",
        "DaemonSet",
        "NetworkPolicy",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert renderings["daemonset-dcgm-basic-auth"].kinds() == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "NetworkPolicy",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    # Sidecar: the pod is the user's; no workload, and no NetworkPolicy that would select it.
    assert renderings["sidecar-configmap-only"].kinds() == ["ConfigMap"]
    assert renderings["sidecar-with-service"].kinds() == [
        "ConfigMap",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    ]


def test_an_unknown_mode_is_refused_naming_the_value() -> None:
    helm = require_module("helm_python")
    with pytest.raises(helm.HelmError, match=r'mode: "deployment" is not allowed; use daemonset or sidecar'):
        render("bad-mode", {"mode": "deployment"})


def test_discovery_in_sidecar_mode_is_refused_naming_the_field() -> None:
    helm = require_module("helm_python")
    refusal = r'config\.discovery\.source: "kubernetes" is not allowed with mode: sidecar'
    with pytest.raises(helm.HelmError, match=refusal):
        render("sidecar-discovery", {"mode": "sidecar", "config": {"placement": {"source": "static"}}})


def test_a_web_config_with_nothing_in_it_is_refused() -> None:
    helm = require_module("helm_python")
    with pytest.raises(helm.HelmError, match=r"webConfig\.existingSecret"):
        render("empty-web-config", {"webConfig": {"enabled": True}})


def test_every_container_runs_locked_down(renderings: dict[str, Rendering], sidecar_chart: Rendering) -> None:
    workloads = [
        (r.name, m)
        for r in [*renderings.values(), sidecar_chart]
        for m in r.manifests()
        if m["kind"] in WORKLOAD_KINDS
    ]
    assert len(workloads) == 9
    for name, workload in workloads:
        tokenwatt = by_name(containers(workload), "tokenwatt")
        security = tokenwatt["securityContext"]
        if name in STATIC_PLACED:
            assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, name
        else:  # only root may connect to the kubelet's socket: UID 0, no capabilities
            assert security["runAsNonRoot"] is False and security["runAsUser"] == 0, name
        assert security["privileged"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert tokenwatt["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}, name
        assert tokenwatt["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        mount = by_name(tokenwatt["volumeMounts"], "tokenwatt-config")
        assert mount["mountPath"] == "/etc/tokenwatt/tokenwatt.yml", name
        assert tokenwatt["args"] == ["run", "--config", "/etc/tokenwatt/tokenwatt.yml"], name


def test_daemonset_probes_readiness_and_rolls_on_config_change(renderings: dict[str, Rendering]) -> None:
    pod = renderings["daemonset-defaults"].one("DaemonSet")["spec"]["template"]
    tokenwatt = by_name(pod["spec"]["containers"], "tokenwatt")
    assert tokenwatt["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTP"}
    other = renderings["daemonset-nvml-gpu-operator"].one("DaemonSet")["spec"]["template"]
    assert (
        pod["metadata"]["annotations"]["checksum/config"]
        != other["metadata"]["annotations"]["checksum/config"]
    )


def test_gpu_access_as_the_gpu_operator_gives_it_to_dcgm_exporter(renderings: dict[str, Rendering]) -> None:
    spec = renderings["daemonset-nvml-gpu-operator"].one("DaemonSet")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    tokenwatt = by_name(spec["containers"], "tokenwatt")
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in tokenwatt["env"]
    assert {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"} in tokenwatt["env"]
    # GPUs are seen, never requested: a request would take them from the inference pods.
    assert "nvidia.com/gpu" not in tokenwatt["resources"]["limits"]
    defaults = renderings["daemonset-defaults"].one("DaemonSet")["spec"]["template"]["spec"]
    assert "runtimeClassName" not in defaults
    assert not any(e["name"].startswith("NVIDIA_") for e in defaults["containers"][0]["env"])


def test_port_follows_the_listen_address(renderings: dict[str, Rendering]) -> None:
    rendering = renderings["daemonset-dcgm-exporter-hostnetwork"]
    pod = rendering.one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    tokenwatt = by_name(pod["containers"], "tokenwatt")
    assert tokenwatt["ports"] == [{"name": "metrics", "containerPort": 9900, "protocol": "TCP"}]
    assert tokenwatt["image"] == "tokenwatt@sha256:" + "0" * 64
    service = rendering.one("Service")["spec"]
    assert service["ports"][0]["targetPort"] == "metrics"
    assert service["internalTrafficPolicy"] == "Local"


def test_web_config_is_mounted_and_scraped_as_configured(renderings: dict[str, Rendering]) -> None:
    basic = renderings["daemonset-dcgm-basic-auth"]
    config = yaml.safe_load(basic.one("ConfigMap")["data"]["tokenwatt.yml"])
    assert config["web_config_file"] == "/etc/tokenwatt/web/web.yml"
    web = yaml.safe_load(basic.one("Secret")["stringData"]["web.yml"])
    assert web == {"basic_auth_users": {"prometheus": BCRYPT_HASH}}
    endpoint = basic.one("ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "http" and endpoint["basicAuth"]["username"]["name"] == "tokenwatt-scrape"

    tls = renderings["daemonset-tls-existing-secret"]
    spec = tls.one("DaemonSet")["spec"]["template"]["spec"]
    assert by_name(spec["volumes"], "tokenwatt-web-config")["secret"]["secretName"] == "tokenwatt-tls"
    tokenwatt = by_name(spec["containers"], "tokenwatt")
    assert tokenwatt["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert tokenwatt["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert tls.one("ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    assert "Secret" not in tls.kinds()


def test_service_monitor_job_is_named_for_the_exporters_own_alerts(renderings: dict[str, Rendering]) -> None:
    monitor = renderings["daemonset-nvml-gpu-operator"].one("ServiceMonitor")
    service = renderings["daemonset-nvml-gpu-operator"].one("Service")
    # TokenwattDown and TokenwattAbsent select up{job=~".*tokenwatt.*"}.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "tokenwatt"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The servers' own namespace and pod labels win over the target's.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_sidecar_snippet_in_the_notes_is_the_container_a_parent_chart_gets(
    renderings: dict[str, Rendering], sidecar_chart: Rendering
) -> None:
    notes = renderings["sidecar-with-service"].files["tokenwatt/templates/NOTES.txt"]
    snippet = notes.split("spec.containers (same namespace):\n")[1].split("\nand these to its spec.volumes")[
        0
    ]
    pasted = yaml.safe_load(snippet)
    deployment = sidecar_chart.one("Deployment")
    assert pasted == [by_name(containers(deployment), "tokenwatt")]
    # Asked for in these values; off by default, because it would gate the inference pod's readiness.
    assert pasted[0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    default_notes = renderings["sidecar-configmap-only"].files["tokenwatt/templates/NOTES.txt"]
    assert "readinessProbe" not in default_notes and "livenessProbe" in default_notes
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tokenwatt-config", "configMap": {"name": "tw-tokenwatt"}}]
    service = sidecar_chart.one("Service")["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "llama-70b"}


def test_kubelet_placement_mounts_the_pod_resources_directory_and_nothing_more(
    renderings: dict[str, Rendering],
) -> None:
    directory = {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    mount = {
        "name": "tokenwatt-pod-resources",
        "mountPath": "/var/lib/kubelet/pod-resources",
        "readOnly": True,
    }
    downward = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]
    daemonset = renderings["daemonset-kubelet"].one("DaemonSet")["spec"]["template"]["spec"]
    assert by_name(daemonset["volumes"], "tokenwatt-pod-resources")["hostPath"] == directory
    tokenwatt = by_name(daemonset["containers"], "tokenwatt")
    assert mount in tokenwatt["volumeMounts"]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & daemonset.keys()
    # A DaemonSet's servers name their pods: no Downward API of its own pod.
    assert not any(e["name"] in ("POD_NAME", "POD_NAMESPACE", "POD_UID") for e in tokenwatt["env"])

    notes = renderings["sidecar-kubelet"].files["tokenwatt/templates/NOTES.txt"]
    sidecar = yaml.safe_load(notes.split("spec.containers (same namespace):\n")[1].split("\nand these")[0])[0]
    volumes = yaml.safe_load(notes.split("spec.volumes:\n")[1].split("\nFrom a chart")[0])
    assert sidecar["env"] == downward and mount in sidecar["volumeMounts"]
    assert by_name(volumes, "tokenwatt-pod-resources")["hostPath"] == directory
    # Static placement: no hostPath, no root.
    static = renderings["daemonset-nvml-gpu-operator"].one("DaemonSet")["spec"]["template"]["spec"]
    assert all("hostPath" not in v for v in static["volumes"])


# --- the recording rules and alerts inside the chart ------------------------------------------


@pytest.mark.parametrize("copy", sorted(RULE_COPIES), ids=lambda p: p.name)
def test_chart_rule_files_are_byte_for_byte_copies_of_deploy_prometheus(copy: Path) -> None:
    original = RULE_COPIES[copy]
    assert copy.read_bytes() == original.read_bytes(), f"copy {original} over {copy}"


def test_prometheus_rule_holds_every_group_of_rules_and_alerts(renderings: dict[str, Rendering]) -> None:
    groups = renderings["daemonset-nvml-gpu-operator"].one("PrometheusRule")["spec"]["groups"]
    expected = [
        g for original in RULE_COPIES.values() for g in yaml.safe_load(original.read_text())["groups"]
    ]
    assert groups == expected
    # Alert templates reach Prometheus untouched by Helm's own templating.
    annotations = [r["annotations"]["summary"] for g in groups for r in g["rules"] if "alert" in r]
    assert any("{{ $labels.server }}" in a for a in annotations)


# --- schemas, security lint, kustomize ---------------------------------------------------------


def test_every_rendered_manifest_is_valid_for_kubernetes_1_30(
    renderings: dict[str, Rendering], sidecar_chart: Rendering, kustomized: Path, tmp_path: Path
) -> None:
    paths = [kustomized]
    for rendering in [*renderings.values(), sidecar_chart]:
        path = tmp_path / f"{rendering.name}.yaml"
        path.write_text(rendering.yaml_text())
        paths.append(path)
    result = run_tool("kubernetes-validate", "--strict", "-k", "1.30.0", *map(str, paths))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every resource was checked; only the Prometheus Operator's kinds have no schema here.
    unchecked = {
        line.split("kind ")[1].split(" ")[0] for line in output.splitlines() if "find schema" in line
    }
    assert unchecked == {"PrometheusRule", "ServiceMonitor"}
    assert output.count("passed for resource") >= 40


def test_checkov_finds_nothing_in_rendered_manifests(
    renderings: dict[str, Rendering], sidecar_chart: Rendering, kustomized: Path, tmp_path: Path
) -> None:
    for rendering in [*renderings.values(), sidecar_chart]:
        (tmp_path / f"{rendering.name}.yaml").write_text(rendering.yaml_text())
    (tmp_path / "kustomize.yaml").write_text(kustomized.read_text())
    result = run_tool(
        "checkov",
        "-d",
        str(tmp_path),
        "--framework",
        "kubernetes",
        "--skip-download",
        "--quiet",
        "--compact",
        "-o",
        "json",
    )
    summary = json.loads(result.stdout)["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in json.loads(result.stdout)["results"]["failed_checks"]
    ]
    assert failed == [] and result.returncode == 0, failed
    assert summary["passed"] > 300


def test_kustomize_builds_the_daemonset_and_the_sidecar_example(kustomized: Path) -> None:
    manifests = [m for m in yaml.safe_load_all(kustomized.read_text()) if m]
    workloads = {m["kind"]: m for m in manifests if m["kind"] in WORKLOAD_KINDS}
    daemonset = workloads["DaemonSet"]["spec"]["template"]["spec"]
    assert daemonset["runtimeClassName"] == "nvidia"
    sidecar = by_name(containers(workloads["Deployment"]), "tokenwatt")
    assert "readinessProbe" not in sidecar
    # The generated ConfigMap names carry a content hash, and the pods point at them.
    configmaps = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
    mounted = {
        v["configMap"]["name"]
        for w in workloads.values()
        for v in w["spec"]["template"]["spec"]["volumes"]
        if "configMap" in v
    }
    assert mounted == configmaps and len(configmaps) == 2


# --- tokenwatt check-config on every tokenwatt.yml we ship ------------------------------------


def _check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("check-config", str(path), env=env)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_config_passes_check_config(
    name: str, renderings: dict[str, Rendering], tmp_path: Path
) -> None:
    rendering = renderings[name]
    config = yaml.safe_load(rendering.one("ConfigMap")["data"]["tokenwatt.yml"])
    if "web_config_file" in config:
        secrets = [m for m in rendering.manifests() if m["kind"] == "Secret"]
        if secrets:  # the chart's own Secret: check it too, from where the pod would read it
            (tmp_path / "web.yml").write_text(secrets[0]["stringData"]["web.yml"])
            config["web_config_file"] = str(tmp_path / "web.yml")
        else:  # an existing Secret of the user's: not ours to check
            del config["web_config_file"]
    path = tmp_path / "tokenwatt.yml"
    path.write_text(yaml.safe_dump(config))
    # A sidecar's pod, and the node of a DaemonSet that reads the API, come from the Downward API, in
    # the variables the chart's container (the DaemonSet's, or the sidecar snippet) asks it for.
    if VALUE_SETS[name].get("mode") == "sidecar":
        container = sidecar_container(rendering)
    else:
        container = by_name(containers(rendering.one("DaemonSet")), "tokenwatt")
    env = {
        e["name"]: DOWNWARD[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container.get("env", [])
        if "fieldRef" in e.get("valueFrom", {})
    }
    result = _check_config(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{path}: valid"


@pytest.mark.parametrize("path", sorted(K8S_DIR.glob("*/tokenwatt.yml")), ids=lambda p: p.parent.name)
def test_plain_manifest_config_passes_check_config(path: Path) -> None:
    result = _check_config(path, SIDECAR_POD if path.parent.name == "sidecar" else NODE)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile --------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = run_tool("hadolint", str(DOCKERFILE))
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_checkov_finds_nothing_in_the_dockerfile() -> None:
    result = run_tool(
        "checkov",
        "-f",
        str(DOCKERFILE),
        "--framework",
        "dockerfile",
        "--skip-download",
        "--quiet",
        "--compact",
        "-o",
        "json",
    )
    report = json.loads(result.stdout)
    assert report["results"]["failed_checks"] == [] and result.returncode == 0, result.stdout
    assert report["summary"]["passed"] >= 50


def test_dockerfile_runs_tokenwatt_as_a_non_root_user() -> None:
    # Top-level instructions only: the HEALTHCHECK's own CMD is on an indented continuation line.
    instructions = [
        line.split(maxsplit=1) for line in DOCKERFILE.read_text().splitlines() if line[:1].isupper()
    ]
    last = {word: rest for word, rest in instructions}
    assert last["USER"] == "10001:10001"
    assert last["EXPOSE"] == "9839"
    assert last["ENTRYPOINT"] == '["tokenwatt"]'
    assert last["CMD"] == '["run", "--config", "/etc/tokenwatt/tokenwatt.yml"]'
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert len(bases) == 2 and len(set(bases)) == 1
    assert bases[0].startswith("python:3.11.") and "-slim" in bases[0]
