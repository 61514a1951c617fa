"""The prefill/decode/static fit recovers known coefficients and refuses ill-conditioned data."""

from __future__ import annotations

import random

import pytest

from exporter.accounting.book import Accountant
from exporter.accounting.ledger import Interval, ModelInterval
from exporter.accounting.split import MIN_SAMPLES, fit_energy_split
from tests.accounting.builders import GPU0, energy, place, scrape

PREFILL, DECODE, STATIC = 0.05, 0.6, 180.0


def _interval(t: float, dt: float, computed_in: float, out: float, cached: float = 0.0) -> Interval:
    joules = PREFILL * computed_in + DECODE * out + STATIC * dt
    part = ModelInterval("m", joules, computed_in + cached, out, 0.0, cached, 3.0)
    return Interval(t, t + dt, joules, False, (part,))


def test_exact_data_gives_the_true_coefficients() -> None:
    rng = random.Random(7)
    intervals = []
    t = 0.0
    for _ in range(300):
        dt = rng.uniform(0.8, 1.2)
        intervals.append(_interval(t, dt, rng.uniform(0, 5000), rng.uniform(0, 400)))
        t += dt
    fit = fit_energy_split(intervals, since_t=-1.0)
    assert fit is not None
    assert fit.prefill_j_per_token == pytest.approx(PREFILL, rel=1e-9)
    assert fit.decode_j_per_token == pytest.approx(DECODE, rel=1e-9)
    assert fit.static_w == pytest.approx(STATIC, rel=1e-9)
    assert fit.r_squared == pytest.approx(1.0)
    assert 50 <= fit.samples <= 60  # blocks of contiguous intervals at least 5 s long
    # Only intervals ending after `since_t` count.
    since = intervals[100].t_start
    assert fit_energy_split(intervals, since_t=since) == fit_energy_split(intervals[100:], since_t=-1.0)


def test_cached_prompt_tokens_do_not_count_as_computed() -> None:
    rng = random.Random(3)
    intervals = [
        _interval(i, 1.0, rng.uniform(0, 3000), rng.uniform(0, 300), rng.uniform(0, 9000)) for i in range(200)
    ]
    fit = fit_energy_split(intervals, since_t=-1.0)
    assert fit is not None and fit.prefill_j_per_token == pytest.approx(PREFILL, rel=1e-9)


def test_coefficients_are_never_negative() -> None:
    rng = random.Random(11)
    # Energy that falls as output grows would need a negative decode cost: clamped to zero.
    intervals = []
    for i in range(200):
        inp, out = rng.uniform(0, 3000), rng.uniform(0, 300)
        joules = 0.05 * inp - 0.1 * out + 200.0
        intervals.append(
            Interval(i, i + 1.0, joules, False, (ModelInterval("m", joules, inp, out, 0.0, 0.0, 1.0),))
        )
    fit = fit_energy_split(intervals, since_t=-1.0)
    assert fit is not None
    assert fit.decode_j_per_token == 0.0
    assert fit.prefill_j_per_token >= 0 and fit.static_w >= 0
    assert 0.0 < fit.r_squared < 1.0


def test_noisy_data_is_not_reported_until_the_coefficients_are_determined() -> None:
    rng = random.Random(9)
    # Energy noise as large as the prefill signal: the prefill cost is not determined.
    noisy = []
    for i in range(200):
        inp, out = rng.uniform(0, 1000), rng.uniform(100, 300)
        joules = PREFILL * inp + DECODE * out + STATIC + rng.gauss(0, 40.0)
        noisy.append(
            Interval(i, i + 1.0, joules, False, (ModelInterval("m", joules, inp, out, 0.0, 0.0, 1.0),))
        )
    assert fit_energy_split(noisy, since_t=-1.0) is None


def test_steady_traffic_cannot_separate_prefill_from_decode() -> None:
    # A fixed prompt/output mix at a fixed rate: the three columns are proportional.
    intervals = [_interval(i, 1.0, 1500.0, 300.0) for i in range(100)]
    assert fit_energy_split(intervals, since_t=-1.0) is None
    # Too few samples, however good.
    rng = random.Random(5)
    few = [_interval(5.0 * i, 5.0, rng.uniform(0, 5000), rng.uniform(0, 400)) for i in range(MIN_SAMPLES - 1)]
    assert fit_energy_split(few, since_t=-1.0) is None


def test_the_accountant_fits_its_servers_measured_intervals() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0, split_window_s=150.0)
    place(acc, s=[GPU0])
    rng = random.Random(1)
    joules = inputs = outputs = cached = 0.0
    for i in range(200):
        # Energy read exactly at the scrape instants: interpolation is exact.
        t = 1000.0 + i
        energy(acc, t, joules)
        scrape(acc, "s", t, inputs, outputs, running=5, cached=cached)
        d_in, d_cached, d_out = rng.uniform(0, 4000), rng.uniform(0, 2000), rng.uniform(0, 500)
        inputs, cached, outputs = inputs + d_in + d_cached, cached + d_cached, outputs + d_out
        joules += PREFILL * d_in + DECODE * d_out + STATIC * 1.0
        acc.settle(t)
    split = acc.snapshot(1199.0).servers[0].split
    assert split is not None
    assert (split.prefill_j_per_token, split.decode_j_per_token, split.static_w) == pytest.approx(
        (PREFILL, DECODE, STATIC), rel=1e-6
    )
    assert split.samples == 30  # of 199 intervals, 150 ended in the last 150 s: 30 blocks of 5 s
