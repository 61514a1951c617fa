"""The committed pod-resources stubs are what grpcio-tools generates from the vendored proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path("exporter/placement/podresources")
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    require_module("grpc_tools")  # grpcio-tools, in the deploy extra
    (tmp_path / PACKAGE).mkdir(parents=True)
    shutil.copy(REPO / PACKAGE / "api.proto", tmp_path / PACKAGE / "api.proto")
    out = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", out, f"--python_out={out}", f"--pyi_out={out}",
         f"--grpc_python_out={out}", str(PACKAGE / "api.proto")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        assert fresh == (REPO / PACKAGE / name).read_text(), f"run scripts/gen-podresources: {name} is stale"


def test_the_proto_keeps_its_provenance_and_license_notice() -> None:
    header = (REPO / PACKAGE / "api.proto").read_text().split("syntax =")[0]
    assert "kubernetes/kubelet at tag kubernetes-1.36.3" in header
    assert "Apache License 2.0, The Kubernetes Authors" in header
