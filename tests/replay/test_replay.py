"""`tokenwatt replay` over small hand-computed traces, and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main
from tests.helpers import run_cli

T0 = 1_700_000_000

# GPU 0 at 100 W; its counter restarts at t=4 (1300 -> 50), so the reset-corrected series is
# 0, 100, 200, 300, 350, 450, 550. GPU 1 at a steady 200 W.
GPU0_RAW = [1000, 1100, 1200, 1300, 50, 150, 250]
# Server a (model m1): the last sample follows a restart of the server (tokens count from zero).
SERVER_A = [(0.5, 0, 0), (1.5, 100, 10), (2.5, 200, 20), (3.5, 200, 20), (4.5, 300, 30), (5.5, 50, 5)]
# Server b labels no model.
SERVER_B = [(1.0, 0, 0), (3.0, 0, 40), (5.0, 0, 80)]


@pytest.fixture
def traces(tmp_path: Path) -> tuple[Path, Path]:
    energy = tmp_path / "E.csv"
    lines = ["timestamp,gpu,energy_joules"]
    for t in range(7):
        lines += [f"{T0 + t},0,{GPU0_RAW[t]}", f"{T0 + t},1,{5000 + 200 * t}"]
    energy.write_text("\n".join(lines) + "\n")
    tokens = tmp_path / "T.csv"
    rows = [(t, "a", "m1", i, o) for t, i, o in SERVER_A] + [(t, "b", "", i, o) for t, i, o in SERVER_B]
    lines = ["timestamp,server,model,input_tokens,output_tokens"]
    lines += [f"{T0 + t},{s},{m},{i},{o}" for t, s, m, i, o in sorted(rows)]
    tokens.write_text("\n".join(lines) + "\n")
    return energy, tokens


def _replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict[str, object]]:
    assert main(["replay", *args, "--json"]) == 0
    return {str(obj["server"]): obj for obj in json.loads(capsys.readouterr().out)}


def test_mapped_servers_get_their_gpus_energy(
    traces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    energy, tokens = traces
    found = _replay_json(
        capsys, "--energy", str(energy), "--tokens", str(tokens), "--map", "a=0", "--map", "b=1"
    )
    a, b = found["a"], found["b"]
    # a on GPU 0: E(0.5)=50, E(1.5)=150, E(2.5)=250, E(4.5)=400, E(5.5)=500. The counter reset
    # between t=3 and t=4 leaves [2.5, 3.5] and [3.5, 4.5] unmeasured (their tokens count, their
    # energy does not). Measured: 100 + 100 + 100 J for 10 + 10 + 5 output tokens (5 since the
    # server restarted) and 100 + 100 + 50 input tokens.
    assert a["model"] == "m1"
    assert (a["energy_joules"], a["input_tokens"], a["output_tokens"]) == (300.0, 350.0, 35.0)
    assert a["joules_per_output_token"] == 300 / 25
    assert a["joules_per_token"] == 300 / 275
    assert a["idle_energy_joules"] == 0.0  # the idle interval [2.5, 3.5] is unmeasured
    assert a["server_unmeasured_seconds"] == 2.0
    assert (a["first_timestamp"], a["last_timestamp"]) == (T0 + 0.5, T0 + 5.5)
    # b on GPU 1 at 200 W, from t=1 to t=5: 800 J for 80 output tokens.
    assert b["model"] is None
    assert (b["energy_joules"], b["output_tokens"], b["joules_per_output_token"]) == (800.0, 80.0, 10.0)
    assert b["joules_per_input_token"] is None


def test_a_server_without_map_uses_every_gpu(
    traces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    energy, tokens = traces
    found = _replay_json(capsys, "--energy", str(energy), "--tokens", str(tokens))
    # Both servers on both GPUs: half of each; an interval is measured only if it is on every GPU.
    # a: [0.5, 1.5], [1.5, 2.5], [4.5, 5.5], each 50 J of GPU 0 and 100 J of GPU 1: 450 J.
    # b: [1, 3] (100 J of GPU 0, 200 J of GPU 1) is measured; [3, 5] overlaps the reset.
    assert found["a"]["energy_joules"] == 450.0
    assert found["b"]["energy_joules"] == 300.0


def test_table_output(traces: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    energy, tokens = traces
    assert (
        main(["replay", "--energy", str(energy), "--tokens", str(tokens), "--map", "a=0", "--map", "b=1"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "server",
        "model",
        "energy_J",
        "input",
        "output",
        "J/output",
        "J/token",
        "idle_J",
    ]
    assert lines[1].split() == ["a", "m1", "300.0", "350", "35", "12.0000", "1.0909", "0.0"]
    assert lines[2].split() == ["b", "(none)", "800.0", "0", "80", "10.0000", "10.0000", "0.0"]


E_HEAD = "timestamp,gpu,energy_joules\n"
T_HEAD = "timestamp,server,model,input_tokens,output_tokens\n"


@pytest.mark.parametrize(
    ("which", "content", "problem"),
    [
        ("E.csv", "timestamp,gpu,joules\n1,0,5\n", "E.csv:1: missing column energy_joules"),
        ("E.csv", E_HEAD + "1,0,5\n2,0,abc\n", "E.csv:3: column energy_joules: 'abc' is not a number"),
        (
            "E.csv",
            E_HEAD + "1,0,5\n3,0,6\n2,0,7\n",
            "E.csv:4: timestamp 2 goes backwards for gpu 0 (line 3 has 3)",
        ),
        ("E.csv", E_HEAD + "1,0,5\n1,0,6\n", "E.csv:3: timestamp 1 repeats for gpu 0 (line 2 has 1)"),
        ("T.csv", "timestamp,server,input_tokens,output_tokens\n1,a,0,0\n", "T.csv:1: missing column model"),
        ("T.csv", T_HEAD + "1,a,m,0,x1\n", "T.csv:2: column output_tokens: 'x1' is not a number"),
        (
            "T.csv",
            T_HEAD + "5,a,m,0,0\n6,a,m,1,1\n4,a,m,2,2\n",
            "T.csv:4: timestamp 4 goes backwards for server a",
        ),
        ("T.csv", T_HEAD + "nan,a,m,0,0\n", "T.csv:2: column timestamp: 'nan' is not a finite number"),
        ("T.csv", T_HEAD + "1,a,m,0\n", "T.csv:2: 4 cells, but the header has 5 columns"),
        ("T.csv", T_HEAD + "1,a,m,-3,0\n", "T.csv:2: column input_tokens: -3.0 is negative"),
    ],
)
def test_bad_input_exits_2_naming_file_line_and_problem(
    traces: tuple[Path, Path], capsys: pytest.CaptureFixture[str], which: str, content: str, problem: str
) -> None:
    energy, tokens = traces
    (energy.parent / which).write_text(content)
    assert main(["replay", "--energy", str(energy), "--tokens", str(tokens)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"tokenwatt replay: {energy.parent / problem}")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--map", "a=7"], "E.csv: --map a= names GPU '7', which has no readings"),
        (["--map", "zz=0"], "T.csv: --map names server 'zz', which has no token samples"),
        (["--map", "a"], "--map 'a': expected SERVER=GPU[,GPU...], e.g. llama=0,1"),
    ],
)
def test_bad_maps_exit_2(
    traces: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str], problem: str
) -> None:
    energy, tokens = traces
    assert main(["replay", "--energy", str(energy), "--tokens", str(tokens), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(problem)


def test_the_command_exits_2_on_a_missing_file(traces: tuple[Path, Path]) -> None:
    energy, tokens = traces
    missing = energy.parent / "nope.csv"
    done = run_cli("replay", "--energy", str(missing), "--tokens", str(tokens))
    assert done.returncode == 2
    assert done.stderr.startswith(f"tokenwatt replay: {missing}: cannot read the file")


def test_readings_around_scrapes_do_not_shrink_the_gap_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the daemon records them: a periodic reading every second, plus a reading 5 ms before
    # and after each scrape. Three servers scraped at the same instants put four readings within
    # 10 ms of each other every second; the periodic one-second spacing is still no gap.
    energy = tmp_path / "e.csv"
    tokens = tmp_path / "t.csv"
    e_rows, t_rows = ["timestamp,gpu,energy_joules"], ["timestamp,server,model,input_tokens,output_tokens"]
    for step in range(60):
        t = 1000.0 + step
        for instant in (t, t + 0.495, t + 0.496, t + 0.504, t + 0.505):
            e_rows.append(f"{instant:.3f},0,{100.0 * (instant - 1000.0):.3f}")  # a steady 100 W
        for server in ("a", "b", "c"):
            t_rows.append(f"{t + 0.5:.3f},{server},m,{20 * step},{10 * step}")
    energy.write_text("\n".join(e_rows) + "\n")
    tokens.write_text("\n".join(t_rows) + "\n")
    results = _replay_json(capsys, "--energy", str(energy), "--tokens", str(tokens))
    for server in ("a", "b", "c"):
        result = results[server]
        # 59 one-second intervals at 100 W, one GPU shared by three servers in equal shares.
        assert result["energy_joules"] == pytest.approx(100.0 * 59 / 3, rel=1e-6)
        assert result["output_tokens"] == 590
