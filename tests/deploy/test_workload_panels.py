"""The fleet dashboard's workload views on known series: promtool evaluates the panels' queries.

Three discovered pods in two workloads of one namespace, one pod of a Job in another, and a server
that is no pod feed energy and token counters at constant rates. The ranking panel must give each
workload all its pods' energy over all their tokens, for each token type (`all` being input plus
output, which has no counter of its own), and the `workload` variable must narrow the per-server
panels, which read recording rules that do not keep the label, to that workload's servers.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.deploy.artifacts import GRAFANA_DIR, PROMETHEUS_DIR, load_dashboard, panel_queries
from tests.deploy.test_live_prometheus import substitute

pytestmark = pytest.mark.tools  # promtool

FLEET = load_dashboard(GRAFANA_DIR / "tokenwatt-fleet.json")
ALL = ".*"
"""The `allValue` of the namespace, workload and model variables."""
EVAL_MINUTES = 10
PER_MINUTE = 60
"""Counters grow by 60 times the figures below each minute: their rates per second are whole numbers,
so Prometheus' sums are exact in whatever order it adds the series, and so are the expected ratios."""


@dataclass(frozen=True, slots=True)
class Server:
    """A server's labels and the rates (per second) of its counters."""

    server: str
    namespace: str
    pod: str
    workload: str
    model: str
    joules: int
    idle_joules: int
    input_tokens: int
    output_tokens: int

    def labels(self, model: bool = True) -> str:
        pod = {"namespace": self.namespace, "pod": self.pod, "workload": self.workload} if self.pod else {}
        labels = {"server": self.server, **({"model": self.model} if model else {}), **pod}
        return ", ".join(f'{k}="{v}"' for k, v in labels.items())

    def tokens(self, token_type: str) -> int:
        return {"input": self.input_tokens, "output": self.output_tokens}.get(
            token_type, self.input_tokens + self.output_tokens
        )


SERVERS = (
    Server(
        "llm/llama-7d9f8c6b5-x2x4q", "llm", "llama-7d9f8c6b5-x2x4q", "llama", "llama-8b", 600, 150, 200, 100
    ),
    Server(
        "llm/llama-7d9f8c6b5-k8m2z", "llm", "llama-7d9f8c6b5-k8m2z", "llama", "llama-8b", 300, 150, 100, 50
    ),
    Server("llm/qwen-0", "llm", "qwen-0", "qwen", "qwen-32b", 1200, 600, 100, 300),
    Server("batch/eval-28a7x", "batch", "eval-28a7x", "eval", "llama-8b", 750, 100, 400, 100),
    Server("local-vllm", "", "", "", "llama-8b", 100, 50, 50, 50),
)
TOKEN_TYPES = ("output", "input", "all")


def expr(title: str, **variables: str) -> str:
    (query,) = [q for q in panel_queries(FLEET) if q.panel == title]
    defaults = {"namespace": ALL, "workload": ALL, "model": ALL, "window": "5m"}
    return substitute(query.expr, defaults | variables)


def input_series() -> list[dict[str, str]]:
    series = []
    for s in SERVERS:
        energy, idle = f"tokenwatt_server_energy_joules_total{{{s.labels()}}}", s.labels(model=False)
        series.append({"series": energy, "values": f"0+{PER_MINUTE * s.joules}x{EVAL_MINUTES}"})
        series.append(
            {
                "series": f"tokenwatt_server_idle_energy_joules_total{{{idle}}}",
                "values": f"0+{PER_MINUTE * s.idle_joules}x{EVAL_MINUTES}",
            }
        )
        for token_type in ("input", "output"):
            name = f'tokenwatt_server_tokens_total{{{s.labels()}, token_type="{token_type}"}}'
            series.append({"series": name, "values": f"0+{PER_MINUTE * s.tokens(token_type)}x{EVAL_MINUTES}"})
    return series


def run_promtool(tests: list[dict[str, object]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    unit = {
        "rule_files": [str(PROMETHEUS_DIR / "rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series(), "promql_expr_test": tests}],
    }
    path = tmp_path / "workload_panels_test.yml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    return subprocess.run(
        [require_tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )


def workload_figures(token_type: str) -> dict[tuple[str, str], float]:
    """Ground truth: per (namespace, workload), the energy of its servers over their tokens."""
    joules: dict[tuple[str, str], int] = {}
    tokens: dict[tuple[str, str], int] = {}
    for s in SERVERS:
        key = (s.namespace, s.workload)
        joules[key] = joules.get(key, 0) + s.joules
        tokens[key] = tokens.get(key, 0) + s.tokens(token_type)
    return {key: joules[key] / tokens[key] for key in joules}


def labels(**values: str) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in values.items() if v) + "}"


@pytest.mark.parametrize("token_type", TOKEN_TYPES)
def test_workloads_are_ranked_by_their_pods_energy_over_their_tokens(token_type: str, tmp_path: Path) -> None:
    figures = workload_figures(token_type)
    # The data holds no coincidence: every workload's figure differs from every other's.
    assert len(set(figures.values())) == len(figures)
    tests: list[dict[str, object]] = [
        {
            "expr": expr("Workloads by J per token", token_type=token_type),
            "eval_time": f"{EVAL_MINUTES}m",
            "exp_samples": [
                {"labels": labels(namespace=ns, workload=workload), "value": value}
                for (ns, workload), value in figures.items()
            ],
        },
        {
            "expr": expr(
                "Workloads by J per token", token_type=token_type, namespace="llm", workload="llama"
            ),
            "eval_time": f"{EVAL_MINUTES}m",
            "exp_samples": [
                {"labels": labels(namespace="llm", workload="llama"), "value": figures[("llm", "llama")]}
            ],
        },
    ]
    result = run_promtool(tests, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workload_variable_narrows_the_per_server_panels(tmp_path: Path) -> None:
    llama = [s for s in SERVERS if s.workload == "llama"]
    record = "server_model:tokenwatt_joules_per_token:ratio_rate5m"
    idle = expr("Idle share of energy by server", workload="llama")
    tests: list[dict[str, object]] = [
        {
            "expr": expr("Servers by J per token", token_type="output", workload="llama"),
            "eval_time": f"{EVAL_MINUTES}m",
            "exp_samples": [
                {
                    "labels": record
                    + labels(namespace=s.namespace, server=s.server, model=s.model, token_type="output"),
                    "value": s.joules / s.output_tokens,
                }
                for s in llama
            ],
        },
        {
            "expr": idle,
            "eval_time": f"{EVAL_MINUTES}m",
            "exp_samples": [
                {
                    "labels": "server:tokenwatt_idle_energy_share:ratio_rate5m"
                    + labels(namespace=s.namespace, server=s.server),
                    "value": s.idle_joules / s.joules,
                }
                for s in llama
            ],
        },
    ]
    result = run_promtool(tests, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
