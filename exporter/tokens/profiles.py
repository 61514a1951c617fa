"""Server profiles: declarative descriptions of where each inference server keeps its token counts.

A profile names, for each quantity we need, the sample names to read, the label values to keep,
and the label that carries the model. Every other label is summed over (vLLM's `engine`, a
`finished_reason`), and samples are grouped by the model label. Adding a server is adding one
profile here and one captured page to the tests, not a new code path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.model import ModelTokens
from exporter.tokens.parser import Labels, Sample


class ProfileError(Exception):
    """The page cannot be mapped to token counts (unknown kind, ambiguous kind, bad values)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Series:
    """Samples named `name` whose labels include every pair in `where`."""

    name: str
    where: Labels = ()

    def matches(self, sample: Sample) -> bool:
        return sample.name == self.name and all(pair in sample.labels for pair in self.where)


@dataclass(frozen=True, slots=True)
class Reading:
    """One way to read a quantity: the sum of its terms. It applies when every term's name is on the page."""

    terms: tuple[Series, ...]

    @classmethod
    def of(cls, *names: str, where: Labels = ()) -> Reading:
        return cls(tuple(Series(n, where) for n in names))


Quantity = tuple[Reading, ...]
"""Ways to read one quantity, most preferred first; the first that applies is used."""


@dataclass(frozen=True, slots=True)
class ServerProfile:
    kind: str
    model_label: str | None
    input_tokens: Quantity
    """All prompt tokens, prefix-cache hits included."""
    output_tokens: Quantity
    requests: Quantity = ()
    """Finished requests; empty where the server has no such counter."""
    running: Quantity = ()
    cached_input_tokens: Quantity = ()

    def sample_names(self) -> frozenset[str]:
        return frozenset(
            term.name for quantity in self._quantities() for reading in quantity for term in reading.terms
        )

    def detection_names(self) -> frozenset[str]:
        """Names whose presence on a page identifies this kind: its output-token counters."""
        return frozenset(term.name for reading in self.output_tokens for term in reading.terms)

    def extract(self, samples: Sequence[Sample]) -> list[ModelTokens]:
        """Token counts per model, from the samples of one page."""
        present = {s.name for s in samples}
        inputs = self._read(self.input_tokens, samples, present)
        outputs = self._read(self.output_tokens, samples, present)
        if inputs is None or outputs is None:
            missing = "input" if inputs is None else "output"
            raise ProfileError("missing_family", f"{self.kind}: no {missing} token counter on the page")
        requests = self._read(self.requests, samples, present)
        running = self._read(self.running, samples, present)
        cached = self._read(self.cached_input_tokens, samples, present)
        models = sorted(set(inputs) | set(outputs), key=lambda m: (m is not None, m or ""))
        return [
            ModelTokens(
                model=m,
                input_tokens=inputs.get(m, 0.0),
                output_tokens=outputs.get(m, 0.0),
                requests=None if requests is None else requests.get(m, 0.0),
                running=None if running is None else running.get(m, 0.0),
                cached_input_tokens=None if cached is None else cached.get(m, 0.0),
            )
            for m in models
        ]

    def _quantities(self) -> Iterable[Quantity]:
        return (self.input_tokens, self.output_tokens, self.requests, self.running, self.cached_input_tokens)

    def _read(
        self, quantity: Quantity, samples: Sequence[Sample], present: set[str]
    ) -> dict[str | None, float] | None:
        for reading in quantity:
            if all(term.name in present for term in reading.terms):
                return self._sum(reading, samples)
        return None

    def _sum(self, reading: Reading, samples: Sequence[Sample]) -> dict[str | None, float]:
        by_model: dict[str | None, float] = {}
        for sample in samples:
            if not any(term.matches(sample) for term in reading.terms):
                continue
            if not math.isfinite(sample.value):
                raise ProfileError(
                    "non_finite", f"{self.kind}: {sample.name} has the non-finite value {sample.value}"
                )
            model = dict(sample.labels).get(self.model_label) if self.model_label else None
            by_model[model] = by_model.get(model, 0.0) + sample.value
        return by_model


VLLM = ServerProfile(
    kind="vllm",
    model_label="model_name",
    input_tokens=(Reading.of("vllm:prompt_tokens_total"),),
    output_tokens=(Reading.of("vllm:generation_tokens_total"),),
    requests=(Reading.of("vllm:request_success_total"),),
    running=(Reading.of("vllm:num_requests_running"),),
    cached_input_tokens=(Reading.of("vllm:prompt_tokens_cached_total"),),
)

PROFILES: dict[str, ServerProfile] = {p.kind: p for p in (VLLM,)}
"""Every known server kind, by the name used in `servers[].kind`."""


def detect(samples: Sequence[Sample]) -> ServerProfile:
    """The one profile whose output-token counters are on the page."""
    present = {s.name for s in samples}
    matches = [p for p in PROFILES.values() if p.detection_names() & present]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ProfileError(
            "unknown_kind",
            "no known inference server's token counters on the page (looked for "
            + ", ".join(sorted(n for p in PROFILES.values() for n in p.detection_names()))
            + ")",
        )
    raise ProfileError(
        "ambiguous_kind",
        "the page matches several server kinds: "
        + ", ".join(p.kind for p in matches)
        + "; set servers[].kind explicitly",
    )


def all_sample_names() -> frozenset[str]:
    return frozenset().union(*(p.sample_names() for p in PROFILES.values()))
