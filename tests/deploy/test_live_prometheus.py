"""Rules and dashboards against a real Prometheus that scrapes the running demo.

The demo (simulated GPUs, a simulated vLLM server over loopback, the demo's defaults plus an
electricity price and a carbon intensity: tests/deploy/priced_demo.py) runs as a subprocess; a real
Prometheus scrapes it every half second and evaluates rules.yml and alerts.yml every second. Every
recording rule and every dashboard query (its Grafana variables substituted as Grafana would) must
return data, and Prometheus' fleet J/token, cost and carbon per token must agree with the
exporter's own figures.

Those figures agree only over the same intervals. The exporter's windows hold every interval since
it started (the test lasts less than 5 minutes); Prometheus' rates span from its first sample. So
Prometheus starts first, the demo once Prometheus scrapes its address, and Prometheus' first
sample of each counter is the exporter's zero baseline: the counters stay at zero for one of the
exporter's one-second scrapes of the inference server, and Prometheus scrapes twice as often.

What the demo cannot feed is listed in NOT_LIVE with the reason, and reported as xfail: never
skipped silently.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, require_tool
from tests.deploy.artifacts import (
    DASHBOARD_FILES,
    REPO,
    RULE_FILES,
    PanelQuery,
    Variable,
    alerting_rules,
    load_dashboard,
    panel_queries,
    recording_rules,
    variables,
)

JOB = "tokenwatt"
DATA_WAIT_S = 60.0
"""How long every query gets to return data once the exporter's first samples are in Prometheus."""
SAMPLES_BEFORE_COMPARING = 10
"""Scrapes of the exporter's counters in Prometheus before the fleet figures are compared, so that
both sides cover several intervals."""
COUNTERS = (
    "tokenwatt_server_tokens_total",
    "tokenwatt_server_energy_joules_total",
    "tokenwatt_server_energy_cost_total",
    "tokenwatt_server_carbon_grams_total",
    "tokenwatt_server_idle_energy_joules_total",
)
"""The counters whose rates the compared rules divide."""
SCRAPE_IN_FLIGHT_S = 0.1
"""A scrape's samples carry the instant it started but reach Prometheus' database only when it ends
(the demo's scrapes take about 10 ms): a rule evaluated less than this after a scrape started may
have read the scrape before it."""
RATE_INTERVAL = "5m"
NOT_LIVE: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"median7d"),
        "the baseline samples its input on hour boundaries: nothing until the first boundary after "
        "the data starts",
    ),
    (
        re.compile(r"tokenwatt_energy_source_refresh_seconds"),
        "only a dcgm_exporter energy source reports it; the demo's source is simulated",
    ),
)
EMPTY_WHILE_HEALTHY = re.compile(r"tokenwatt_(target_scrape|energy_read)_errors_total")
"""Failure counters: they have no series until something fails, and nothing fails in the demo."""


def not_live_reason(expr: str) -> str | None:
    return next((reason for pattern, reason in NOT_LIVE if pattern.search(expr)), None)


@dataclass(frozen=True, slots=True)
class LivePrometheus:
    url: str

    def _get(self, path: str, params: dict[str, str] | list[tuple[str, str]]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {params}: HTTP {e.code}: {e.read().decode()}") from e
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; a range selector (`x[5m]`) returns each series' samples in "values"."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        result: list[dict[str, Any]] = self._get("/api/v1/query", params)["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        values: list[str] = self._get(f"/api/v1/label/{label}/values", [("match[]", selector)])
        return sorted(values)

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("live-prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp / "prometheus.log").open("w") as prometheus_log, (tmp / "demo.log").open("w") as demo_log:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=prometheus_log,
            stderr=subprocess.STDOUT,
        )
        demo: subprocess.Popen[bytes] | None = None
        try:
            live = LivePrometheus(f"http://127.0.0.1:{prometheus_port}")
            wait_until(lambda: _ready(live), 30, f"Prometheus to start (log: {tmp / 'prometheus.log'})")
            # Its scrape loop is running (up is 0: nothing listens yet), so it scrapes the exporter
            # while its counters are still at their zero baseline.
            wait_until(
                lambda: bool(live.query(f'up{{job="{JOB}"}}')),
                30,
                f"Prometheus' first scrape of the demo's address (log: {tmp / 'prometheus.log'})",
            )
            demo = subprocess.Popen(
                [sys.executable, "-m", "tests.deploy.priced_demo", "--listen", f"127.0.0.1:{exporter_port}"],
                cwd=REPO,
                stdout=demo_log,
                stderr=subprocess.STDOUT,
            )
            wait_until(
                lambda: bool(live.query(f'tokenwatt_server_tokens_total{{job="{JOB}"}} > 0')),
                30,
                f"the demo's token counters in Prometheus (logs: {tmp})",
            )
            yield live
        finally:
            processes = [p for p in (demo, server) if p is not None]
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)


def _ready(live: LivePrometheus) -> bool:
    try:
        with urllib.request.urlopen(f"{live.url}/-/ready", timeout=1) as resp:
            status: int = resp.status
            return status == 200
    except OSError:
        return False


