"""The metrics of pod discovery (absent with `discovery.source: none`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True, slots=True)
class DiscoveryHealth:
    up: bool
    servers: int
    """Discovered servers scraped now."""
    rejected: tuple[tuple[str, int], ...]
    """Pods chosen for scraping but skipped for wrong annotations, by reason."""
    errors: tuple[tuple[str, str, int], ...]
    """Failed Kubernetes API requests so far: (request, reason, count)."""


def discovery_metrics(health: DiscoveryHealth | None) -> Iterator[Metric]:
    if health is None:
        return
    up = GaugeMetricFamily(
        "tokenwatt_discovery_up",
        "1 if the latest list or watch of the node's pods succeeded; while 0 the last view stays in force.",
        labels=["source"],
    )
    up.add_metric(["kubernetes"], 1.0 if health.up else 0.0)
    servers = GaugeMetricFamily(
        "tokenwatt_discovered_servers", "Discovered servers scraped now.", labels=["source"]
    )
    servers.add_metric(["kubernetes"], health.servers)
    rejected = GaugeMetricFamily(
        "tokenwatt_discovery_rejected_pods",
        "Pods chosen for scraping but skipped because their annotations are wrong, by reason.",
        labels=["source", "reason"],
    )
    for reason, count in health.rejected:
        rejected.add_metric(["kubernetes", reason], count)
    errors = CounterMetricFamily(
        "tokenwatt_discovery_errors",
        "Failed requests to the Kubernetes API, by request (list, watch, owner) and reason.",
        labels=["source", "request", "reason"],
    )
    for request, reason, count in health.errors:
        errors.add_metric(["kubernetes", request, reason], count)
    yield from (up, servers, rejected, errors)
