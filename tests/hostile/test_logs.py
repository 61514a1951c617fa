"""Log lines and error lines: values from outside cut short, credentials in URLs never shown."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from exporter.logs import MAX_VALUE_CHARS, clean, configure_logging, redact
from tests.conftest import free_port
from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:secret@10.0.0.1:8000/metrics", "http://<redacted>@10.0.0.1:8000/metrics"),
        ("see https://token@host/x and http://a:b@c/", "see https://<redacted>@host/x and http://<redacted>@c/"),
        ("http://10.0.0.1:8000/metrics", "http://10.0.0.1:8000/metrics"),
        ("user@example.com wrote", "user@example.com wrote"),  # not a URL: left alone
    ],
)
def test_credentials_in_urls_are_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_long_values_are_cut_with_what_was_left_out() -> None:
    cut = clean("x" * 3_000_000)
    assert cut.startswith("x" * MAX_VALUE_CHARS) and cut.endswith("(2999800 more characters)")


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", "json")
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("json_logs")
def test_a_log_line_carries_neither_a_password_nor_a_megabyte(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.get_logger("t").warning(
        "target down", url="http://user:secret@127.0.0.1:1/metrics", error="junk " * 600_000
    )
    [line] = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["url"] == "http://<redacted>@127.0.0.1:1/metrics"
    assert len(line) < 1000


def test_probe_does_not_print_the_password_of_its_url() -> None:
    url = f"http://user:secret@127.0.0.1:{free_port()}/metrics"
    result = run_cli("probe", url, "--timeout", "2s")
    assert result.returncode == 1
    assert "127.0.0.1" in result.stderr and "<redacted>" in result.stderr
    assert "secret" not in result.stdout + result.stderr
