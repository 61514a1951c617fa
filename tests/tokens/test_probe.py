"""`tokenwatt probe`: kind, models and counts of one page, as JSON (the contract) or as a table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from exporter.cli import main

FIXTURES = Path(__file__).parent.parent / "fixtures"


def probe_json(target: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["probe", target, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("vllm-0.32.0-cpu.metrics.txt", "vllm"),
        ("vllm_v0_datadog-integrations-core-fixture.txt", "vllm"),
        ("vllm_v1_dynamo-docs-metrics_examples-vllm-log.txt", "vllm"),
        ("sglang_docs-references-production_metrics.txt", "sglang"),
        ("sglang_dynamo-docs-metrics_examples-sglang-log.txt", "sglang"),
        ("written_sglang-0.5.17-tokenizer.txt", "sglang"),
        ("tgi_datadog-integrations-core-hugging_face_tgi-payload.txt", "tgi"),
        ("llamacpp_llama.cpp-pr13196-comment.txt", "llamacpp"),
        ("llamacpp-fork_ik_llama.cpp-pr695-comment.txt", "llamacpp"),
        ("written_llamacpp-cached-tokens.txt", "llamacpp"),
        ("nim_datadog-integrations-core-nvidia_nim-fixture.txt", "nim"),
        ("written_triton-trtllm-token-histograms.txt", "triton"),
        ("written_trtllm-serve-main.txt", "trtllm"),
        ("written_lmdeploy-0.11.txt", "lmdeploy"),
        ("written_ray-serve-llm-2.60-two-replicas.txt", "ray"),
        ("written_dynamo-frontend.txt", "dynamo"),
        ("written_aphrodite-0.24.txt", "aphrodite"),
        ("written_vllm-v1-two-engines-two-models.txt", "vllm"),
    ],
)
def test_every_page_gives_its_kind(name: str, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_json(str(FIXTURES / name), capsys)["server_kind"] == kind


def test_json_follows_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    result = probe_json(str(FIXTURES / "vllm-0.32.0-cpu.metrics.txt"), capsys)
    assert result == {
        "server_kind": "vllm",
        "models": [
            {
                "model": "tiny",
                "input_tokens": 608.0,
                "output_tokens": 612.0,
                "requests": 43.0,
                "cached_input_tokens": 0.0,
                "running": 0.0,
            }
        ],
    }


def test_json_has_null_requests_and_no_unknown_keys_for_llama_cpp(capsys: pytest.CaptureFixture[str]) -> None:
    result = probe_json(str(FIXTURES / "llamacpp_llama.cpp-pr13196-comment.txt"), capsys)
    assert result["models"] == [
        {"model": None, "input_tokens": 143.0, "output_tokens": 673.0, "requests": None}
    ]


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(FIXTURES / "written_vllm-v1-two-engines-two-models.txt")
    assert main(["probe", path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "server kind: vllm",
        f"read from: {path}",
        "token counters move: input per_step, output per_step (see docs/servers.md)",
        "model  input_tokens  cached_input  output_tokens  requests  running",
        "llama  1500          500           3500           15        5",
        "qwen   70            0             90             2         1",
    ]


def test_a_page_without_token_counters_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", str(FIXTURES / "trtllm-serve_dynamo-docs-metrics_examples-trtllm-log.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tokenwatt probe: no known inference server's token counters on the page")
    assert "return_perf_metrics: true" in err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


async def test_a_base_url_finds_nim_on_v1_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    page = (FIXTURES / "nim_datadog-integrations-core-nvidia_nim-fixture.txt").read_bytes()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=page, headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/v1/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)  # its access lines would go to probe's stdout
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        code = await asyncio.to_thread(main, ["probe", url])
    finally:
        await runner.cleanup()
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["server kind: nim", f"read from: {url}/v1/metrics"]
    assert out[-1].split() == ["meta/llama-3.1-8b-instruct", "109", "-", "174", "5", "1"]
