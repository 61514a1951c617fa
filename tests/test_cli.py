"""The command line as a user runs it (subprocesses, exit codes, output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli

FIXTURES = Path(__file__).parent / "fixtures"


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "probe", "check-config"):
        assert command in result.stdout


def test_check_config_valid_and_invalid(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("servers:\n  - {name: a, url: 'http://127.0.0.1:8000/metrics'}\n")
    ok = run_cli("check-config", str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text("energy: {interval: soon}\nservers:\n  - {name: a, url: nope, kind: vllm}\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith(f"{bad}: ") for line in lines)
    assert "energy.interval: 'soon' is not a duration" in result.stdout
    assert "servers[0].url: 'nope' is not a URL" in result.stdout


def test_run_with_an_invalid_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("windows: []\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2
    assert "windows must list at least one duration" in result.stderr
    assert "Traceback" not in result.stderr


HEAVY = ("aiohttp", "lightkube", "grpc", "prometheus_client")
"""What the config checks run without: the HTTP server and client, the Kubernetes and gRPC clients,
the exposition library (each costs a tenth of a second of every `check-config`). The energy
sources' modules load, since their settings are checked, and with them structlog."""


@pytest.mark.parametrize(
    ("config", "args", "exit_code"),
    [
        ("servers:\n  - {name: a, url: 'http://127.0.0.1:8000/metrics'}\n", ["check-config"], 0),
        ("windows: []\n", ["run", "--config"], 2),
    ],
    ids=["check-config", "refused run"],
)
def test_config_checks_load_no_heavy_package(
    tmp_path: Path, config: str, args: list[str], exit_code: int
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config)
    code = (
        "import sys\n"
        "from exporter.cli import main\n"
        f"code = main({[*args, str(path)]!r})\n"
        f"print(code, sorted({{m.partition('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.splitlines()[-1] == f"{exit_code} []", result.stdout + result.stderr


def test_probe_json_on_the_real_vllm_page() -> None:
    result = run_cli("probe", str(FIXTURES / "vllm-0.32.0-cpu.metrics.txt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server_kind"] == "vllm"
    [model] = report["models"]
    assert model["model"] == "tiny"
    assert (model["input_tokens"], model["output_tokens"], model["requests"]) == (608.0, 612.0, 43.0)


def test_probe_table_and_missing_file() -> None:
    table = run_cli("probe", str(FIXTURES / "vllm-0.32.0-cpu.metrics.txt"))
    assert table.returncode == 0
    assert table.stdout.splitlines()[0] == "server kind: vllm"
    assert "tiny" in table.stdout and "608" in table.stdout and "612" in table.stdout
    missing = run_cli("probe", "/nonexistent/metrics.txt")
    assert missing.returncode == 2
    assert "/nonexistent/metrics.txt" in missing.stderr


def test_run_listen_override_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("energy: {source: simulated}\n")
    result = run_cli("run", "--config", str(config), "--listen", "nowhere")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "tokenwatt: --listen: expected HOST:PORT such as 0.0.0.0:9839, got 'nowhere'"
    )


def test_run_serves_on_the_listen_override_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import time
    import urllib.request

    from tests.conftest import free_port

    config = tmp_path / "c.yml"
    config.write_text("listen: '127.0.0.1:1'\nenergy: {source: simulated, interval: 200ms}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "run",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
                    body = resp.read()
                if b"tokenwatt_gpu_energy_joules_total{" in body:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert b'tokenwatt_energy_source_up{source="simulated"} 1.0' in body
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert '"event": "stopped"' in out
