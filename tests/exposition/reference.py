"""The same families rendered by prometheus_client: the reference our text writer must match byte for byte.

This is how `/metrics` was rendered before the writer (metric objects built on every scrape, then
`generate_latest`), so `bench/render_bench.py` also times it as the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.exposition.collector import FamilySamples
from exporter.exposition.pod_labels import pod_labels
from exporter.values import PodRef


class _Families(Collector):
    def __init__(self, families: Iterable[FamilySamples], pods: Mapping[str, PodRef]) -> None:
        self.families = families
        self.pods = pods

    def collect(self) -> Iterator[Metric]:
        for family, samples in self.families:
            kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            metric = kind(family.name, family.help, labels=family.labels)
            for values, value in samples:
                metric.add_metric(list(values), value)
            for i, sample in enumerate(metric.samples):
                pod = self.pods.get(sample.labels.get("server", ""))
                if pod is not None:
                    metric.samples[i] = sample._replace(labels={**sample.labels, **dict(pod_labels(pod))})
            yield metric


def prometheus_client_text(families: Iterable[FamilySamples], pods: Mapping[str, PodRef]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families, pods))
    return generate_latest(registry)