def substitutions(live: LivePrometheus, dashboard: dict[str, Any]) -> list[dict[str, str]]:
    """Every combination of the dashboard's custom variables, its query variables resolved as Grafana
    resolves them: "All" where offered, else the first value the variable's own query returns."""
    fixed: dict[str, str] = {"__rate_interval": RATE_INTERVAL}
    choices: dict[str, tuple[str, ...]] = {}
    for v in variables(dashboard):
        if v.kind == "custom":
            choices[v.name] = v.options
        elif v.kind == "query":
            fixed[v.name] = v.all_value if v.include_all and v.all_value else _first_value(live, v, fixed)
    names = sorted(choices)
    return [
        fixed | dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(choices[n] for n in names))
    ]


def _first_value(live: LivePrometheus, variable: Variable, known: dict[str, str]) -> str:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(variable.query, known))
    assert match, f"variable {variable.name}: unsupported query {variable.query}"
    values = live.label_values(match.group(2), match.group(1))
    assert values, f"variable {variable.name}: {variable.query} has no values"
    return values[0]


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


@dataclass(frozen=True, slots=True)
class Answers:
    """What Prometheus returned for every query, once each had data or the wait was over."""

    rules: dict[str, list[dict[str, Any]]]
    panels: dict[PanelQuery, dict[str, list[dict[str, Any]]]]
    """Per panel query: its text with each set of variable values, and the result."""


@pytest.fixture(scope="module")
def answers(prometheus: LivePrometheus) -> Answers:
    rule_exprs = {r.name: r.name for r in recording_rules()}
    panel_exprs: dict[PanelQuery, list[str]] = {}
    for path in DASHBOARD_FILES:
        dashboard = load_dashboard(path)
        subs = substitutions(prometheus, dashboard)
        for q in panel_queries(dashboard):
            panel_exprs[q] = sorted({substitute(q.expr, s) for s in subs})
    every = set(rule_exprs.values()) | {e for exprs in panel_exprs.values() for e in exprs}
    results: dict[str, list[dict[str, Any]]] = {}
    waiting = {e for e in every if not not_live_reason(e) and not EMPTY_WHILE_HEALTHY.search(e)}
    deadline = time.monotonic() + DATA_WAIT_S
    while waiting and time.monotonic() < deadline:
        for expr in sorted(waiting):
            results[expr] = prometheus.query(expr)
            if results[expr]:
                waiting.discard(expr)
        time.sleep(0.5)
    for expr in every - results.keys():
        results[expr] = prometheus.query(expr)
    return Answers(
        {name: results[expr] for name, expr in rule_exprs.items()},
        {q: {e: results[e] for e in exprs} for q, exprs in panel_exprs.items()},
    )


def _marks(expr: str) -> list[pytest.MarkDecorator]:
    reason = not_live_reason(expr)
    return [pytest.mark.xfail(reason=reason, strict=False)] if reason else []


RULE_NAMES = sorted({r.name for r in recording_rules()})
PANEL_QUERIES = [q for path in DASHBOARD_FILES for q in panel_queries(load_dashboard(path))]


@pytest.mark.parametrize(
    "name", [pytest.param(n, id=n, marks=_marks(n)) for n in RULE_NAMES]
)  # fmt: skip
def test_recording_rule_returns_data(answers: Answers, name: str) -> None:
    result = answers.rules[name]
    assert result, f"{name} has no data"
    for sample in result:
        value = float(sample["value"][1])
        assert value == value and abs(value) != float("inf"), f"{name} {sample['metric']}: {value}"


@pytest.mark.parametrize(
    "query",
    [pytest.param(q, id=f"{q.dashboard}: {q.panel} {q.ref_id}", marks=_marks(q.expr)) for q in PANEL_QUERIES],
)
def test_dashboard_query_returns_data(answers: Answers, query: PanelQuery) -> None:
    for expr, result in answers.panels[query].items():
        if EMPTY_WHILE_HEALTHY.search(expr):
            assert result == [], f"{query.panel}: the healthy demo has failures: {result}"
        else:
            assert result, f"{query.panel}: no data for {expr}"


def test_every_rule_evaluates_without_error(prometheus: LivePrometheus) -> None:
    def evaluated() -> bool:
        return all(r.get("evaluationTime", 0) > 0 for g in prometheus.rule_groups() for r in g["rules"])

    wait_until(evaluated, 10, "every rule to be evaluated once")
    groups = prometheus.rule_groups()
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == {r.name for r in recording_rules()} | {a.name for a in alerting_rules()}
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not broken


@dataclass(frozen=True, slots=True)
class Figures:
    """One sample of a figure kept per token type: when it was taken, and its value per token type."""

    t: float
    by_token_type: dict[str, float]


def figures_until(live: LivePrometheus, selector: str, at: float, scale: float = 1.0) -> list[Figures]:
    """The samples of `selector` (one series per token type) in the 5 s up to `at`, oldest first."""
    by_time: dict[float, dict[str, float]] = {}
    for series in live.query(f"{selector}[5s]", at):
        for t, value in series["values"]:
            by_time.setdefault(float(t), {})[series["metric"]["token_type"]] = float(value) * scale
    return [Figures(t, values) for t, values in sorted(by_time.items())]


