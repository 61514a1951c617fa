"""Config loading: typed values, and errors that name the field, the value and what is allowed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import exporter.config
from exporter.config import ConfigError, parse_duration
from exporter.config_file import load_config, validate_config
from exporter.energy import gap_limit_s


def test_the_settings_module_imports_nothing_else_of_tokenwatt() -> None:
    tree = ast.parse(Path(exporter.config.__file__).read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "pydantic" in imported
    assert [m for m in imported if m.split(".")[0] == "exporter"] == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("5m", 300.0), ("1m30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "1x", "m5", "1s 2", 5, None, "0s"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_defaults_and_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        """
listen: "127.0.0.1:9900"
energy: {source: simulated, interval: 250ms}
servers:
  - name: llama-70b
    url: http://127.0.0.1:8000/metrics
    gpus: [0, GPU-1234abcd-0000-0000-0000-000000000000]
    interval: 2s
windows: [30s, 5m]
"""
    )
    config = load_config(path)
    assert config.listen == "127.0.0.1:9900"
    assert config.energy.interval == 0.25
    assert gap_limit_s(config.energy) == 1.25
    server = config.servers[0]
    assert (server.kind, server.interval, server.timeout) == ("auto", 2.0, 5.0)
    assert server.gpus == [0, "GPU-1234abcd-0000-0000-0000-000000000000"]
    assert config.windows == [30.0, 300.0]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("")
    config = load_config(path)
    assert config.listen == "0.0.0.0:9839"
    assert config.windows == [60.0, 300.0, 900.0]


def test_every_problem_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config(
            {
                "listen": "nohost",
                "energy": {"source": "gpu-magic", "intervall": "1s"},
                "servers": [
                    {
                        "name": "a b",
                        "url": "ftp://x",
                        "kind": "foo",
                        "interval": "1x",
                        "gpus": [0, "abc", -1],
                    },
                    {"url": "http://x"},
                ],
                "windows": ["5q"],
            }
        )
    problems = caught.value.problems
    expected = [
        "listen: expected HOST:PORT",
        "energy.source: 'gpu-magic' is not allowed",
        "energy.intervall: unknown key",
        "servers[0].name: 'a b' is not a server name",
        "servers[0].url: 'ftp://x' is not a URL",
        "servers[0].kind: 'foo' is not allowed",
        "servers[0].interval: '1x' is not a duration",
        "servers[0].gpus[1]: expected a GPU index (0, 1, ...) or a UUID (GPU-..., MIG-...), got 'abc'",
        "servers[0].gpus[2]: GPU index -1 is negative",
        "servers[1].name: required, but missing",
        "windows[0]: '5q' is not a duration",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert len(problems) == len(expected), problems


def test_duplicate_server_names() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"servers": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]})
    assert caught.value.problems == ["config: server names must be unique; repeated: a"]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.yml")
    assert "cannot read the file" in missing.value.problems[0]
    bad = tmp_path / "bad.yml"
    bad.write_text("servers: [unclosed\n")
    with pytest.raises(ConfigError) as malformed:
        load_config(bad)
    assert "not valid YAML" in malformed.value.problems[0]
    listy = tmp_path / "list.yml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as toplevel:
        load_config(listy)
    assert "top level must be a mapping" in toplevel.value.problems[0]
