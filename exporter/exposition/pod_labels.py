"""The `namespace`, `pod`, `workload` and `label_*` labels of servers that are Kubernetes pods.

Every series that carries a `server` label gets its pod's namespace and name too (as dcgm-exporter
labels its series), and for a discovered pod its workload and allowlisted pod labels, so dashboards
filter and sum by namespace and workload without joins. Servers that are not pods keep their series
as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import Metric

from exporter.values import PodLabels


def with_pod_labels(metrics: Iterable[Metric], pods: Mapping[str, PodLabels]) -> Iterator[Metric]:
    """The metrics, each sample of a pod's server labelled with its pod's labels."""
    for metric in metrics:
        if pods:
            metric.samples = [
                sample._replace(labels={**sample.labels, **dict(pod.items())})
                if (pod := pods.get(sample.labels.get("server", ""))) is not None
                else sample
                for sample in metric.samples
            ]
        yield metric