def assert_rates_start_at_the_baseline(live: LivePrometheus, at: float) -> None:
    """The rule's rates, evaluated at `at`, span the same intervals as the exporter's 5m window.

    The exporter's window holds every interval since its counters started at zero; Prometheus'
    ratio of rates spans from its earliest sample in the window (extrapolation scales both rates
    alike), so that sample must be the zero baseline.
    """
    selector = f'{{job="{JOB}", __name__=~"{"|".join(COUNTERS)}"}}[{RATE_INTERVAL}]'
    series = live.query(selector, at)
    assert {s["metric"]["__name__"] for s in series} == set(COUNTERS), series
    for s in series:
        t, value = s["values"][0]
        assert float(value) == 0, (
            f"{s['metric']}: Prometheus' earliest sample in the rule's window is {value} (at {t}), "
            "not the exporter's zero baseline: its rates span fewer intervals than the exporter's "
            "window, so the figures are not comparable (Prometheus missed the baseline scrape)"
        )


@pytest.mark.parametrize(
    ("recorded", "exported", "scale"),
    [
        ("fleet:tokenwatt_joules_per_token:ratio_rate5m", 'tokenwatt_joules_per_token{window="5m"}', 1.0),
        (
            "fleet:tokenwatt_cost_per_million_tokens:ratio_rate5m",
            'tokenwatt_cost_per_token{window="5m"}',
            1e6,
        ),
        (
            "fleet:tokenwatt_carbon_grams_per_million_tokens:ratio_rate5m",
            'tokenwatt_carbon_grams_per_token{window="5m"}',
            1e6,
        ),
        ("fleet:tokenwatt_tokens_per_joule:ratio_rate5m", 'tokenwatt_tokens_per_joule{window="5m"}', 1.0),
        (
            "server:tokenwatt_active_joules_per_token:ratio_rate5m",
            'tokenwatt_active_joules_per_token{window="5m"}',
            1.0,
        ),
    ],
    ids=["joules", "cost", "carbon", "tokens_per_joule", "active_joules"],
)
def test_recorded_fleet_figure_agrees_with_the_exporter(
    prometheus: LivePrometheus, recorded: str, exported: str, scale: float
) -> None:
    """Prometheus' ratio of rates (over the fleet, or the demo's one server) against the exporter's own
    5m window, within 2 %: the same figure whether tokenwatt exports it or `exposition.derived` leaves
    it to the rules.

    Like with like: the rates span the exporter's whole window (checked), and the recorded figure is
    compared with the exporter's figure from the scrape its evaluation read, not a later one (the
    demo's load moves J/token by more than 2 % from one second to the next).
    """
    samples = f'count_over_time(tokenwatt_server_energy_joules_total{{job="{JOB}"}}[5m])'
    wait_until(
        lambda: float(prometheus.query(samples)[0]["value"][1]) >= SAMPLES_BEFORE_COMPARING,
        SAMPLES_BEFORE_COMPARING + 30,
        f"{SAMPLES_BEFORE_COMPARING} scrapes of the exporter's counters",
    )
    evaluation = figures_until(prometheus, recorded, time.time())[-1]
    assert set(evaluation.by_token_type) == {"input", "output", "all"}
    assert_rates_start_at_the_baseline(prometheus, evaluation.t)
    servers = {s["metric"]["server"] for s in prometheus.query(exported, evaluation.t)}
    assert len(servers) == 1, "the demo runs one server: fleet = server"
    scrapes = figures_until(prometheus, exported, evaluation.t, scale)
    latest = scrapes[-1]
    # An evaluation that ran while the latest scrape was in flight read one of the last two: the
    # exporter's figure from that scrape is the one its value matches.
    in_flight = evaluation.t - latest.t < SCRAPE_IN_FLIGHT_S and len(scrapes) > 1
    candidates = scrapes[-2:] if in_flight else [latest]
    read = min(candidates, key=lambda s: abs(s.by_token_type["all"] - evaluation.by_token_type["all"]))
    assert set(read.by_token_type) == {"input", "output", "all"}
    for token_type, value in read.by_token_type.items():
        assert value > 0
        assert evaluation.by_token_type[token_type] == pytest.approx(value, rel=0.02), (
            f"{token_type}: recorded at {evaluation.t:.3f}, the exporter's scrape at {read.t:.3f}"
        )


def test_the_demo_leaves_failure_counters_empty_and_the_alerts_quiet(prometheus: LivePrometheus) -> None:
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == [], firing
    assert prometheus.query(f'up{{job="{JOB}"}}')[0]["value"][1] == "1"


def test_not_live_reasons_name_only_what_exists() -> None:
    """Each NOT_LIVE entry still matches a rule or a query: the list cannot outlive its reason."""
    texts = [r.name for r in recording_rules()] + [q.expr for q in PANEL_QUERIES]
    for pattern, reason in NOT_LIVE:
        assert any(pattern.search(t) for t in texts), reason
