"""The targeted parser: the format's quirks accepted, malformed wanted lines refused with their line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from exporter.pages.parser import ParseError, Sample, parse_samples, sample_names

FIXTURES = Path(__file__).parent.parent / "fixtures"


def one(text: str, name: str) -> Sample:
    (sample,) = parse_samples(text, [name])
    return sample


def test_reads_only_the_wanted_samples_of_the_real_vllm_page() -> None:
    text = (FIXTURES / "vllm-0.32.0-cpu.metrics.txt").read_text()
    samples = parse_samples(text, ["vllm:generation_tokens_total", "vllm:request_success_total"])
    assert [(s.name, dict(s.labels).get("finished_reason"), s.value) for s in samples] == [
        ("vllm:generation_tokens_total", None, 612.0),
        ("vllm:request_success_total", "stop", 0.0),
        ("vllm:request_success_total", "length", 43.0),
        ("vllm:request_success_total", "abort", 0.0),
        ("vllm:request_success_total", "error", 0.0),
        ("vllm:request_success_total", "repetition", 0.0),
    ]
    assert samples[0].labels == (("engine", "0"), ("model_name", "tiny"))


def test_matches_sample_names_not_family_names() -> None:
    text = (
        "# TYPE c counter\nc_total 3\nc_created 1.7e9\n"
        "# TYPE tgi_request_success counter\ntgi_request_success 5\n"
        '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 7\nh_count 2\n'
    )
    found = parse_samples(text, ["c_total", "tgi_request_success", "h_sum", "h_count", "c"])
    assert [(s.name, s.value) for s in found] == [
        ("c_total", 3.0),
        ("tgi_request_success", 5.0),
        ("h_sum", 7.0),
        ("h_count", 2.0),
    ]


def test_a_name_that_only_starts_like_a_wanted_one_is_not_read() -> None:
    text = "x_total_created 1\nx_total 2\nx_totals{ broken\n"
    assert [s.value for s in parse_samples(text, ["x_total"])] == [2.0]


def test_llama_cpp_six_significant_digits_and_type_lines_named_with_total() -> None:
    text = (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        "llamacpp:prompt_tokens_total 1.23457e+06\n"
    )
    assert one(text, "llamacpp:prompt_tokens_total").value == 1234570.0


@pytest.mark.parametrize(
    ("token", "expected"),
    [("NaN", math.nan), ("+Inf", math.inf), ("-Inf", -math.inf), ("8.128902e+06", 8128902.0), ("-0", 0.0)],
)
def test_special_and_go_style_values(token: str, expected: float) -> None:
    value = one(f"m {token}\n", "m").value
    assert (math.isnan(value) and math.isnan(expected)) or value == expected


def test_blank_lines_comments_timestamps_tabs_and_trailing_comma() -> None:
    text = (
        "\n\n# HELP m a help line with \\\\ and \\n escapes\n# TYPE m counter\n\n"
        'm_total{a="1",} 4 1700000000000\n'
        'm_total{ a = "2" }\t5\t1700000000001\n'
        "\n"
    )
    assert [(s.labels, s.value) for s in parse_samples(text, ["m_total"])] == [
        ((("a", "1"),), 4.0),
        ((("a", "2"),), 5.0),
    ]


def test_escaped_label_values_are_unescaped() -> None:
    text = 'm{model_name="a \\"quoted\\" \\\\ path\\nline",b="x{y}z, w=1"} 3\n'
    sample = one(text, "m")
    assert dict(sample.labels) == {"model_name": 'a "quoted" \\ path\nline', "b": "x{y}z, w=1"}


def test_openmetrics_unit_exemplar_and_eof() -> None:
    text = (
        "# TYPE tokens counter\n# UNIT tokens tokens\n# HELP tokens Tokens.\n"
        'tokens_total{m="a"} 10 # {trace_id="abc"} 1.0 1700000000.5\n'
        'tokens_created{m="a"} 1700000000.0\n'
        "# EOF\n"
        'tokens_total{m="b"} 99\n'
    )
    assert [(s.labels, s.value) for s in parse_samples(text, ["tokens_total"])] == [((("m", "a"),), 10.0)]


def test_junk_in_families_we_do_not_read_is_skipped() -> None:
    text = 'other{a="1" 2\nother nope\n{"utf8.name"} 1\nwanted 3\n'
    assert [s.value for s in parse_samples(text, ["wanted"])] == [3.0]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("wanted abc", "value 'abc' of wanted is not a number"),
        ("wanted 1_000", "value '1_000' of wanted is not a number"),
        ("wanted", "no value for wanted"),
        ('wanted{a="1"}', "no value for wanted"),
        ('wanted{a="1"}7', "no space between wanted and its value"),
        ('wanted{a="1" 7', "malformed labels at column"),
        ('wanted{a="1",', "unterminated label set"),
        ("wanted{a=1} 7", "malformed labels at column"),
        ('wanted{a="1",a="2"} 7', "repeated label name"),
        ("wanted 7 8 9", "unexpected text after the value of wanted"),
        ("wanted 7 soon", "value 'soon' of wanted is not a number"),
    ],
)
def test_a_malformed_wanted_line_fails_with_its_line_number(line: str, reason: str) -> None:
    text = f"# TYPE wanted gauge\nother 1\n{line}\nlater 2\n"
    with pytest.raises(ParseError) as e:
        parse_samples(text, ["wanted"])
    assert e.value.line_no == 3
    assert reason in e.value.reason
    assert str(e.value).startswith("line 3: ")


def test_the_same_series_twice_fails() -> None:
    text = 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\n'
    with pytest.raises(ParseError, match=r'line 2: duplicate series a\{x="1",y="2"\}'):
        parse_samples(text, ["a"])


def test_a_page_cut_inside_a_wanted_line_fails() -> None:
    text = (FIXTURES / "vllm-0.32.0-cpu.metrics.txt").read_text()
    cut = text.index("vllm:generation_tokens_total{") + len(
        'vllm:generation_tokens_total{engine="0",model_name="tiny"} 6'
    )
    with pytest.raises(ParseError, match="truncated") as e:
        parse_samples(text[:cut], ["vllm:generation_tokens_total"])
    assert e.value.line_no == text[:cut].count("\n") + 1


def test_a_page_cut_elsewhere_reads_what_is_complete() -> None:
    text = "a 1\nb 2\nc_partial_li"
    assert [s.value for s in parse_samples(text, ["a", "b"])] == [1.0, 2.0]


def test_no_wanted_names_reads_nothing() -> None:
    assert parse_samples("a 1\n", []) == []


def test_sample_names_lists_each_name_once_in_page_order() -> None:
    text = (FIXTURES / "trtllm-serve_dynamo-docs-metrics_examples-trtllm-log.txt").read_text()
    assert sample_names(text)[:3] == [
        "trtllm_request_success_total",
        "trtllm_request_success_created",
        "trtllm_e2e_request_latency_seconds_bucket",
    ]


def test_blanks_between_the_name_and_the_label_set() -> None:
    assert one('m {a="1", b="2"} 4\n', "m").labels == (("a", "1"), ("b", "2"))
