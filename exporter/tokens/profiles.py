"""Server profiles: declarative descriptions of where each inference server keeps its token counts.

A profile names, for each quantity we need, the sample names to read, the label values to keep,
the label that carries the model, and when the counters move. Every other label is summed over
(vLLM's `engine`, SGLang's `is_streaming`, Ray's replica tags, a `finished_reason`), except the
profile's replica labels, whose values are copies of one count (SGLang's per-rank series) and are
never added up. Samples are grouped by the model label. Adding a server is adding one profile here
and one captured page to the tests, not a new code path. `docs/servers.md` explains each profile.

Every kind means the same: `input_tokens` counts all prompt tokens, prefix-cache hits included
(where a server counts only the computed ones and reports cached ones apart, the profile adds
them); `output_tokens` the generated ones; `requests` the finished requests (None where the
server has no such counter); `running` the requests in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from exporter.config import AUTO_KIND, GENERIC_KIND, GenericConfig, GenericSeriesConfig, ServerConfig
from exporter.pages.parser import Labels, Sample
from exporter.values import ModelTokens


class ProfileError(Exception):
    """The page cannot be mapped to token counts (unknown kind, ambiguous kind, bad values)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Timing(StrEnum):
    """When a counter moves, which decides how well short windows attribute energy to tokens."""

    PER_STEP = "per_step"
    """While requests run: every engine step or log interval."""
    ON_ARRIVAL = "on_arrival"
    """Once per request, when the server admits it."""
    ON_COMPLETION = "on_completion"
    """Once per request, when it finishes: a long generation lands in one lump."""
    UNVERIFIED = "unverified"
    """Not established from the server's source or docs."""


@dataclass(frozen=True, slots=True)
class Series:
    """Samples named `name` whose labels include every pair in `where`."""

    name: str
    where: Labels = ()

    def matches(self, sample: Sample) -> bool:
        return sample.name == self.name and all(pair in sample.labels for pair in self.where)


def series(name: str, **where: str) -> Series:
    return Series(name, tuple(sorted(where.items())))


@dataclass(frozen=True, slots=True)
class Reading:
    """One way to read a quantity: the sum of its terms. It applies when every term's name is on the page."""

    terms: tuple[Series, ...]
    timing: Timing | None = None
    """When the sum moves; None for gauges."""

    @classmethod
    def of(cls, *terms: str | Series, timing: Timing | None = None) -> Reading:
        return cls(tuple(t if isinstance(t, Series) else Series(t) for t in terms), timing)


Quantity = tuple[Reading, ...]
"""Ways to read one quantity, most preferred first; the first that applies is used."""


@dataclass(frozen=True, slots=True)
class PageCounts:
    """What one page says, per model, and when its token counters move."""

    models: tuple[ModelTokens, ...]
    input_timing: Timing | None
    output_timing: Timing | None
    """None where the page has no token series yet (a server that has served nothing)."""


