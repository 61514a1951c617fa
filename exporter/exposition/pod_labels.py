"""The `namespace` and `pod` labels of servers that are Kubernetes pods.

Every series that carries a `server` label gets its pod's namespace and name too (as dcgm-exporter
labels its series), so dashboards filter and sum by namespace without joins. Servers that are not
pods keep their series as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import Metric

from exporter.values import PodRef


def with_pod_labels(metrics: Iterable[Metric], pods: Mapping[str, PodRef]) -> Iterator[Metric]:
    """The metrics, each sample of a pod's server labelled with its `namespace` and `pod`."""
    for metric in metrics:
        if pods:
            metric.samples = [
                sample._replace(labels={**sample.labels, "namespace": pod.namespace, "pod": pod.name})
                if (pod := pods.get(sample.labels.get("server", ""))) is not None
                else sample
                for sample in metric.samples
            ]
        yield metric
