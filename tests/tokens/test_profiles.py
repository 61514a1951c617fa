"""Every server profile against captured pages and against pages written for the versions and traps
in the servers' sources: what each kind counts, how labels are summed, and how a page is recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.tokens.profiles import PROFILES, Timing, generic_profile, series
from exporter.tokens.scraper import PageReading, ScrapeError, read_page
from exporter.values import ModelTokens

FIXTURES = Path(__file__).parent.parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def tokens(
    model: str | None,
    input_tokens: float,
    output_tokens: float,
    requests: float | None = None,
    running: float | None = None,
    cached: float | None = None,
) -> ModelTokens:
    return ModelTokens(model, input_tokens, output_tokens, requests, running, cached)


def read(text: str) -> PageReading:
    """The page read with its kind detected; reading it with that kind's profile must agree."""
    reading = read_page(text, None)
    assert read_page(text, reading.profile) == reading
    return reading


# --- captured pages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "models"),
    [
        ("vllm-0.32.0-cpu.metrics.txt", "vllm", [tokens("tiny", 608, 612, 43, 0, 0)]),
        (
            "vllm_v1_dynamo-docs-metrics_examples-vllm-log.txt",
            "vllm",
            [tokens("Qwen/Qwen3-0.6B", 66, 600, 2, 0)],
        ),
        ("vllm_v0_datadog-integrations-core-fixture.txt", "vllm", [tokens("facebook/opt-125m", 5, 7, 1, 0)]),
        (
            "sglang_docs-references-production_metrics.txt",
            "sglang",
            [tokens("meta-llama/Llama-3.1-8B-Instruct", 8128902, 7557572, None, 162)],
        ),
        (
            # realtime_tokens_total (per step) wins over the tokenizer's per-request counters
            "sglang_dynamo-docs-metrics_examples-sglang-log.txt",
            "sglang",
            [tokens("Qwen/Qwen3-0.6B", 33, 300, 1, 0, 0)],
        ),
        (
            "tgi_datadog-integrations-core-hugging_face_tgi-payload.txt",
            "tgi",
            [tokens(None, 662, 3423, 109, 0)],
        ),
        ("llamacpp_llama.cpp-pr13196-comment.txt", "llamacpp", [tokens(None, 143, 673)]),
        ("llamacpp-fork_ik_llama.cpp-pr695-comment.txt", "llamacpp", [tokens(None, 6886, 3469)]),
        (
            # requests: request_success_total + request_failure_total
            "nim_datadog-integrations-core-nvidia_nim-fixture.txt",
            "nim",
            [tokens("meta/llama-3.1-8b-instruct", 109, 174, 5, 1)],
        ),
    ],
)
def test_captured_pages(name: str, kind: str, models: list[ModelTokens]) -> None:
    reading = read(fixture(name))
    assert reading.profile.kind == kind
    assert list(reading.models) == models


@pytest.mark.parametrize(
    ("name", "clue"),
    [
        ("triton-trtllm_tensorrtllm_backend-README.txt", "it has triton metrics (nv_…)"),
        ("triton-core-gpu-energy_datadog-integrations-core-nvidia_triton.txt", "older releases (23.11)"),
        ("trtllm-serve_dynamo-docs-metrics_examples-trtllm-log.txt", "return_perf_metrics: true"),
    ],
)
def test_captured_pages_without_token_counters_say_what_they_have(name: str, clue: str) -> None:
    with pytest.raises(ScrapeError) as e:
        read_page(fixture(name), None)
    assert e.value.reason == "unknown_kind"
    assert clue in str(e.value)
    assert "the page has: " in str(e.value)


def test_a_page_of_no_server_lists_its_names() -> None:
    with pytest.raises(ScrapeError) as e:
        read_page("# TYPE up gauge\nup 1\nprocess_cpu_seconds_total 3\n", None)
    assert e.value.reason == "unknown_kind"
    assert str(e.value).endswith("the page has: up, process_cpu_seconds_total")


# --- vLLM ----------------------------------------------------------------------------------------

VLLM_DP = fixture("written_vllm-v1-two-engines-two-models.txt")


def test_vllm_sums_data_parallel_engines_and_finish_reasons_per_model() -> None:
    reading = read(VLLM_DP)
    assert reading.profile.kind == "vllm"
    assert list(reading.models) == [
        tokens("llama", 1500, 3500, 15, 5, 500),
        tokens("qwen", 70, 90, 2, 1, 0),
    ]
    assert (reading.input_timing, reading.output_timing) == (Timing.PER_STEP, Timing.PER_STEP)


