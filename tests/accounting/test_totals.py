"""Running sums (windows, split blocks) against a recomputation from the intervals they stand for."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.accounting.bands import LoadBands
from exporter.accounting.ledger import Interval, ModelInterval
from exporter.accounting.split import SplitBlocks, fit_energy_split
from exporter.accounting.totals import SlidingTotals, Totals, totals_of

BANDS = LoadBands()


def _interval(
    t0: float, t1: float, energy: float | None, idle: bool, parts: list[tuple[str, float]]
) -> Interval:
    tokens = sum(p[1] for p in parts)
    models = tuple(
        ModelInterval(
            model=name,
            energy_j=None if energy is None else energy * (n / tokens if tokens else 1 / len(parts)),
            input_tokens=3 * n,
            output_tokens=n,
            requests=0.0,
            cached_input_tokens=0.0,
            running=None if idle else 1 + n % 300,
        )
        for name, n in parts
    )
    return Interval(t0, t1, energy, idle, models)


def _flat(totals: Totals) -> dict[object, tuple[float, ...]]:
    flat: dict[object, tuple[float, ...]] = {
        "server": (totals.energy_j, totals.measured_s, totals.idle_energy_j, totals.idle_s)
    }
    for key, s in [*totals.models.items(), *totals.bands.items()]:
        flat[key] = (s.energy_j, s.idle_energy_j, s.input_tokens, s.output_tokens)
    return flat


def _assert_close(running: Totals, fresh: Totals, scale: float) -> None:
    a, b = _flat(running), _flat(fresh)
    assert a.keys() == b.keys()
    for key, values in b.items():
        assert a[key] == pytest.approx(values, rel=1e-9, abs=1e-9 * scale), key


intervals_st = st.lists(
    st.tuples(
        st.floats(0.1, 3.0),  # duration
        st.one_of(st.none(), st.floats(0.0, 5000.0)),  # energy (None: unmeasured)
        st.booleans(),  # idle
        st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 2000)), min_size=1, max_size=3),
        st.booleans(),  # take a snapshot after this interval
    ),
    min_size=1,
    max_size=150,
)


@given(intervals_st, st.sampled_from([1.0, 5.0, 60.0]))
@settings(max_examples=100, deadline=None)
def test_a_sliding_window_equals_the_sum_of_the_intervals_inside_it(
    steps: list[tuple[float, float | None, bool, list[tuple[str, float]], bool]], window_s: float
) -> None:
    window = SlidingTotals(window_s, BANDS.band_of)
    seen: list[Interval] = []
    t = 0.0
    for duration, energy, idle, parts, look in steps:
        interval = _interval(t, t + duration, energy, idle, list(dict(parts).items()))
        t += duration
        window.add(interval)
        seen.append(interval)
        if look:
            now = t  # a render right after the scrape
            inside = [i for i in seen if now - window_s < i.t_end <= now]
            _assert_close(window.advance(now), totals_of(inside, BANDS.band_of), 5000.0)
    later = t + window_s + 1.0
    emptied = window.advance(later)
    assert _flat(emptied) == {"server": (0.0, 0.0, 0.0, 0.0)}  # exactly zero, not round-off


def test_cumulative_totals_follow_the_same_rules_as_windows() -> None:
    measured = _interval(0.0, 1.0, 10.0, False, [("a", 30.0), ("b", 10.0)])
    idle = _interval(1.0, 2.0, 4.0, True, [("a", 0.0)])
    unmeasured = _interval(2.0, 3.0, None, False, [("a", 50.0)])
    totals = totals_of([measured, idle, unmeasured], BANDS.band_of)
    assert (totals.energy_j, totals.measured_s, totals.idle_energy_j, totals.idle_s) == (14.0, 2.0, 4.0, 1.0)
    a = totals.models["a"]
    assert (a.energy_j, a.idle_energy_j, a.input_tokens, a.output_tokens) == (11.5, 4.0, 90.0, 30.0)
    assert set(totals.bands) == {("a", "17-64"), ("b", "5-16")}  # idle and unmeasured intervals: no band


def test_long_runs_do_not_drift_the_window_sums() -> None:
    """A million-joule stretch followed by millijoules: without re-basing, the round-off of adding
    and taking away the large values would swamp the small ones still in the window."""
    window = SlidingTotals(100.0, BANDS.band_of)
    t = 0.0
    for i in range(20_000):
        energy = 1e6 * (1 + math.sin(i)) if i < 19_900 else 1e-3 * (1 + i % 7)
        window.add(_interval(t, t + 1.0, energy, False, [("a", 1.0 + i % 13)]))
        t += 1.0
        if i % 10 == 0 or i >= 19_900:
            window.advance(t)
    sums = window.advance(t)
    expected = math.fsum(1e-3 * (1 + i % 7) for i in range(19_900, 20_000))
    assert sums.energy_j == pytest.approx(expected, rel=1e-9)  # billionths: 1e-9 J per interval at most
    assert sums.models["a"].energy_j == pytest.approx(expected, rel=1e-9)


@given(
    st.lists(st.tuples(st.floats(0, 4000), st.floats(0, 500), st.floats(-5, 5)), min_size=30, max_size=150),
    st.integers(25, 100),
)
@settings(max_examples=40, deadline=None)
def test_split_running_sums_equal_a_fit_from_scratch(
    work: list[tuple[float, float, float]], window_blocks: int
) -> None:
    """Intervals of exactly one block each: the blocks of the running sums and of a refit coincide."""
    blocks = SplitBlocks(5.0)
    intervals: list[Interval] = []
    t = 0.0
    for i, (inputs, outputs, noise) in enumerate(work):
        energy = 0.05 * inputs + 0.6 * outputs + 180.0 * 5.0 + noise
        interval = Interval(
            t, t + 5.0, energy, False, (ModelInterval("m", energy, inputs, outputs, 0.0, 0.0, 4.0),)
        )
        t += 5.0
        blocks.add(interval)
        intervals.append(interval)
        if i % 9 == 0 or i == len(work) - 1:
            since = t - 5.0 * window_blocks
            assert blocks.fit(since) == fit_energy_split(intervals, since)  # exact: integer sums
