"""The targeted parser reads every sample it extracts exactly as prometheus_client's full parser does."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter.pages.parser import parse_samples

Key = tuple[str, tuple[tuple[str, str], ...]]

_BASE_NAME = st.builds(
    lambda prefix, stem, suffix: prefix + stem + suffix,
    st.sampled_from(["", "vllm:", "sglang:", "tgi_", "nv_", "ray_vllm_", "a:b:"]),
    st.text(alphabet="abcdxyz", min_size=1, max_size=6),
    st.sampled_from(["", "_tokens", "_x1", ":y"]),
)
_LABEL_NAME = st.sampled_from(["model_name", "engine", "a", "b_c", "finished_reason", "Z9", "_x"])
_LABEL_VALUE = st.text(alphabet=st.sampled_from('ab z09_-.:/{}=,"\\\n#éλ'), max_size=12)
_NUMBER = st.one_of(
    st.integers(min_value=0, max_value=10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1e12).map(lambda v: f"{v:g}"),  # Go and C++ style: 1.23457e+06
    st.sampled_from(["NaN", "+Inf", "-Inf", "0", "-0.0", "1e-3"]),
).map(lambda s: {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}.get(s, s))
_TIMESTAMP = st.one_of(st.none(), st.integers(min_value=0, max_value=2 * 10**12).map(str))


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    label_sets: list[dict[str, str]]
    values: list[str]
    timestamps: list[str | None]
    help_text: str | None
    blank_after: bool
    typed_with_total: bool
    spaced: bool
    """Blanks between the name and `{`, and after each comma of the label set."""


@st.composite
def families(draw: st.DrawFn) -> Family:
    name = draw(_BASE_NAME)
    kind = draw(st.sampled_from(["counter", "gauge", "untyped", "histogram", "summary", "bare_counter"]))
    label_sets = draw(
        st.lists(
            st.dictionaries(_LABEL_NAME, _LABEL_VALUE, max_size=3),
            min_size=1,
            max_size=3,
            unique_by=lambda d: tuple(sorted(d.items())),
        )
    )
    n = len(label_sets)
    return Family(
        name=name,
        kind=kind,
        label_sets=label_sets,
        values=draw(st.lists(_NUMBER, min_size=n * 4, max_size=n * 4)),
        timestamps=draw(st.lists(_TIMESTAMP, min_size=n * 4, max_size=n * 4)),
        help_text=draw(st.one_of(st.none(), st.text(alphabet=st.sampled_from('ab \\"\n{}#'), max_size=10))),
        blank_after=draw(st.booleans()),
        typed_with_total=draw(st.booleans()),
        spaced=draw(st.booleans()),
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict[str, str], value: str, timestamp: str | None, spaced: bool) -> str:
    rendered = (", " if spaced else ",").join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    label_set = ((" " if spaced else "") + f"{{{rendered}}}") if labels else ""
    return name + label_set + f" {value}" + (f" {timestamp}" if timestamp else "") + "\n"


def _samples(family: Family) -> list[tuple[str, dict[str, str]]]:
    """The sample names and labels a family of this kind writes, in the order servers write them."""
    out: list[tuple[str, dict[str, str]]] = []
    for labels in family.label_sets:
        name = family.name
        if family.kind == "counter":
            out += [(f"{name}_total", labels), (f"{name}_created", labels)]
        elif family.kind in ("gauge", "untyped", "bare_counter"):
            out.append((name, labels))
        elif family.kind == "histogram":
            out += [(f"{name}_bucket", {**labels, "le": "1.0"}), (f"{name}_bucket", {**labels, "le": "+Inf"})]
            out += [(f"{name}_sum", labels), (f"{name}_count", labels)]
        else:
            out += [(name, {**labels, "quantile": "0.5"}), (f"{name}_sum", labels), (f"{name}_count", labels)]
    return out


def render(page: list[Family]) -> str:
    text = ""
    for family in page:
        kind = "counter" if family.kind == "bare_counter" else family.kind
        typed = family.name + ("_total" if family.kind == "counter" and family.typed_with_total else "")
        if family.help_text is not None:
            help_text = family.help_text.replace("\\", "\\\\").replace("\n", "\\n")
            text += f"# HELP {typed} {help_text}\n"
        if kind != "untyped":
            text += f"# TYPE {typed} {kind}\n"
        for i, (name, labels) in enumerate(_samples(family)):
            text += _line(name, labels, family.values[i], family.timestamps[i], family.spaced)
        if family.blank_after:
            text += "\n"
    return text


def pages() -> st.SearchStrategy[list[Family]]:
    return st.lists(families(), min_size=1, max_size=5, unique_by=lambda f: f.name).filter(
        _distinct_sample_names
    )


def _distinct_sample_names(page: list[Family]) -> bool:
    owners: dict[str, str] = {}
    return all(
        owners.setdefault(name, f.name) == f.name for f in page for name, _ in _samples(f)
    ) and not any(
        a.name != b.name and (a.name.startswith(b.name + "_") or b.name.startswith(a.name + "_"))
        for a in page
        for b in page
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(page=pages(), data=st.data())
def test_agrees_with_prometheus_client_on_every_sample_it_extracts(
    page: list[Family], data: st.DataObject
) -> None:
    text = render(page)
    page_names = {name for f in page for name, _ in _samples(f)}
    wanted = data.draw(st.sets(st.sampled_from(sorted(page_names)), min_size=1))

    reference: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # prometheus_client renames a counter sample written without _total (TGI, Triton).
            name = s.name if s.name in page_names else s.name.removesuffix("_total")
            if name in wanted:
                reference[(name, tuple(sorted(s.labels.items())))] = s.value

    ours = {(s.name, s.labels): s.value for s in parse_samples(text, wanted)}
    assert ours.keys() == reference.keys()
    for key, value in ours.items():
        assert _same(value, reference[key]), key