def test_vllm_v0_has_no_engine_label_and_no_created() -> None:
    text = VLLM_DP.replace('engine="1",', 'engine="0",').replace('engine="0",', "")
    text = "\n".join(line for line in text.splitlines() if "created" not in line and "cached" not in line)
    with pytest.raises(ScrapeError, match="duplicate series"):  # two engines folded onto one series
        read_page(text + "\n", PROFILES["vllm"])
    single = "\n".join(
        line for line in VLLM_DP.splitlines() if 'engine="1"' not in line and "cached" not in line
    )
    reading = read(single.replace('engine="0",', "") + "\n")
    assert list(reading.models) == [tokens("llama", 1000, 2000, 11, 3), tokens("qwen", 70, 90, 2, 1)]


def test_vllm_with_log_stats_disabled_says_so() -> None:
    with pytest.raises(ScrapeError) as e:
        read_page("# TYPE python_info gauge\npython_info 1.0\n", PROFILES["vllm"])
    assert e.value.reason == "missing_family"
    assert "--disable-log-stats" in str(e.value)
    assert "the page has: python_info" in str(e.value)


def test_aphrodite_is_vllm_under_its_own_prefix() -> None:
    reading = read(VLLM_DP.replace("vllm:", "aphrodite:"))
    assert reading.profile.kind == "aphrodite"
    assert list(reading.models) == [tokens("llama", 1500, 3500, 15, 5), tokens("qwen", 70, 90, 2, 1)]


def test_lmdeploy_counts_cached_tokens_apart() -> None:
    text = fixture("written_lmdeploy-0.11.txt")
    reading = read(text)
    assert reading.profile.kind == "lmdeploy"
    assert list(reading.models) == [tokens("internlm2", 4000, 5100, 32, 4, 1024)]


# --- Ray Serve LLM -------------------------------------------------------------------------------

RAY = fixture("written_ray-serve-llm-2.60-two-replicas.txt")


def test_ray_sums_replicas_and_has_no_request_counter_before_the_first_finish() -> None:
    reading = read(RAY)
    assert reading.profile.kind == "ray"
    # Ray creates a counter at its first non-zero increment: no request has finished yet.
    assert list(reading.models) == [tokens("qwen-0.5b", 500, 2000, None, 3)]


def test_ray_before_any_request_reads_as_no_models_yet() -> None:
    idle = "\n".join(line for line in RAY.splitlines() if "tokens" not in line) + "\n"
    reading = read(idle)
    assert reading.profile.kind == "ray"
    assert reading.models == ()


def test_ray_2_3x_kept_the_colon() -> None:
    text = (
        "# TYPE ray_vllm:prompt_tokens_total counter\n"
        'ray_vllm:prompt_tokens_total{ReplicaId="r",model_name="m"} 5.0\n'
        "# TYPE ray_vllm:generation_tokens_total counter\n"
        'ray_vllm:generation_tokens_total{ReplicaId="r",model_name="m"} 9.0\n'
        "# TYPE ray_vllm:request_success_total counter\n"
        'ray_vllm:request_success_total{ReplicaId="r",finished_reason="stop",model_name="m"} 1.0\n'
    )
    assert list(read(text).models) == [tokens("m", 5, 9, 1)]


# --- SGLang --------------------------------------------------------------------------------------

SGLANG_TOKENIZER = fixture("written_sglang-0.5.17-tokenizer.txt")

SGLANG_SCHEDULERS = fixture("written_sglang-0.5.17-all-schedulers.txt")


def test_sglang_tokenizer_counters_sum_over_is_streaming_and_cache_sources() -> None:
    reading = read(SGLANG_TOKENIZER)
    assert reading.profile.kind == "sglang"
    assert list(reading.models) == [tokens("qwen", 150, 500, 5, None, 40)]
    assert (reading.input_timing, reading.output_timing) == (Timing.ON_COMPLETION, Timing.ON_COMPLETION)


def test_sglang_prefers_realtime_tokens_and_never_adds_up_tensor_parallel_ranks() -> None:
    reading = read(SGLANG_TOKENIZER + SGLANG_SCHEDULERS)
    # Every rank reports the same work (--enable-metrics-for-all-schedulers): the largest copy counts.
    assert list(reading.models) == [tokens("qwen", 150, 520, 5, 3, 40)]
    assert (reading.input_timing, reading.output_timing) == (Timing.PER_STEP, Timing.PER_STEP)


def test_sglang_sums_data_parallel_ranks() -> None:
    dp = "\n".join(
        line.replace('model_name="qwen"', f'dp_rank="{rank}",model_name="qwen"')
        for rank in (0, 1)
        for line in SGLANG_SCHEDULERS.splitlines()
        if 'tp_rank="0"' in line
    )
    reading = read_page(dp + "\n", PROFILES["sglang"])
    assert list(reading.models) == [tokens("qwen", 300, 1040, None, 6, 80)]


def test_sglang_started_but_idle_is_recognised_with_no_models() -> None:
    text = fixture("sglang_dynamo-docs-metrics_examples-sglang-log.txt")
    idle = "\n".join(line for line in text.splitlines() if "tokens_total" not in line) + "\n"
    reading = read(idle)
    assert reading.profile.kind == "sglang"
    assert reading.models == ()


