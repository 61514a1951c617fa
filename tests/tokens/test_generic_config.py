"""`kind: generic` and its `generic:` mapping in `servers[]`, and the list of kinds a config accepts."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from exporter.config import GENERIC_KIND, ConfigError
from exporter.config_file import validate_config
from exporter.discovery.pods import PodRejected, target_of
from exporter.tokens.profiles import PROFILES, ServerProfile, server_profile
from exporter.tokens.scraper import read_page
from exporter.values import ModelTokens
from tests.fakes.kube_api import PODS, FakeKubeApi, pod


def server(**fields: Any) -> dict[str, Any]:
    return {"servers": [{"name": "custom", "url": "http://127.0.0.1:8000/metrics", **fields}]}


def problems(**fields: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate_config(server(**fields))
    return e.value.problems


def test_an_unknown_kind_is_refused_with_every_kind_allowed() -> None:
    assert problems(kind="mystery") == [
        "servers[0].kind: 'mystery' is not allowed; input should be 'auto', 'vllm', 'sglang', 'tgi', "
        "'llamacpp', 'triton', 'trtllm', 'nim', 'lmdeploy', 'ray', 'aphrodite', 'dynamo' or 'generic'"
    ]


@pytest.mark.parametrize("kind", ["auto", *PROFILES, "mystery"])
def test_a_pod_annotation_names_a_kind_the_config_would_take(kind: str) -> None:
    annotations = {"tokenwatt.io/scrape": "true", "tokenwatt.io/port": "8000", "tokenwatt.io/kind": kind}
    found = FakeKubeApi().put(PODS, pod("llm", "server-0", "node-1", annotations=annotations))
    try:
        target = target_of(Pod.from_dict(found), True, [])
    except PodRejected as e:
        assert (e.reason, kind) == ("unknown_kind", "mystery")
        assert problems(kind=kind)[0].startswith("servers[0].kind: 'mystery' is not allowed")
    else:
        assert target is not None and target.kind == kind
        assert validate_config(server(kind=kind)).servers[0].kind == kind


def test_the_tokens_layer_resolves_each_kind_to_its_profile() -> None:
    for kind, profile in PROFILES.items():
        assert server_profile(validate_config(server(kind=kind)).servers[0]) is profile
    assert server_profile(validate_config(server(kind="auto")).servers[0]) is None  # detected from the page
    assert server_profile(validate_config(server()).servers[0]) is None


def test_a_generic_mapping_becomes_a_profile_that_reads_the_page() -> None:
    config = validate_config(
        server(
            kind="generic",
            generic={
                "model_label": "model",
                "input_tokens": [
                    {"name": "llm_tokens_total", "where": {"type": "prompt"}},
                    "llm_cached_total",
                ],
                "output_tokens": [{"name": "llm_tokens_total", "where": {"type": "completion"}}],
                "requests": ["llm_requests_total"],
                "running": ["llm_running"],
                "replica_labels": ["rank"],
            },
        )
    )
    profile = server_profile(config.servers[0])
    assert isinstance(profile, ServerProfile) and profile.kind == GENERIC_KIND
    page = (
        'llm_tokens_total{model="m",rank="0",type="prompt"} 10\n'
        'llm_tokens_total{model="m",rank="1",type="prompt"} 10\n'
        'llm_tokens_total{model="m",rank="0",type="completion"} 40\n'
        'llm_cached_total{model="m"} 5\n'
        'llm_requests_total{model="m",status="ok"} 2\n'
        'llm_requests_total{model="m",status="error"} 1\n'
        'llm_running{model="m"} 1\n'
    )
    assert read_page(page, profile).models == (ModelTokens("m", 15, 40, 3, 1),)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"kind": "generic"},
            "servers[0]: kind: generic needs a generic: mapping that names at least input_tokens and "
            "output_tokens",
        ),
        (
            {"kind": "vllm", "generic": {"input_tokens": ["a"], "output_tokens": ["b"]}},
            "servers[0]: generic: is only read with kind: generic, but kind is 'vllm'",
        ),
        (
            {"kind": "generic", "generic": {"input_tokens": ["my-tokens"], "output_tokens": ["b"]}},
            "servers[0].generic.input_tokens[0].name: 'my-tokens' is not a sample name",
        ),
        (
            {"kind": "generic", "generic": {"input_tokens": ["a"]}},
            "servers[0].generic.output_tokens: required, but missing",
        ),
        (
            {"kind": "generic", "generic": {"input_tokens": ["a"], "output_tokens": []}},
            "servers[0].generic.output_tokens: List should have at least 1 item",
        ),
        (
            {
                "kind": "generic",
                "generic": {"input_tokens": [{"name": "a", "where": {"1x": "y"}}], "output_tokens": ["b"]},
            },
            "servers[0].generic.input_tokens[0].where.1x: '1x' is not a label name",
        ),
        (
            {
                "kind": "generic",
                "generic": {"input_tokens": [{"name": "a", "wher": {}}], "output_tokens": ["b"]},
            },
            "servers[0].generic.input_tokens[0].wher: unknown key",
        ),
        ({"kind": "ollama"}, "servers[0].kind: 'ollama' is not allowed; input should be 'auto', 'vllm'"),
    ],
)
def test_a_bad_generic_config_names_the_field(fields: dict[str, Any], problem: str) -> None:
    found = problems(**fields)
    assert len(found) == 1
    assert found[0].startswith(problem)
