"""`tokenwatt demo` as a user runs it: a subprocess, its /metrics over HTTP, SIGINT to stop."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body: bytes = resp.read()
            return body.decode()
    except OSError:
        return None


def output_jpt_1m(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "tokenwatt_joules_per_token"
                and s.labels.get("token_type") == "output"
                and s.labels.get("window") == "1m"
            ):
                return float(s.value)
    return None


def test_demo_serves_joules_per_token_and_stops_on_sigint() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = time.monotonic()
        first_page = None
        # Liveness bounds, generous for a loaded machine; not speed requirements.
        while first_page is None and time.monotonic() - started < 30:
            first_page = fetch(url)
            time.sleep(0.1)
        assert first_page is not None, "no /metrics within 30 s"

        jpt = None
        while time.monotonic() - started < 45:
            page = fetch(url)
            jpt = output_jpt_1m(page) if page else None
            if jpt is not None:
                break
            time.sleep(0.5)
        assert jpt is not None and math.isfinite(jpt) and jpt > 0, "no J/output token within 45 s"
        assert fetch(f"http://127.0.0.1:{port}/readyz") == "ready\n"

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)  # raises if SIGINT does not stop it
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "Traceback" not in out