@dataclass(frozen=True, slots=True)
class ServerProfile:
    kind: str
    """The name used in `servers[].kind`."""
    title: str
    """The server as people call it, for messages."""
    model_label: str | None
    """The label that names the model; None for servers that do not label one."""
    input_tokens: Quantity
    """All prompt tokens, prefix-cache hits included."""
    output_tokens: Quantity
    requests: Quantity = ()
    """Finished requests, whatever the reason; empty where the server has no such counter."""
    running: Quantity = ()
    cached_input_tokens: Quantity = ()
    replica_labels: tuple[str, ...] = ()
    """Labels whose values are copies of one count (per-rank series): the largest copy is kept."""
    presence: tuple[str, ...] = ()
    """Series a running server of this kind always shows, before its token series exist: such a
    page reads as no models yet instead of an error."""
    prefix: str = ""
    """How this server's metric names start, to say what a page that did not match looks like."""
    hint: str = ""
    """What to check when the server's families are on a page but its token counters are not."""

    def sample_names(self) -> frozenset[str]:
        return self._names(self._quantities()) | frozenset(self.presence)

    def detection_names(self) -> frozenset[str]:
        """Names whose presence on a page identifies this kind: its output-token counters."""
        return self._names([self.output_tokens])

    def extract(self, samples: Sequence[Sample]) -> PageCounts:
        """Token counts per model, from the samples of one page."""
        present = {s.name for s in samples}
        inputs = self._read(self.input_tokens, samples, present)
        outputs = self._read(self.output_tokens, samples, present)
        if inputs is None or outputs is None:
            if present & set(self.presence):
                return PageCounts((), None, None)
            missing, quantity = (
                ("input", self.input_tokens) if inputs is None else ("output", self.output_tokens)
            )
            raise ProfileError(
                "missing_family",
                f"{self.kind}: no {missing} token counter on the page (looked for "
                + " or ".join(_describe(r) for r in quantity)
                + ")"
                + (f"; {self.hint}" if self.hint else ""),
            )
        (input_timing, by_input), (output_timing, by_output) = inputs, outputs
        requests = self._read(self.requests, samples, present)
        running = self._read(self.running, samples, present)
        cached = self._read(self.cached_input_tokens, samples, present)
        models = sorted(set(by_input) | set(by_output), key=lambda m: (m is not None, m or ""))
        return PageCounts(
            tuple(
                ModelTokens(
                    model=m,
                    input_tokens=by_input.get(m, 0.0),
                    output_tokens=by_output.get(m, 0.0),
                    requests=None if requests is None else requests[1].get(m, 0.0),
                    running=None if running is None else running[1].get(m, 0.0),
                    cached_input_tokens=None if cached is None else cached[1].get(m, 0.0),
                )
                for m in models
            ),
            input_timing,
            output_timing,
        )

    def _quantities(self) -> list[Quantity]:
        return [self.input_tokens, self.output_tokens, self.requests, self.running, self.cached_input_tokens]

    @staticmethod
    def _names(quantities: Iterable[Quantity]) -> frozenset[str]:
        return frozenset(term.name for q in quantities for reading in q for term in reading.terms)

    def _read(
        self, quantity: Quantity, samples: Sequence[Sample], present: set[str]
    ) -> tuple[Timing | None, dict[str | None, float]] | None:
        for reading in quantity:
            if all(term.name in present for term in reading.terms):
                return reading.timing, self._sum(reading, samples)
        return None

    def _sum(self, reading: Reading, samples: Sequence[Sample]) -> dict[str | None, float]:
        copies: dict[tuple[int, Labels], float] = {}
        for sample in samples:
            for index, term in enumerate(reading.terms):
                if not term.matches(sample):
                    continue
                if not math.isfinite(sample.value):
                    raise ProfileError(
                        "non_finite", f"{self.kind}: {sample.name} has the non-finite value {sample.value}"
                    )
                key = (index, tuple(p for p in sample.labels if p[0] not in self.replica_labels))
                copies[key] = max(copies.get(key, sample.value), sample.value)
        by_model: dict[str | None, float] = {}
        for (_, labels), value in copies.items():
            model = dict(labels).get(self.model_label) if self.model_label else None
            by_model[model] = by_model.get(model, 0.0) + value
        return by_model


def _describe(reading: Reading) -> str:
    return " + ".join(
        t.name + ("{" + ",".join(f'{k}="{v}"' for k, v in t.where) + "}" if t.where else "")
        for t in reading.terms
    )


STEP, ARRIVAL, COMPLETION = Timing.PER_STEP, Timing.ON_ARRIVAL, Timing.ON_COMPLETION


def _vllm_family(kind: str, title: str, prefix: str, hint: str, *, cached: str | None) -> ServerProfile:
    """vLLM and the servers that reuse its metric set under another prefix."""
    return ServerProfile(
        kind=kind,
        title=title,
        model_label="model_name",
        input_tokens=(Reading.of(f"{prefix}prompt_tokens_total", timing=STEP),),
        output_tokens=(Reading.of(f"{prefix}generation_tokens_total", timing=STEP),),
        requests=(Reading.of(f"{prefix}request_success_total", timing=COMPLETION),),
        running=(Reading.of(f"{prefix}num_requests_running"),),
        cached_input_tokens=(Reading.of(cached),) if cached else (),
        presence=(f"{prefix}num_requests_running",),
        prefix=prefix,
        hint=hint,
    )


