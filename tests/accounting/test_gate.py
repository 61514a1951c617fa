"""The validation gate: hostile readings are gaps, and the exported counters stay monotone and finite.

The property test feeds the accountant adversarial sequences (NaN, infinities, negatives, 1.7e308,
counters that jump or creep, resets) for energy and tokens, and checks every cumulative figure of
every snapshot against the previous one.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from exporter.accounting.book import Accountant
from exporter.accounting.figures import Snapshot
from exporter.accounting.gate import LOG_EVERY_S, MAX_GPU_POWER_W
from exporter.values import Gpu, GpuSample, ModelTokens, TokenSample
from tests.accounting.builders import GPU0, energy, place, scrape

HOSTILE = st.sampled_from(
    [math.nan, math.inf, -math.inf, -1.0, -1e6, -5e6, 1.7e308, 2.0**53, 1e15, 0.0, 1e-6]
)
"""Values a broken or malicious source sends, beside plausible ones."""


def _accountant() -> Accountant:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    return acc


def _cumulative(snap: Snapshot) -> list[float]:
    """Every figure that is exported as a counter."""
    values: list[float] = []
    for g in snap.gpus:
        values += [g.energy_j, g.attributed_j, g.unattributed_j]
    for s in snap.servers:
        values += [s.energy_j, s.idle_energy_j, s.idle_s, s.unmeasured_s]
        for m in s.models:
            values += [m.energy_j, m.input_tokens, m.output_tokens, m.requests or 0.0]
            for b in m.bands:
                values += [b.energy_j, b.input_tokens, b.output_tokens]
    return values


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(HOSTILE, st.floats(0, 500)),  # energy increment, or a hostile reading
            st.one_of(HOSTILE, st.floats(0, 5000)),  # token increment, or a hostile value
            st.booleans(),  # the energy value is absolute (hostile), not an increment
            st.booleans(),  # the token value is absolute (hostile), not an increment
        ),
        min_size=1,
        max_size=40,
    )
)
def test_counters_stay_monotone_and_finite_whatever_the_readings(
    steps: list[tuple[float, float, bool, bool]],
) -> None:
    acc = _accountant()
    e = tokens = 0.0
    before: list[float] | None = None
    for i, (de, dtok, e_absolute, tok_absolute) in enumerate(steps):
        t = 1000.0 + i
        e_read = de if e_absolute else e + de
        if math.isfinite(e_read) and e_read >= 0:
            e = e_read
        tok_read = dtok if tok_absolute else tokens + dtok
        if math.isfinite(tok_read) and tok_read >= 0:
            tokens = tok_read
        acc.add_energy([GpuSample(GPU0, t, e_read, 300.0)])
        acc.add_tokens([TokenSample("s", t - 0.5, ModelTokens("m", tok_read, tok_read, requests=tok_read))])
        acc.settle(t)
        figures = _cumulative(acc.snapshot(t))
        assert all(math.isfinite(v) and v >= 0 for v in figures), figures
        if before is not None and len(before) == len(figures):
            assert all(b <= a for b, a in zip(before, figures, strict=True)), (before, figures)
        before = figures
        for s in acc.snapshot(t).servers:
            for m in s.models:
                for w in m.windows:
                    for token_type in ("input", "output", "all"):
                        ratio = w.joules_per_token(token_type)
                        assert ratio is None or math.isfinite(ratio)


def test_nan_inf_and_negative_energy_readings_are_gaps_counted_by_reason() -> None:
    acc = _accountant()
    for t, joules in [(1.0, 100.0), (2.0, math.nan), (3.0, math.inf), (4.0, -5e6), (5.0, 400.0)]:
        energy(acc, t, joules)
    gpu = acc.snapshot(5.0).gpus[0]
    assert gpu.energy_j == 300.0
    assert dict(acc.snapshot(5.0).rejections.energy) == {"non_finite": 2, "negative": 1}


def test_an_energy_jump_beyond_the_power_bound_is_a_gap_not_energy() -> None:
    acc = _accountant()
    energy(acc, 1.0, 100.0)
    energy(acc, 2.0, 100.0 + MAX_GPU_POWER_W * 10)  # 10 s worth of the bound in 1 s
    energy(acc, 3.0, 100.0 + MAX_GPU_POWER_W * 10 + 300.0)
    snap = acc.snapshot(3.0)
    assert snap.gpus[0].energy_j == 300.0
    assert dict(snap.rejections.energy) == {"implausible_increase": 1}
    assert acc.tracks[GPU0.uuid].energy_between(1.5, 2.5, 5.0) is None  # the jump is a gap


def test_alternating_negative_token_values_do_not_drive_counters_down() -> None:
    acc = _accountant()
    for i in range(10):
        t = 10.0 + i
        energy(acc, t, 100.0 * i)
        scrape(acc, "s", t - 0.5, -1e6 if i % 2 else 1000.0 * i, -1e6 if i % 2 else 100.0 * i)
        acc.settle(t)
    snap = acc.snapshot(20.0)
    model = snap.servers[0].models[0]
    assert (model.input_tokens, model.output_tokens) == (8000.0, 800.0)
    assert snap.rejections.scrapes == (("s", "negative", 5),)


def test_a_huge_value_then_zero_neither_overflows_nor_counts() -> None:
    acc = _accountant()
    for i, value in enumerate([100.0, 1.7e308, 0.0, 50.0]):
        energy(acc, 10.5 + i, 100.0 * i)
        scrape(acc, "s", 10.0 + i, value, value)
        acc.settle(10.0 + i)
    model = acc.snapshot(14.0).servers[0].models[0]
    assert model.input_tokens == 50.0  # 100 -> (1.7e308 rejected) -> 0 is a reset -> 50
    assert dict((r, n) for _, r, n in acc.snapshot(14.0).rejections.scrapes) == {"too_large": 1}


def test_a_token_jump_beyond_the_rate_bound_is_not_counted() -> None:
    acc = _accountant()
    for i, value in enumerate([100.0, 1e15, 1e15 + 10]):
        energy(acc, 10.5 + i, 100.0 * i)
        scrape(acc, "s", 10.0 + i, value, value)
        acc.settle(10.0 + i)
    snap = acc.snapshot(13.0)
    assert snap.servers[0].models[0].output_tokens == 10.0
    assert dict((r, n) for _, r, n in snap.rejections.scrapes) == {"implausible_increase": 1}


def test_counters_creeping_by_fractions_of_a_token_publish_no_ratio() -> None:
    acc = _accountant()
    for i in range(30):
        t = 100.0 + i
        energy(acc, t, 300.0 * i)
        scrape(acc, "s", t - 0.5, 1e-6 * i, 1e-6 * i)
        acc.settle(t)
    window = acc.snapshot(130.0).servers[0].models[0].windows[0]
    assert window.energy_j > 0 and window.output_tokens > 0
    assert window.joules_per_token("output") is None


def test_a_gpu_with_an_absurdly_long_name_is_rejected() -> None:
    acc = _accountant()
    hostile = Gpu(0, "GPU-" + "a" * 10_000, "NVIDIA H100 80GB HBM3")
    acc.add_energy([GpuSample(hostile, 1.0, 100.0, 300.0), GpuSample(hostile, 2.0, 200.0, 300.0)])
    snap = acc.snapshot(2.0)
    assert snap.gpus == ()
    assert dict(snap.rejections.energy) == {"label_too_long": 2}


def test_a_flapping_source_is_logged_at_most_once_a_minute_and_its_last_state_told() -> None:
    acc = _accountant()
    with capture_logs() as logs:
        for i in range(300):  # a reading a second, every other one NaN, for five minutes
            energy(acc, float(i), math.nan if i % 2 else 10.0 * i)
        for i in range(300, 400):  # then valid for good
            energy(acc, float(i), 10.0 * i)
    events = [(e["event"], e.get("reason")) for e in logs]
    assert len(events) <= 400 / LOG_EVERY_S + 1
    assert events[0] == ("reading rejected", "non_finite")
    assert events[-1] == ("readings valid again", None)
    assert dict(acc.snapshot(400.0).rejections.energy) == {"non_finite": 150}
