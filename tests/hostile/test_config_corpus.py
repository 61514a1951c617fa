"""Bad configs, as an attacker or an unlucky operator writes them, through `check-config` and `run`.

Each case must exit 2 with one line that names the problem: no traceback, no echo of a megabyte,
no password. Each command runs in a subprocess limited to 200 MB of address space and 2 s of CPU
(the kernel kills it past either), with a wall-clock deadline only as a liveness bound (a FIFO
that hangs the read would hit it).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.helpers import run_cli

MEMORY_LIMIT = 200 * 1024 * 1024
CPU_LIMIT_S = 2
SERVER = "servers: [{name: a, url: 'http://127.0.0.1:9/metrics'}]\n"


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


def _bomb(field: str) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "x-anchors:\n" + "".join(f"  {line}\n" for line in lines) + f"{field}: *a9\n"


def _nested(depth: int) -> str:
    return "windows: " + "[" * depth + "1m" + "]" * depth + "\n"


def _nested_mapping(depth: int) -> str:
    return "energy: " + "{a: " * depth + "1" + "}" * depth + "\n"


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo.yml"
    os.mkfifo(path)
    return path


def _web(tmp: Path, text: str | bytes) -> Path:
    web = tmp / "web.yml"
    if isinstance(text, bytes):
        web.write_bytes(text)
    else:
        web.write_text(text)
    return _text(tmp, f"web_config_file: {web}\n")


def _text(tmp: Path, text: str) -> Path:
    path = tmp / "config.yml"
    path.write_text(text)
    return path


GOOD_HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()

CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (how to make the config path, what the one line must say)
    "alias bomb in listen": (lambda t: _text(t, _bomb("listen")), "expands to more than"),
    "alias bomb in servers": (lambda t: _text(t, _bomb("servers")), "expands to more than"),
    "alias bomb in windows": (lambda t: _text(t, _bomb("windows")), "expands to more than"),
    "alias to itself": (lambda t: _text(t, "windows: &w [*w]\n"), "alias refers to a node it is inside"),
    "undefined alias": (lambda t: _text(t, "windows: *nope\n"), "undefined alias"),
    "nested 500 levels": (lambda t: _text(t, _nested(500)), "nested deeper than"),
    "mappings nested 500 levels": (lambda t: _text(t, _nested_mapping(500)), "nested deeper than"),
    "binary garbage": (lambda t: _bytes(t, bytes(range(256)) * 40), "binary file"),
    "not utf-8": (lambda t: _bytes(t, b"listen: \xff\xfe:9839\n"), "not UTF-8"),
    "control characters": (lambda t: _text(t, "listen: \x07\x08\n"), "not valid YAML"),
    "/dev/zero": (lambda t: Path("/dev/zero"), "not a regular file (a device)"),
    "a FIFO": (_fifo, "not a regular file (a FIFO)"),
    "a directory": (lambda t: t, "not a regular file (a directory)"),
    "a missing file": (lambda t: t / "nope.yml", "cannot read the file"),
    "a 1 MB file": (lambda t: _text(t, "listen: " + "x" * 1_000_000 + "\n"), "larger than 256 KiB"),
    "a 200 kB bad value": (lambda t: _text(t, "listen: " + "9" * 200_000 + "\n"), "not valid YAML"),
    "a 200 kB bad string": (lambda t: _text(t, "listen: '" + "9" * 200_000 + "'\n"), "listen: expected"),
    "top level a list": (lambda t: _text(t, "- a\n- b\n"), "top level must be a mapping"),
    "invalid YAML": (lambda t: _text(t, "servers: [\n"), "not valid YAML"),
    "unknown key": (lambda t: _text(t, "lisen: 0.0.0.0:9839\n"), "lisen: unknown key"),
    "duplicate top-level key": (
        lambda t: _text(t, "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n"),
        "key 'listen' is written twice",
    ),
    "duplicate key in a server": (
        lambda t: _text(t, "servers:\n  - name: a\n    url: http://127.0.0.1:1/metrics\n    name: b\n"),
        "key 'name' is written twice",
    ),
    "unclosed IPv6 URL": (
        lambda t: _text(t, "servers: [{name: a, url: 'http://[::1'}]\n"),
        "servers[0].url",
    ),
    "URL port 99999": (
        lambda t: _text(t, "servers: [{name: a, url: 'http://127.0.0.1:99999/metrics'}]\n"),
        "servers[0].url",
    ),
    "URL without a host": (
        lambda t: _text(t, "servers: [{name: a, url: 'http://:80/'}]\n"),
        "servers[0].url",
    ),
    "URL with a space": (
        lambda t: _text(t, "servers: [{name: a, url: 'http://exa mple/metrics'}]\n"),
        "servers[0].url",
    ),
    "credentials in a bad URL": (
        lambda t: _text(t, "servers: [{name: a, url: 'http://user:secret@[::1/metrics'}]\n"),
        "<redacted>",
    ),
    "dcgm-exporter URL port 0": (
        lambda t: _text(t, "energy: {dcgm_exporter: {url: 'http://127.0.0.1:0/metrics'}}\n"),
        "energy.dcgm_exporter.url",
    ),
    "listen port 99999": (lambda t: _text(t, "listen: 0.0.0.0:99999\n"), "listen"),
    "listen host with a space": (lambda t: _text(t, "listen: 'bad host:9839'\n"), "neither an IP address"),
    "listen not a string": (lambda t: _text(t, "listen: [1, 2]\n"), "listen"),
    "interval 99999999999999d": (
        lambda t: _text(t, SERVER.replace("}]", ", interval: 99999999999999d}]")),
        "servers[0].interval",
    ),
    "interval below a millisecond": (
        lambda t: _text(t, "energy: {interval: 0.0001ms}\n"),
        "energy.interval",
    ),
    "window of 400 days": (lambda t: _text(t, "windows: [400d]\n"), "windows[0]"),
    "web config: binary": (lambda t: _web(t, bytes(range(256))), "binary file"),
    "web config: a FIFO": (lambda t: _text(t, f"web_config_file: {_fifo(t)}\n"), "a FIFO"),
    "web config: /dev/zero": (lambda t: _text(t, "web_config_file: /dev/zero\n"), "a device"),
    "web config: alias bomb": (lambda t: _web(t, _bomb("basic_auth_users")), "expands to more than"),
    "web config: truncated bcrypt hash": (
        lambda t: _web(t, f"basic_auth_users: {{alice: '{GOOD_HASH[:-5]}'}}\n"),
        "basic_auth_users.alice: expected a bcrypt hash",
    ),
    "web config: bcrypt cost 99": (
        lambda t: _web(t, f"basic_auth_users: {{alice: '{GOOD_HASH[:4]}99{GOOD_HASH[6:]}'}}\n"),
        "basic_auth_users.alice",
    ),
    "web config: duplicate user": (
        lambda t: _web(t, f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n  alice: '{GOOD_HASH}'\n"),
        "written twice",
    ),
}


def _bytes(tmp: Path, data: bytes) -> Path:
    path = tmp / "config.yml"
    path.write_bytes(data)
    return path


def _tokenwatt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, preexec_fn=_limits, errors="replace")


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, (result.returncode, output[:2000])
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, lines[:5]
    assert len(lines[0]) <= 1000, lines[0][:300]
    assert expected in lines[0], lines[0]
    assert "secret" not in lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_config_refuses_with_one_line(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    _assert_one_clear_line(_tokenwatt("check-config", str(make(tmp_path))), expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_with_one_line(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    _assert_one_clear_line(_tokenwatt("run", "--config", str(make(tmp_path))), expected)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("listen", ["busy", "192.0.2.1:0", "no-such-host.invalid:0"])
def test_run_on_an_address_it_cannot_bind_exits_2(tmp_path: Path, busy_port: int, listen: str) -> None:
    address = f"127.0.0.1:{busy_port}" if listen == "busy" else listen
    config = _text(tmp_path, f"listen: '{address}'\nenergy: {{source: simulated}}\n")
    _assert_one_clear_line(_tokenwatt("run", "--config", str(config)), "listen: cannot listen on")