VLLM = _vllm_family(
    "vllm",
    "vLLM",
    "vllm:",
    "vLLM started with --disable-log-stats exports no vllm: metrics",
    cached="vllm:prompt_tokens_cached_total",
)

APHRODITE = _vllm_family(
    "aphrodite",
    "Aphrodite Engine",
    "aphrodite:",
    "Aphrodite exports its metrics on /metrics of its API port (default 2242)",
    cached=None,
)

LMDEPLOY = _vllm_family(
    "lmdeploy",
    "LMDeploy",
    "lmdeploy:",
    "LMDeploy before 0.11 exports metrics only with --enable-metrics",
    cached="lmdeploy:cached_tokens_total",
)

RAY = ServerProfile(
    kind="ray",
    title="Ray Serve LLM (vLLM engine)",
    model_label="model_name",
    # Ray 2.60 turns `vllm:` into `ray_vllm_`; Ray 2.3x kept the colon.
    input_tokens=(
        Reading.of("ray_vllm_prompt_tokens_total", timing=STEP),
        Reading.of("ray_vllm:prompt_tokens_total", timing=STEP),
    ),
    output_tokens=(
        Reading.of("ray_vllm_generation_tokens_total", timing=STEP),
        Reading.of("ray_vllm:generation_tokens_total", timing=STEP),
    ),
    requests=(
        Reading.of("ray_vllm_request_success_total", timing=COMPLETION),
        Reading.of("ray_vllm:request_success_total", timing=COMPLETION),
    ),
    running=(Reading.of("ray_vllm_num_requests_running"), Reading.of("ray_vllm:num_requests_running")),
    cached_input_tokens=(Reading.of("ray_vllm_prompt_tokens_cached_total"),),
    presence=("ray_vllm_num_requests_running", "ray_vllm:num_requests_running"),
    prefix="ray_vllm",
    hint="Ray exports engine metrics only with log_engine_metrics enabled, and creates a counter "
    "at its first non-zero increment",
)

SGLANG = ServerProfile(
    kind="sglang",
    title="SGLang",
    model_label="model_name",
    # The scheduler's realtime counter moves every log interval; the tokenizer's counters move
    # only when a request finishes, so they are the fallback for releases before 0.5.8.
    input_tokens=(
        Reading.of(
            series("sglang:realtime_tokens_total", mode="prefill_compute"),
            series("sglang:realtime_tokens_total", mode="prefill_cache"),
            timing=STEP,
        ),
        Reading.of("sglang:prompt_tokens_total", timing=COMPLETION),
    ),
    output_tokens=(
        Reading.of(series("sglang:realtime_tokens_total", mode="decode"), timing=STEP),
        Reading.of("sglang:generation_tokens_total", timing=COMPLETION),
    ),
    requests=(Reading.of("sglang:num_requests_total", timing=COMPLETION),),
    running=(Reading.of("sglang:num_running_reqs"),),
    cached_input_tokens=(
        Reading.of(series("sglang:realtime_tokens_total", mode="prefill_cache")),
        Reading.of("sglang:cached_tokens_total"),
    ),
    # With --enable-metrics-for-all-schedulers every tensor- and pipeline-parallel rank reports
    # the same tokens; data-parallel ranks (dp_rank) serve different requests and are summed.
    replica_labels=("tp_rank", "pp_rank", "moe_ep_rank"),
    presence=("sglang:num_running_reqs",),
    prefix="sglang:",
    hint="SGLang serves /metrics only when started with --enable-metrics",
)

TGI = ServerProfile(
    kind="tgi",
    title="Hugging Face TGI",
    model_label=None,
    # Token counts exist only as histograms; their _sum series are the token totals.
    input_tokens=(Reading.of("tgi_request_input_length_sum", timing=ARRIVAL),),
    output_tokens=(Reading.of("tgi_request_generated_tokens_sum", timing=COMPLETION),),
    requests=(Reading.of("tgi_request_success", timing=COMPLETION),),
    running=(Reading.of("tgi_batch_current_size"),),
    presence=("tgi_queue_size",),
    prefix="tgi_",
)

