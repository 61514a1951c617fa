"""`tokenwatt run` with discovery but no way to reach the API server: a usage error, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_run_without_kubernetes_credentials_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "tokenwatt.yml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "energy: {source: simulated}\n"
        f"placement: {{source: kubelet, kubelet: {{socket: {tmp_path / 'kubelet.sock'}}}}}\n"
        "discovery: {source: kubernetes}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["NODE_NAME"] = "gpu-node-1"
    result = subprocess.run([sys.executable, "-m", "exporter.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "tokenwatt: discovery.kubernetes: no Kubernetes credentials: not in a cluster "
        "(KUBERNETES_SERVICE_HOST is not set), discovery.kubernetes.kubeconfig is null and "
        "KUBECONFIG is not set"
    )

    missing = tmp_path / "nowhere" / "kubeconfig"
    named = f"{{source: kubernetes, kubernetes: {{kubeconfig: {missing}}}}}"
    config.write_text(config.read_text().replace("{source: kubernetes}", named))
    result = subprocess.run([sys.executable, "-m", "exporter.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and f"Configuration file {missing} not found" in result.stderr
