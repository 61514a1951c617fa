"""Every exporter metric a rule, an alert or a dashboard reads is one `docs/metrics.md` documents."""

from __future__ import annotations

import pytest

from tests.deploy.artifacts import (
    alerting_rules,
    all_panel_queries,
    documented_sample_names,
    exporter_metric_names,
    recording_rules,
)


def test_the_extractor_finds_exporter_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (server) (rate(tokenwatt_server_energy_joules_total{server=~"tokenwatt_x"}[5m]))'
        " / server:tokenwatt_server_tokens:rate5m + up * tokenwatt_gpu_power_watts"
    )
    assert exporter_metric_names(expr) == {
        "tokenwatt_server_energy_joules_total",
        "tokenwatt_gpu_power_watts",
    }


def test_documented_counters_are_read_by_their_sample_name() -> None:
    documented = documented_sample_names()
    assert "tokenwatt_server_energy_joules_total" in documented
    assert "tokenwatt_server_energy_joules" not in documented
    assert "tokenwatt_gpu_power_watts" in documented


def _readers() -> list[tuple[str, str]]:
    readers = [(f"rule {r.name}", r.expr) for r in recording_rules()]
    readers += [(f"alert {a.name}", a.expr) for a in alerting_rules()]
    readers += [(f"dashboard {q.dashboard}: {q.panel} ({q.ref_id})", q.expr) for q in all_panel_queries()]
    return readers


@pytest.mark.parametrize(("reader", "expr"), _readers(), ids=[r for r, _ in _readers()])
def test_metric_is_documented(reader: str, expr: str) -> None:
    missing = sorted(exporter_metric_names(expr) - documented_sample_names())
    assert not missing, f"{reader} reads metrics docs/metrics.md does not document: {missing}"
