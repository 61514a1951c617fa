"""The container image, built from the Dockerfile by a real engine and run: `scripts/image-test`.

The script starts a private dockerd (root, or passwordless sudo), makes the pinned base from Debian
with mmdebstrap, builds the image and checks it running (see the script). Where dockerd or
mmdebstrap is missing, or root is out of reach, this is skipped outside CI (run the script by hand:
it installs them); under CI=true it runs, and the script installs what is missing.
Then the Helm chart's pod spec is checked against the image the script built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import UNDER_CI
from tests.deploy.artifacts import REPO
from tests.deploy.packaging import by_name, containers, render

pytestmark = pytest.mark.tools  # docker, mmdebstrap

IMAGE_TEST = REPO / "scripts" / "image-test"


@dataclass(frozen=True, slots=True)
class ImageTest:
    result: subprocess.CompletedProcess[str]
    inspect: Path

    def config(self) -> dict[str, Any]:
        """The built image's `Config` (docker image inspect)."""
        if self.result.returncode != 0:
            pytest.fail("scripts/image-test failed: no image to compare with")
        config: dict[str, Any] = json.loads(self.inspect.read_text())[0]["Config"]
        return config


def _why_not_here() -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [tool for tool in ("dockerd", "mmdebstrap") if shutil.which(tool, path=path) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        no_password = sudo is not None and subprocess.run([sudo, "-n", "true"], check=False).returncode == 0
        if not no_password:
            return "not root, and sudo asks for a password"
    return None


@pytest.fixture(scope="module")
def image_test(tmp_path_factory: pytest.TempPathFactory) -> ImageTest:
    reason = _why_not_here()
    if reason is not None and not UNDER_CI:
        pytest.skip(f"{reason}: run scripts/image-test by hand")
    inspect = tmp_path_factory.mktemp("image") / "inspect.json"
    args = [str(IMAGE_TEST), "--inspect", str(inspect)]
    with subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            # SIGTERM, not SIGKILL: the script stops its daemon and removes its files on the way out.
            proc.terminate()
            stdout, stderr = proc.communicate(timeout=330)
            stderr += "\nscripts/image-test ran past 900 s and was stopped"
    return ImageTest(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), inspect)


def test_image_builds_runs_and_passes_every_check(image_test: ImageTest) -> None:
    log = image_test.result.stdout + image_test.result.stderr
    print(log)  # the steps' times, the image's layers and size: shown by `pytest -rA`
    assert image_test.result.returncode == 0, log[-8000:]
    assert "image test passed" in log


def test_chart_pod_spec_agrees_with_the_image(image_test: ImageTest) -> None:
    config = image_test.config()
    (exposed,) = config["ExposedPorts"]
    probe = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(config["Healthcheck"]["Test"]))
    assert probe is not None and f"{probe[1]}/tcp" == exposed
    # The image's own user is the chart's wherever it need not reach the kubelet's socket; with kubelet
    # placement (the default, for discovery) it runs as UID 0 on purpose (docs/deployment.md).
    static = {"discovery": {"source": "none"}, "placement": {"source": "static"}}
    daemonset = render("static-placement", {"config": static}).one("DaemonSet")
    tokenwatt = by_name(containers(daemonset), "tokenwatt")
    security = tokenwatt["securityContext"]
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == config["User"]
    assert daemonset["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == security["runAsGroup"]
    # The image writes nothing at run time (the script runs it under --read-only) and declares no volume.
    assert security["readOnlyRootFilesystem"] is True and config["Volumes"] is None
    assert tokenwatt["ports"][0] == {"name": "metrics", "containerPort": int(probe[1]), "protocol": "TCP"}
    assert tokenwatt["livenessProbe"]["httpGet"]["path"] == probe[2] == "/healthz"
    assert tokenwatt["livenessProbe"]["httpGet"]["port"] == "metrics"
    # /readyz: the script asks it of the running image and expects 200.
    assert tokenwatt["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "command" not in tokenwatt and config["Entrypoint"] == ["tokenwatt"]
    assert tokenwatt["args"] == config["Cmd"]
    assert by_name(tokenwatt["volumeMounts"], "tokenwatt-config")["mountPath"] == config["Cmd"][-1]
