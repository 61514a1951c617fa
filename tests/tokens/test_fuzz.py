"""Mutated metrics pages thrown at the parser for a fixed time: no crash, no hang.

libFuzzer (through atheris) mutates the captured pages in `tests/fixtures/`; the harness is
`fuzz_parser.py`. `TOKENWATT_FUZZ_SECONDS` sets the time (default 5).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_module

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.mark.slow  # TOKENWATT_FUZZ_SECONDS of fuzzing
def test_mutated_pages_never_crash_or_hang(tmp_path: Path) -> None:
    require_module("atheris")  # missing: a skip outside CI, a failure under CI
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE.parent / "fixtures", corpus)
    seconds = int(os.environ.get("TOKENWATT_FUZZ_SECONDS", "5"))
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_parser.py"),
            str(corpus),
            f"-max_total_time={seconds}",
            "-timeout=5",  # seconds for one input before libFuzzer reports a hang
            "-rss_limit_mb=2048",
            "-seed=1",
            "-print_final_stats=1",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    runs = [line for line in log.splitlines() if line.startswith("stat::number_of_executed_units:")]
    assert runs and int(runs[0].split(":")[-1]) > 100, log[-4000:]
