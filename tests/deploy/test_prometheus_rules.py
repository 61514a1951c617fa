"""Recording and alerting rules: promtool checks them and runs their unit tests; every rule is tested."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.exposition.collector import families
from exporter.values import Derived
from tests.conftest import require_tool
from tests.deploy.artifacts import (
    ALERTS_DOC,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    alerting_rules,
    exporter_metric_names,
    recording_rules,
)
from tests.exposition.snapshots import steady_snapshot

RECORD_NAME = re.compile(r"^[a-z_]+:tokenwatt_[a-z0-9_]+:[a-z0-9_]+$")
BASELINE = "server_model_band:tokenwatt_joules_per_token:median7d_ratio_rate1h"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = promtool("check", "rules", path.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = promtool("test", "rules", path.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _unit_tests() -> list[dict[str, Any]]:
    return [t for path in RULE_TEST_FILES for t in yaml.safe_load(path.read_text())["tests"]]


def test_every_recording_rule_has_an_expected_value_in_a_unit_test() -> None:
    tested = {
        e["expr"].split("{")[0].strip()
        for t in _unit_tests()
        for e in t.get("promql_expr_test", [])
        if e.get("exp_samples")
    }
    untested = sorted({r.name for r in recording_rules()} - tested)
    assert not untested, f"recording rules with no promql_expr_test: {untested}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for t in _unit_tests():
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else silent).add(a["alertname"])
    names = {a.name for a in alerting_rules()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - silent == set(), f"alerts never tested staying silent: {sorted(names - silent)}"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    bad = [r.name for r in recording_rules() if not RECORD_NAME.match(r.name)]
    assert not bad


def test_the_1h_group_is_the_5m_group_with_the_window_replaced() -> None:
    rules = recording_rules()
    five = [(r.name, r.expr, r.labels) for r in rules if r.group == "tokenwatt-5m"]
    hour = [(r.name, r.expr, r.labels) for r in rules if r.group == "tokenwatt-1h" and r.name != BASELINE]
    assert len(five) > 30
    assert hour == [(n.replace("5m", "1h"), e.replace("5m", "1h"), labels) for n, e, labels in five]


def test_ratios_divide_sums_of_rates_never_average_ratios() -> None:
    for r in recording_rules():
        assert "avg" not in r.expr, r.name
        if r.name.split(":")[2].startswith("ratio_"):
            assert "/" in r.expr, r.name


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    doc = ALERTS_DOC.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for alert in alerting_rules():
        annotations = dict(alert.annotations)
        assert annotations.get("summary"), alert.name
        assert annotations.get("description"), alert.name
        assert dict(alert.labels).get("severity") in ("warning", "critical"), alert.name
        runbook = annotations.get("runbook", "")
        assert runbook == f"docs/alerts.md#{alert.name.lower()}", alert.name
        assert alert.name.lower() in headings, f"docs/alerts.md has no section for {alert.name}"


def test_rules_and_alerts_read_only_what_derived_none_exports() -> None:
    """With `exposition.derived: none` every rule and alert still has its input: they read counters
    and the gauges that are not windowed ratios, never a ratio the exporter may leave out."""
    snap, health = steady_snapshot(1)  # priced and with carbon: every family there is
    exported = {f.name for f, _ in families(snap, health, Derived.NONE)}
    readers = [(r.name, r.expr) for r in recording_rules()] + [(a.name, a.expr) for a in alerting_rules()]
    for name, expr in readers:
        missing = exporter_metric_names(expr) - exported
        assert not missing, f"{name} reads {sorted(missing)}, which derived: none does not export"