LLAMACPP = ServerProfile(
    kind="llamacpp",
    title="llama.cpp llama-server",
    model_label=None,
    # prompt_tokens_total excludes cached tokens; recent builds count those apart.
    input_tokens=(
        Reading.of("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total", timing=STEP),
        Reading.of("llamacpp:prompt_tokens_total", timing=STEP),
    ),
    output_tokens=(Reading.of("llamacpp:tokens_predicted_total", timing=COMPLETION),),
    running=(Reading.of("llamacpp:requests_processing"),),
    cached_input_tokens=(Reading.of("llamacpp:prompt_tokens_cached_total"),),
    prefix="llamacpp:",
    hint="llama-server serves /metrics only when started with --metrics; in router mode add ?model=NAME",
)

TRITON = ServerProfile(
    kind="triton",
    title="Triton Inference Server with the TensorRT-LLM backend",
    model_label="model",
    input_tokens=(Reading.of("nv_llm_input_token_len_sum", timing=COMPLETION),),
    output_tokens=(Reading.of("nv_llm_output_token_len_sum", timing=COMPLETION),),
    # The histogram's count is the requests of the very model that carries the tokens; the
    # nv_inference_request_success of an ensemble's tensorrt_llm step may stay 0.
    requests=(Reading.of("nv_llm_output_token_len_count", timing=COMPLETION),),
    running=(Reading.of(series("nv_trt_llm_request_metrics", request_type="active")),),
    prefix="nv_",
    hint="Triton reports tokens only through the TensorRT-LLM backend's nv_llm_input_token_len and "
    "nv_llm_output_token_len histograms, which older releases (23.11) and other backends lack",
)

TRTLLM = ServerProfile(
    kind="trtllm",
    title="TensorRT-LLM trtllm-serve",
    model_label="model_name",
    input_tokens=(Reading.of("trtllm_prompt_tokens_total", timing=COMPLETION),),
    output_tokens=(Reading.of("trtllm_generation_tokens_total", timing=COMPLETION),),
    requests=(
        Reading.of("trtllm_request_success_total", timing=COMPLETION),
        Reading.of("trtllm_num_requests_completed_total", timing=COMPLETION),
    ),
    running=(Reading.of("trtllm_num_requests_running"),),
    cached_input_tokens=(Reading.of("trtllm_prompt_cached_tokens_total"),),
    presence=("trtllm_num_requests_running",),
    prefix="trtllm_",
    hint="trtllm-serve has token counters only in recent releases, and fills them only with "
    "return_perf_metrics: true; its Prometheus page is /prometheus/metrics",
)

NIM = ServerProfile(
    kind="nim",
    title="NVIDIA NIM for LLMs",
    model_label="model_name",
    input_tokens=(Reading.of("prompt_tokens_total", timing=STEP),),
    output_tokens=(Reading.of("generation_tokens_total", timing=STEP),),
    requests=(
        Reading.of("request_success_total", "request_failure_total", timing=COMPLETION),
        Reading.of("request_finish_total", timing=COMPLETION),
        Reading.of("request_success_total", timing=COMPLETION),
    ),
    running=(Reading.of("num_requests_running"),),
    hint="NIM serves its metrics on /v1/metrics",
)

DYNAMO = ServerProfile(
    kind="dynamo",
    title="NVIDIA Dynamo frontend",
    model_label="model",
    input_tokens=(Reading.of("dynamo_frontend_input_sequence_tokens_sum", timing=Timing.UNVERIFIED),),
    output_tokens=(
        Reading.of("dynamo_frontend_output_tokens_total", timing=STEP),
        Reading.of("dynamo_frontend_output_sequence_tokens_sum", timing=COMPLETION),
    ),
    requests=(Reading.of("dynamo_frontend_requests_total", timing=COMPLETION),),
    running=(Reading.of("dynamo_frontend_inflight_requests"),),
    cached_input_tokens=(Reading.of("dynamo_frontend_cached_tokens_sum"),),
    prefix="dynamo_frontend_",
)

