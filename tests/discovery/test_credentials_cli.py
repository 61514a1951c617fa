"""`tokenwatt run` with discovery but no way to reach the API server: a usage error, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


def test_run_without_kubernetes_credentials_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tokenwatt.yml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "energy: {source: simulated}\n"
        f"placement: {{source: kubelet, kubelet: {{socket: {tmp_path / 'kubelet.sock'}}}}}\n"
        "discovery: {source: kubernetes}\n"
    )
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = run_cli("run", "--config", str(config), timeout=30, env={"NODE_NAME": "gpu-node-1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "tokenwatt: discovery.kubernetes: no Kubernetes credentials: not in a cluster "
        "(KUBERNETES_SERVICE_HOST is not set), discovery.kubernetes.kubeconfig is null and "
        "KUBECONFIG is not set"
    )

    missing = tmp_path / "nowhere" / "kubeconfig"
    named = f"{{source: kubernetes, kubernetes: {{kubeconfig: {missing}}}}}"
    config.write_text(config.read_text().replace("{source: kubernetes}", named))
    result = run_cli("run", "--config", str(config), timeout=30, env={"NODE_NAME": "gpu-node-1"})
    assert result.returncode == 2 and f"Configuration file {missing} not found" in result.stderr