# --- TGI, Triton, trtllm-serve, llama.cpp, Dynamo ------------------------------------------------


def test_tgi_histogram_sums_with_no_total_suffix() -> None:
    reading = read(fixture("tgi_datadog-integrations-core-hugging_face_tgi-payload.txt"))
    assert reading.profile.model_label is None
    assert (reading.input_timing, reading.output_timing) == (Timing.ON_ARRIVAL, Timing.ON_COMPLETION)


TRITON = fixture("written_triton-trtllm-token-histograms.txt")


def test_triton_reads_the_token_histograms_of_the_model_that_carries_them() -> None:
    reading = read(TRITON)
    assert reading.profile.kind == "triton"
    # The ensemble's steps have request counters but no tokens: only tensorrt_llm is a model here.
    assert list(reading.models) == [tokens("tensorrt_llm", 1600, 3372, 15, 2)]


def test_trtllm_serve_with_token_counters() -> None:
    text = fixture("written_trtllm-serve-main.txt")
    reading = read(text)
    assert reading.profile.kind == "trtllm"
    assert list(reading.models) == [tokens("Qwen/Qwen3-0.6B", 64, 256, 3, 1, 16)]
    assert reading.output_timing == Timing.ON_COMPLETION


def test_llama_cpp_adds_the_cached_prompt_tokens_it_counts_apart() -> None:
    text = fixture("written_llamacpp-cached-tokens.txt")
    reading = read(text)
    assert list(reading.models) == [tokens(None, 1234570 + 4096, 2500000, None, 2, 4096)]
    assert (reading.input_timing, reading.output_timing) == (Timing.PER_STEP, Timing.ON_COMPLETION)


def test_dynamo_frontend() -> None:
    text = fixture("written_dynamo-frontend.txt")
    reading = read(text)
    assert reading.profile.kind == "dynamo"
    assert list(reading.models) == [tokens("qwen/qwen3-0.6b", 132, 640, 4, 1)]
    assert reading.output_timing == Timing.PER_STEP


# --- generic, detection, strictness --------------------------------------------------------------


def test_generic_profile_reads_the_named_families_and_filters() -> None:
    profile = generic_profile(
        model_label="model",
        input_tokens=[series("my_tokens_total", kind="prompt"), series("my_cached_tokens_total")],
        output_tokens=[series("my_tokens_total", kind="completion")],
        requests=[series("my_requests_total", status="ok")],
        replica_labels=["rank"],
    )
    text = """\
my_tokens_total{kind="prompt",model="a",rank="0"} 100
my_tokens_total{kind="prompt",model="a",rank="1"} 100
my_tokens_total{kind="completion",model="a",rank="0"} 30
my_tokens_total{kind="completion",model="b",rank="0"} 7
my_cached_tokens_total{model="a"} 20
my_requests_total{model="a",status="ok"} 3
my_requests_total{model="a",status="failed"} 9
"""
    reading = read_page(text, profile)
    assert list(reading.models) == [tokens("a", 120, 30, 3), tokens("b", 0, 7, 0)]
    assert reading.output_timing == Timing.UNVERIFIED


def test_a_page_of_two_servers_is_ambiguous() -> None:
    with pytest.raises(ScrapeError) as e:
        read_page(VLLM_DP + SGLANG_TOKENIZER, None)
    assert e.value.reason == "ambiguous_kind"
    assert "vllm (vllm:generation_tokens_total)" in str(e.value)
    assert "sglang (sglang:generation_tokens_total)" in str(e.value)
    # An explicit kind reads its own families and ignores the other server's.
    assert list(read_page(VLLM_DP + SGLANG_TOKENIZER, PROFILES["sglang"]).models) == [
        tokens("qwen", 150, 500, 5, None, 40)
    ]


def test_a_non_finite_token_counter_fails_the_page() -> None:
    with pytest.raises(ScrapeError) as e:
        read_page(VLLM_DP.replace("2000.0", "NaN"), PROFILES["vllm"])
    assert e.value.reason == "non_finite"


def test_a_malformed_token_line_fails_with_its_line_number() -> None:
    broken = VLLM_DP.replace(
        'vllm:generation_tokens_total{engine="1",model_name="llama"} 1500.0',
        'vllm:generation_tokens_total{engine="1",model_name="llama"} 1,500',
    )
    line = broken.splitlines().index('vllm:generation_tokens_total{engine="1",model_name="llama"} 1,500') + 1
    with pytest.raises(ScrapeError) as e:
        read_page(broken, None)
    assert e.value.reason == "parse"
    assert f"line {line}: value '1,500'" in str(e.value)


def test_every_kind_has_a_detection_name_of_its_own() -> None:
    owners: dict[str, str] = {}
    for profile in PROFILES.values():
        assert profile.detection_names(), profile.kind
        for name in profile.detection_names():
            assert owners.setdefault(name, profile.kind) == profile.kind
