"""The labels a server that is a Kubernetes pod adds to its series.

Every series that carries a `server` label gets its pod's namespace and name too (as dcgm-exporter
labels its series), so dashboards filter and sum by namespace without joins. Servers that are not
pods keep their series as they are.
"""

from __future__ import annotations

from exporter.values import PodRef


def pod_labels(pod: PodRef) -> tuple[tuple[str, str], ...]:
    """(label name, value) of each label the pod's series carry besides their own."""
    return ("namespace", pod.namespace), ("pod", pod.name)