PROFILES: dict[str, ServerProfile] = {
    p.kind: p for p in (VLLM, SGLANG, TGI, LLAMACPP, TRITON, TRTLLM, NIM, LMDEPLOY, RAY, APHRODITE, DYNAMO)
}
"""Every built-in server kind, by the name used in `servers[].kind`."""
KINDS = (AUTO_KIND, *PROFILES, GENERIC_KIND)
"""Every value `servers[].kind` allows: detected from the page, a built-in profile, or the config's
`generic:` families. The `tokenwatt.io/kind` annotation allows all but `generic`."""


def generic_profile(
    *,
    model_label: str | None,
    input_tokens: Sequence[Series],
    output_tokens: Sequence[Series],
    requests: Sequence[Series] = (),
    running: Sequence[Series] = (),
    cached_input_tokens: Sequence[Series] = (),
    replica_labels: Sequence[str] = (),
) -> ServerProfile:
    """A profile for a server we do not know, from the families a configuration names.

    Each quantity is the sum of its series; when they move is not known.
    """

    def quantity(terms: Sequence[Series], timing: Timing | None) -> Quantity:
        return (Reading(tuple(terms), timing),) if terms else ()

    unverified = Timing.UNVERIFIED
    return ServerProfile(
        kind=GENERIC_KIND,
        title="generic server",
        model_label=model_label,
        input_tokens=quantity(input_tokens, unverified),
        output_tokens=quantity(output_tokens, unverified),
        requests=quantity(requests, unverified),
        running=quantity(running, None),
        cached_input_tokens=quantity(cached_input_tokens, None),
        replica_labels=tuple(replica_labels),
    )


def server_profile(server: ServerConfig) -> ServerProfile | None:
    """The profile a server's page is read with; None where the kind is detected from the page."""
    if server.generic is not None:
        return configured_profile(server.generic)
    if server.kind == AUTO_KIND:
        return None
    return PROFILES[server.kind]


def configured_profile(cfg: GenericConfig) -> ServerProfile:
    """The profile of `kind: generic`: the families its `generic:` mapping names."""

    def terms(entries: Sequence[GenericSeriesConfig]) -> list[Series]:
        return [Series(e.name, tuple(sorted(e.where.items()))) for e in entries]

    return generic_profile(
        model_label=cfg.model_label,
        input_tokens=terms(cfg.input_tokens),
        output_tokens=terms(cfg.output_tokens),
        requests=terms(cfg.requests),
        running=terms(cfg.running),
        cached_input_tokens=terms(cfg.cached_input_tokens),
        replica_labels=cfg.replica_labels,
    )


def detect(samples: Sequence[Sample]) -> ServerProfile:
    """The one profile whose output-token counters are on the page, else the one whose
    always-present series are (a server that has served nothing yet)."""
    present = {s.name for s in samples}
    for clue in (ServerProfile.detection_names, lambda p: frozenset(p.presence)):
        matches = [p for p in PROFILES.values() if clue(p) & present]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ProfileError(
                "ambiguous_kind",
                "the page matches several server kinds: "
                + ", ".join(f"{p.kind} ({', '.join(sorted(clue(p) & present))})" for p in matches)
                + "; set servers[].kind explicitly",
            )
    raise ProfileError(
        "unknown_kind",
        "no known inference server's token counters on the page (kinds tried: " + ", ".join(PROFILES) + ")",
    )


def near_misses(page_names: Iterable[str]) -> list[str]:
    """For an unrecognised page: the kinds whose metric prefix it carries, with what to check."""
    names = list(page_names)
    return [
        f"it has {p.kind} metrics ({p.prefix}…) but not {p.title}'s token counters"
        + (f"; {p.hint}" if p.hint else "")
        for p in PROFILES.values()
        if p.prefix and any(n.startswith(p.prefix) for n in names)
    ]


def all_sample_names() -> frozenset[str]:
    return frozenset().union(*(p.sample_names() for p in PROFILES.values()))
