"""Which pods are inference servers, and where their metrics are: from one Pod object, nothing else.

A pod is a server when it carries `tokenwatt.io/scrape: "true"` (or, with `require_annotation: false`,
when the label selector chose it and it does not say `"false"`), is Running and has an IP. Its
metrics are at `SCHEME://POD_IP:PORT/PATH`:
- port: `tokenwatt.io/port`, else `prometheus.io/port`, else the first container port named
  `metrics`, else the first named `http`;
- path: `tokenwatt.io/path`, else `prometheus.io/path`, else `/metrics`;
- scheme: `tokenwatt.io/scheme`, `http` or `https` (default `http`);
- kind: `tokenwatt.io/kind`, one of the server kinds of `servers[].kind` (default `auto`).
A selected pod whose annotations are wrong is rejected (`PodRejected`) with a reason that becomes a
label value: `bad_port`, `no_port`, `bad_path`, `bad_scheme`, `unknown_kind`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lightkube.models.core_v1 import Container
from lightkube.models.meta_v1 import OwnerReference
from lightkube.resources.core_v1 import Pod

from exporter.config import AUTO_KIND, GENERIC_KIND, pod_label_name
from exporter.tokens.profiles import KINDS
from exporter.values import PodRef

SCRAPE = "tokenwatt.io/scrape"
PORT = "tokenwatt.io/port"
PATH = "tokenwatt.io/path"
SCHEME = "tokenwatt.io/scheme"
KIND = "tokenwatt.io/kind"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"
PORT_NAMES = ("metrics", "http")
TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller gives a ReplicaSet's pods; the ReplicaSet is named DEPLOYMENT-HASH."""
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
"""The label LeaderWorkerSet gives all its pods (their owners are its StatefulSets)."""
ANNOTATED_KINDS = tuple(k for k in KINDS if k != GENERIC_KIND)
"""Kinds an annotation may name: `generic` needs families from the config, which a pod cannot give."""
_PATH = re.compile(r"/[^\s?#]*")


class PodRejected(Exception):
    """A pod chosen for scraping whose annotations cannot be used; `reason` is a label value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Owner:
    """The controller owner reference of a pod (or of a ReplicaSet or Job)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class PodTarget:
    """A pod that is a server: where to scrape it and what names it."""

    pod: PodRef
    url: str
    kind: str
    labels: tuple[tuple[str, str], ...]
    """The allowlisted pod labels it carries, as (`label_<sanitized key>`, value)."""
    owner: Owner | None
    template_hash: str | None
    lws: str | None
    """The LeaderWorkerSet it belongs to, if any."""

    @property
    def server(self) -> str:
        """The server's name: NAMESPACE/POD."""
        return f"{self.pod.namespace}/{self.pod.name}"


def controller_of(owner_references: Sequence[OwnerReference] | None) -> Owner | None:
    """The owner reference marked `controller: true`, if any."""
    for ref in owner_references or ():
        if ref.controller:
            return Owner(ref.kind, ref.name)
    return None


def target_of(pod: Pod, require_annotation: bool, pod_labels: Sequence[str]) -> PodTarget | None:
    """The pod as a server; None when it is not one (not chosen, not Running, no IP yet).

    Raises `PodRejected` for a chosen pod whose annotations are wrong.
    """
    meta, status, spec = pod.metadata, pod.status, pod.spec
    if meta is None or meta.name is None or meta.namespace is None:
        return None
    annotations = meta.annotations or {}
    scrape = annotations.get(SCRAPE)
    if scrape == "false" or (require_annotation and scrape != "true"):
        return None
    if status is None or status.phase != "Running" or not status.podIP:
        return None
    labels = meta.labels or {}
    port = _port(annotations, spec.containers if spec is not None else [])
    path = annotations.get(PATH) or annotations.get(PROMETHEUS_PATH) or "/metrics"
    if not _PATH.fullmatch(path):
        raise PodRejected("bad_path", f"{PATH} {path!r} is not a URL path (/ first; no spaces, ? or #)")
    scheme = annotations.get(SCHEME) or "http"
    if scheme not in ("http", "https"):
        raise PodRejected("bad_scheme", f"{SCHEME} {scheme!r} is neither http nor https")
    kind = annotations.get(KIND) or AUTO_KIND
    if kind not in ANNOTATED_KINDS:
        also = f" ({GENERIC_KIND} needs its families from the config)" if kind == GENERIC_KIND else ""
        raise PodRejected("unknown_kind", f"{KIND} {kind!r} is not one of {', '.join(ANNOTATED_KINDS)}{also}")
    host = f"[{status.podIP}]" if ":" in status.podIP else status.podIP  # an IPv6 address in brackets
    return PodTarget(
        pod=PodRef(meta.namespace, meta.name, meta.uid),
        url=f"{scheme}://{host}:{port}{path}",
        kind=kind,
        labels=tuple((pod_label_name(k), labels[k]) for k in pod_labels if k in labels),
        owner=controller_of(meta.ownerReferences),
        template_hash=labels.get(TEMPLATE_HASH),
        lws=labels.get(LWS_NAME),
    )


def _port(annotations: dict[str, str], containers: Sequence[Container]) -> int:
    for key in (PORT, PROMETHEUS_PORT):
        value = annotations.get(key)
        if value is not None:
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise PodRejected("bad_port", f"{key} {value!r} is not a port number from 1 to 65535")
            return int(value)
    ports = [p for c in containers for p in c.ports or ()]
    for name in PORT_NAMES:
        for p in ports:
            if p.name == name:
                return p.containerPort
    raise PodRejected(
        "no_port",
        f"no {PORT} or {PROMETHEUS_PORT} annotation and no container port named {' or '.join(PORT_NAMES)}",
    )
