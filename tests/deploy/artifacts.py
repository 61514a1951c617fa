"""What the tests of `deploy/` read: rules, alerts, dashboards and their queries, the metrics reference."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
RULE_FILES = (PROMETHEUS_DIR / "rules.yml", PROMETHEUS_DIR / "alerts.yml")
RULE_TEST_FILES = tuple(sorted(PROMETHEUS_DIR.glob("*_test.yml")))
DASHBOARD_FILES = tuple(sorted(GRAFANA_DIR.glob("*.json")))
METRICS_DOC = REPO / "docs" / "metrics.md"
ALERTS_DOC = REPO / "docs" / "alerts.md"
DASHBOARDS_DOC = REPO / "docs" / "dashboards.md"


@dataclass(frozen=True, slots=True)
class RecordingRule:
    group: str
    name: str
    expr: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AlertingRule:
    name: str
    expr: str
    for_: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One query of one dashboard panel, as Grafana sends it (variables not yet substituted)."""

    dashboard: str
    """The dashboard's uid."""
    panel: str
    ref_id: str
    expr: str
    instant: bool


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    kind: str
    """Grafana's variable type: datasource, query, custom."""
    query: str
    include_all: bool
    all_value: str | None
    options: tuple[str, ...]
    """The values of a custom variable."""


def _groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def recording_rules() -> list[RecordingRule]:
    return [
        RecordingRule(g["name"], r["record"], r["expr"], tuple(sorted((r.get("labels") or {}).items())))
        for path in RULE_FILES
        for g in _groups(path)
        for r in g["rules"]
        if "record" in r
    ]


def alerting_rules() -> list[AlertingRule]:
    return [
        AlertingRule(
            r["alert"],
            r["expr"],
            r.get("for", "0s"),
            tuple(sorted((r.get("labels") or {}).items())),
            tuple(sorted((r.get("annotations") or {}).items())),
        )
        for path in RULE_FILES
        for g in _groups(path)
        for r in g["rules"]
        if "alert" in r
    ]


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(dashboard["uid"], p["title"], t["refId"], t["expr"], bool(t.get("instant")))
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]


def all_panel_queries() -> list[PanelQuery]:
    return [q for path in DASHBOARD_FILES for q in panel_queries(load_dashboard(path))]


def variables(dashboard: dict[str, Any]) -> list[Variable]:
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        query = v.get("query", "")
        if isinstance(query, dict):
            query = query.get("query", "")
        options = tuple(str(o["value"]) for o in v.get("options", [])) if v["type"] == "custom" else ()
        out.append(
            Variable(v["name"], v["type"], str(query), bool(v.get("includeAll")), v.get("allValue"), options)
        )
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_EXPORTER_NAME = re.compile(r"(?<![\w:$])tokenwatt_[a-z0-9_]+(?![\w:])")
_RECORDED_NAME = re.compile(r"(?<![\w:$])[a-z_]+:tokenwatt_[a-z0-9_]+:[a-z0-9_$]+(?![\w:])")


def exporter_metric_names(expr: str) -> set[str]:
    """The exporter's metric names a PromQL expression reads (string literals aside)."""
    return set(_EXPORTER_NAME.findall(_STRING.sub('""', expr)))


def recorded_metric_names(expr: str) -> set[str]:
    """The recording rules (level:metric:operations) an expression reads; `$var` parts kept as written."""
    return set(_RECORDED_NAME.findall(_STRING.sub('""', expr)))


_TABLE_ROW = re.compile(r"^\|\s*`(tokenwatt_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|", re.MULTILINE)


def documented_sample_names() -> set[str]:
    """The sample names `docs/metrics.md` documents: a counter family `x` has samples `x_total`."""
    names = set()
    for family, kind in _TABLE_ROW.findall(METRICS_DOC.read_text()):
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        elif kind in ("histogram", "summary"):
            names.update(f"{family}{suffix}" for suffix in ("_bucket", "_sum", "_count", ""))
        else:
            names.add(family)
    return names
