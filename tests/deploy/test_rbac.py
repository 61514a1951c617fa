"""What the chart lets tokenwatt read of the Kubernetes API: discovery's and DRA's reads, nothing else.

Discovery lists and watches the pods of its node and reads the owners it resolves a workload
through (ReplicaSets, Jobs); DRA lists and watches ResourceSlices. The rules are read back from
`helm template` and compared, as (API group, resource) -> verbs, with exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from tests.deploy.packaging import (
    K8S_DIR,
    Rendering,
    by_name,
    containers,
    render,
    run_tool,
    sidecar_container,
)

pytestmark = pytest.mark.tools  # helm, kubectl

Grants = dict[tuple[str, str], set[str]]

DISCOVERY: Grants = {
    ("", "pods"): {"get", "list", "watch"},
    ("apps", "replicasets"): {"get"},
    ("batch", "jobs"): {"get"},
}
DRA: Grants = {("resource.k8s.io", "resourceslices"): {"list", "watch"}}
OFF = {"source": "none"}

CASES: dict[str, tuple[dict[str, Any], Grants]] = {
    "defaults": ({}, DISCOVERY),
    "discovery-and-dra": ({"config": {"placement": {"dra": {"enabled": True}}}}, DISCOVERY | DRA),
    "dra-only": ({"config": {"discovery": OFF, "placement": {"dra": {"enabled": True}}}}, DRA),
    "discovery-off": ({"config": {"discovery": OFF}}, {}),
    # The sidecar's pod and account are the user's: the chart grants nothing.
    "sidecar": (
        {"mode": "sidecar", "config": {"discovery": OFF, "placement": {"dra": {"enabled": True}}}},
        {},
    ),
}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def renderings() -> dict[str, Rendering]:
    return {name: render(name, values) for name, (values, _) in CASES.items()}


def granted(manifests: Iterable[dict[str, Any]]) -> Grants:
    """Every (API group, resource) the roles among the manifests grant, with its verbs."""
    grants: Grants = {}
    for role in (m for m in manifests if m["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            # No resourceNames, nonResourceURLs or aggregation widening or narrowing a rule unseen.
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_roles_grant_exactly_what_tokenwatt_reads(renderings: dict[str, Rendering], name: str) -> None:
    assert granted(renderings[name].manifests()) == CASES[name][1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_role_is_bound_to_the_daemonsets_account_and_only_then_is_a_token_mounted(
    renderings: dict[str, Rendering], name: str
) -> None:
    rendering = renderings[name]
    rbac = sorted(m["kind"] for m in rendering.manifests() if m["kind"] in RBAC_KINDS)
    if not CASES[name][1]:
        assert rbac == [], name
        for workload in rendering.manifests():
            if workload["kind"] == "DaemonSet":
                assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        return
    assert rbac == ["ClusterRole", "ClusterRoleBinding"]
    binding = rendering.one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": rendering.one("ClusterRole")["metadata"]["name"],
    }
    pod = rendering.one("DaemonSet")["spec"]["template"]["spec"]
    account = rendering.one("ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "monitoring"}
    ]
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    # The account mounts no token by itself; the DaemonSet's pods, which call the API, ask for one.
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_node_comes_from_the_downward_api_where_the_api_is_read(
    renderings: dict[str, Rendering], name: str
) -> None:
    """Discovery watches the pods of its node, DRA the ResourceSlices of its node: both need its name."""
    node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    daemonsets = [m for m in renderings[name].manifests() if m["kind"] == "DaemonSet"]
    for daemonset in daemonsets:
        env = by_name(containers(daemonset), "tokenwatt").get("env", [])
        assert (node_name in env) == bool(CASES[name][1]), name
    assert len(daemonsets) == (0 if name == "sidecar" else 1)
    if name == "sidecar":  # the snippet of the inference pod's container: DRA reads its node's slices
        assert node_name in sidecar_container(renderings[name])["env"]


def test_an_existing_service_account_is_the_one_bound() -> None:
    rendering = render("existing-account", {"serviceAccount": {"create": False, "name": "inference-reader"}})
    assert "ServiceAccount" not in rendering.kinds()
    subject = rendering.one("ClusterRoleBinding")["subjects"][0]
    assert subject == {"kind": "ServiceAccount", "name": "inference-reader", "namespace": "monitoring"}
    assert rendering.one("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "inference-reader"


def test_the_plain_daemonset_manifests_grant_what_discovery_reads() -> None:
    result = run_tool("kubectl", "kustomize", str(K8S_DIR / "daemonset"))
    assert result.returncode == 0, result.stderr
    manifests = [m for m in yaml.safe_load_all(result.stdout) if m]
    assert granted(manifests) == DISCOVERY
    kinds = {m["kind"]: m for m in manifests}
    daemonset = kinds["DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": daemonset["metadata"]["namespace"],
        }
    ]
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
    env = by_name(pod["containers"], "tokenwatt")["env"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in env
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["tokenwatt.yml"])
    assert config["discovery"] == {"source": "kubernetes"} and "servers" not in config
