"""Grafana dashboards: Grafana's own schema, layout, data source, units, variables, and their docs."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.deploy.artifacts import (
    DASHBOARD_FILES,
    DASHBOARDS_DOC,
    REPO,
    load_dashboard,
    panel_queries,
    panels,
    recorded_metric_names,
    recording_rules,
    variables,
)

SCHEMA_DIR = REPO / "tests" / "deploy" / "grafana-schema"
DASHBOARDS = [load_dashboard(p) for p in DASHBOARD_FILES]
IDS = [p.stem for p in DASHBOARD_FILES]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
# Grafana unit ids the dashboards may use (Grafana's valueFormats: energy, power, currency, mass,
# time, ratio), plus its custom "suffix:" form for tokens.
GRAFANA_UNITS = {"joule", "watt", "percentunit", "massg", "s", "none", "short"}
CUSTOM_UNIT = re.compile(r"^suffix: \S.*$")
CURRENCY_UNIT = re.compile(r"^currency[A-Z]{3}$")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def tsc() -> Path:
    """Grafana's schema and TypeScript, installed from the committed lock file when missing."""
    binary = SCHEMA_DIR / "node_modules" / ".bin" / "tsc"
    if not binary.exists():
        npm = require_tool("npm")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=SCHEMA_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm ci in {SCHEMA_DIR} failed:\n{result.stdout}{result.stderr}"
    return binary


def type_check(named_dashboards: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Each dashboard as `export const d = <json> satisfies DashboardJson;`, checked by `tsc --strict`."""
    binary = tsc()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "node_modules").symlink_to(SCHEMA_DIR / "node_modules")
        (work / "dashboard.ts").write_text((SCHEMA_DIR / "dashboard.ts").read_text())
        files = []
        for name, dashboard in named_dashboards.items():
            source = work / f"{name.replace('-', '_')}.ts"
            source.write_text(
                "import type { DashboardJson } from './dashboard';\n"
                f"export const d = {json.dumps(dashboard, indent=2)} satisfies DashboardJson;\n"
            )
            files.append(source.name)
        return subprocess.run(
            [
                str(binary), "--noEmit", "--strict", "--module", "esnext", "--moduleResolution", "bundler",
                "--target", "es2022", *files,
            ],
            cwd=work, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@pytest.mark.tools  # npm, tsc
def test_dashboards_satisfy_grafanas_schema() -> None:
    assert len(DASHBOARDS) == 3
    result = type_check(dict(zip(IDS, DASHBOARDS, strict=True)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools  # npm, tsc
def test_the_schema_check_rejects_what_grafana_would_not_load() -> None:
    """The check is real: an unknown panel key and a threshold mode Grafana does not have fail it."""
    unknown_key = json.loads(json.dumps(DASHBOARDS[0]))
    unknown_key["panels"][1]["colour"] = "red"
    bad_enum = json.loads(json.dumps(DASHBOARDS[1]))
    stat = next(p for p in bad_enum["panels"] if "thresholds" in p.get("fieldConfig", {}).get("defaults", {}))
    stat["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    result = type_check({"unknown_key": unknown_key, "bad_enum": bad_enum})
    assert result.returncode != 0
    assert "unknown_key.ts" in result.stdout and "colour\"' does not exist" in result.stdout
    assert "bad_enum.ts" in result.stdout and '"absolut"' in result.stdout


def test_uids_are_unique_and_stable() -> None:
    uids = [d["uid"] for d in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    assert uids == [p.stem for p in DASHBOARD_FILES], "each file is named after its dashboard's uid"


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=IDS)
def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    every = list(panels(dashboard))
    ids = [p["id"] for p in every]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for p in every:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= GRID_COLUMNS, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=IDS)
def test_every_query_goes_to_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    ds = [v for v in variables(dashboard) if v.kind == "datasource"]
    assert [(v.name, v.query) for v in ds] == [("datasource", "prometheus")]
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
    for v in variables(dashboard):
        assert v.kind in ("datasource", "query", "custom"), v.name
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE, v["name"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=IDS)
def test_panels_use_units_grafana_knows(dashboard: dict[str, Any]) -> None:
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        units = [p["fieldConfig"]["defaults"]["unit"]]
        units += [
            prop["value"]
            for o in p["fieldConfig"]["overrides"]
            for prop in o["properties"]
            if prop["id"] == "unit"
        ]
        for unit in units:
            assert unit in GRAFANA_UNITS or CUSTOM_UNIT.match(unit) or CURRENCY_UNIT.match(unit), (
                f"{p['title']}: {unit}"
            )


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=IDS)
def test_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {v.name for v in variables(dashboard)} | BUILTIN_VARIABLES
    texts = [q.expr for q in panel_queries(dashboard)] + [v.query for v in variables(dashboard)]
    texts += [p["title"] for p in panels(dashboard)]
    for text in texts:
        used = set(re.findall(r"\$\{?(\w+)", text))
        assert used <= defined, f"{text}: undefined {sorted(used - defined)}"


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=IDS)
def test_recorded_series_in_queries_are_recording_rules(dashboard: dict[str, Any]) -> None:
    recorded = {r.name for r in recording_rules()}
    windows = next(v.options for v in variables(dashboard) if v.name == "window")
    for q in panel_queries(dashboard):
        for name in recorded_metric_names(q.expr):
            for window in windows:
                assert name.replace("$window", window) in recorded, f"{q.panel}: {name}"


def test_the_dashboards_doc_shows_every_panel_query() -> None:
    doc = DASHBOARDS_DOC.read_text()
    for dashboard in DASHBOARDS:
        assert dashboard["title"] in doc
        for q in panel_queries(dashboard):
            assert q.panel in doc, q.panel
            assert q.expr in doc, f"{q.panel}: {q.expr}"
