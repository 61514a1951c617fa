"""Hand-computed traces through the accountant: every expected joule is worked out in a comment."""

from __future__ import annotations

import pytest

from exporter.accounting import book
from exporter.accounting.book import Accountant
from exporter.accounting.figures import ServerFigures, Snapshot
from exporter.values import ModelTokens, TokenSample
from tests.accounting.builders import GPU0, GPU1, energy, place, scrape


def _server(snap: Snapshot, name: str) -> ServerFigures:
    return next(s for s in snap.servers if s.server == name)


def test_energy_is_interpolated_to_token_instants() -> None:
    acc = Accountant(["s"], [2.0, 10.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    # 100 W, 200 W, 300 W, 400 W in successive seconds: cumulative 0, 100, 300, 600, 1000 J.
    for t, e in [(0, 0), (1, 100), (2, 300), (3, 600), (4, 1000)]:
        energy(acc, t, e)
    # E(0.5) = 50, E(1.5) = 200, E(2.5) = 450, E(3.5) = 800.
    scrape(acc, "s", 0.5, 0, 0)
    scrape(acc, "s", 1.5, 100, 10)  # [0.5, 1.5]: 150 J, 100 in, 10 out
    scrape(acc, "s", 2.5, 100, 40)  # [1.5, 2.5]: 250 J,   0 in, 30 out
    scrape(acc, "s", 3.5, 300, 70)  # [2.5, 3.5]: 350 J, 200 in, 30 out
    closed = acc.settle(4.0)
    assert [i.energy_j for i in closed] == [150.0, 250.0, 350.0]

    snap = acc.snapshot(4.0)
    s = _server(snap, "s")
    (m,) = s.models
    assert s.energy_j == m.energy_j == 750.0
    assert (m.input_tokens, m.output_tokens) == (300.0, 70.0)
    two_s, ten_s = m.windows
    # The 2 s window holds the intervals ending at 2.5 and 3.5: 600 J, 200 in, 60 out.
    assert two_s.joules_per_token("output") == 10.0
    assert two_s.joules_per_token("input") == 3.0
    assert two_s.joules_per_token("all") == pytest.approx(600 / 260)
    assert ten_s.joules_per_token("output") == pytest.approx(750 / 70)
    # The GPU is settled up to the latest scrape (3.5): 800 J, of which the 50 J before the
    # server's first scrape are unattributed.
    (g,) = snap.gpus
    assert (g.energy_j, g.settled_t, g.settled_energy_j) == (1000.0, 3.5, 800.0)
    assert (g.attributed_j, g.unattributed_j) == (750.0, 50.0)


def test_a_scrape_waits_for_an_energy_reading_after_its_instant() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    energy(acc, 0, 0)
    energy(acc, 1, 100)
    scrape(acc, "s", 0.5, 0, 0)
    scrape(acc, "s", 1.5, 0, 10)
    assert acc.settle(1.6) == []  # 1.5 is after the latest reading: not extrapolated
    energy(acc, 2, 300)
    (interval,) = acc.settle(2.0)
    assert interval.energy_j == 150.0  # E(1.5) = 100 + 200/2 = 200, minus E(0.5) = 50


def test_resets_on_both_sides_never_make_a_spike() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    # Raw 5000, 5100, 5200, then the counter restarts between t=2 and t=3: 40, 140, 240, 340.
    # Reset-corrected: 0, 100, 200, 240, 340, 440, 540 (what it counted since the restart). The
    # energy between t=2 and the restart is unknown, so intervals overlapping (2, 3] are unmeasured.
    for t, e in [(0, 5000), (1, 5100), (2, 5200), (3, 40), (4, 140), (5, 240), (6, 340)]:
        energy(acc, t, e)
    # E(0.5) = 50, E(1.5) = 150, E(3.5) = 290, E(4.5) = 390, E(5.5) = 490.
    # Output tokens count up to 1030; the server restarts and has generated 5 since at t=4.5.
    for t, out in [(0.5, 1000), (1.5, 1010), (2.5, 1020), (3.5, 1030), (4.5, 5), (5.5, 15)]:
        scrape(acc, "s", t, 0, out)
    closed = acc.settle(6.0)
    assert [i.energy_j for i in closed] == [100.0, None, None, 100.0, 100.0]
    assert [i.models[0].output_tokens for i in closed] == [10.0, 10.0, 10.0, 5.0, 10.0]
    s = _server(acc.snapshot(6.0), "s")
    (m,) = s.models
    assert (m.output_tokens, m.measured_output_tokens, s.unmeasured_s) == (45.0, 25.0, 2.0)
    assert m.windows[0].joules_per_token("output") == 300 / 25  # no spike, no undercount
    # The GPU's own counter follows Prometheus semantics: 540 J. Up to the horizon (5.5): 490 J,
    # of which 300 attributed and 190 unattributed (50 before the first scrape, 140 unmeasured).
    (g,) = acc.snapshot(6.0).gpus
    assert (g.energy_j, g.settled_energy_j, g.attributed_j, g.unattributed_j) == (540.0, 490.0, 300.0, 190.0)


def test_idle_intervals_are_kept_apart_from_active_ones() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for t in range(6):
        energy(acc, t, 100.0 * t)  # a steady 100 W: every 1 s interval is 100 J
    scrape(acc, "s", 0.5, 0, 0, running=0)
    scrape(acc, "s", 1.5, 0, 0, running=0)  # nothing ran: idle
    scrape(acc, "s", 2.5, 50, 20, running=2)  # work
    scrape(acc, "s", 3.5, 50, 20, running=0)  # no tokens, but 2 requests ran at the start: active
    scrape(acc, "s", 4.5, 50, 20, running=0)  # idle
    closed = acc.settle(5.0)
    assert [i.idle for i in closed] == [True, False, False, True]

    s = _server(acc.snapshot(5.0), "s")
    assert (s.energy_j, s.idle_energy_j, s.idle_s) == (400.0, 200.0, 2.0)
    (w,) = s.models[0].windows
    assert w.joules_per_token("output") == 20.0  # all-in: 400 J / 20 tokens
    assert w.active_joules_per_token("output") == 10.0  # idle left out: 200 J / 20 tokens
    (sw,) = s.windows
    assert (sw.power_w, sw.idle_power_w) == (100.0, 100.0)


def test_without_a_running_gauge_only_token_progress_decides_idle() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for t in range(4):
        energy(acc, t, 100.0 * t)
    for t, out in [(0.5, 0), (1.5, 10), (2.5, 10)]:
        scrape(acc, "s", t, 0, out)
    assert [i.idle for i in acc.settle(3.0)] == [False, True]


def test_no_energy_is_invented_across_an_energy_gap() -> None:
    acc = Accountant(["s"], [30.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    # 100 W throughout, but no reading between 2 s and 20 s.
    events: list[tuple[float, str, float]] = [
        (0, "e", 0), (0.5, "s", 0), (1, "e", 100), (1.5, "s", 10), (2, "e", 200),
        (10, "s", 30), (20, "e", 2000), (20.5, "s", 50), (21, "e", 2100), (21.5, "s", 60), (22, "e", 2200),
    ]  # fmt: skip
    for t, kind, value in events:
        if kind == "e":
            energy(acc, t, value)
        else:
            scrape(acc, "s", t, 0, value)
        acc.settle(t)
    acc.settle(22.0)
    s = _server(acc.snapshot(22.0), "s")
    # Measured: [0.5, 1.5] and [20.5, 21.5], 100 J each. The instant 10 falls in the gap, so
    # [1.5, 10] and [10, 20.5] are unmeasured: 19 s whose tokens count but whose energy is not
    # attributed.
    assert s.energy_j == 200.0
    assert s.unmeasured_s == 19.0
    (m,) = s.models
    assert m.output_tokens == 60.0
    assert (m.measured_output_tokens, m.windows[0].joules_per_token("output")) == (20.0, 10.0)
    # The GPU used E(21.5) = 2150 J up to the horizon: 200 J attributed, 1950 J unattributed
    # (0.5 J-seconds before the first scrape, and the whole unmeasured stretch).
    (g,) = acc.snapshot(22.0).gpus
    assert (g.settled_t, g.settled_energy_j) == (21.5, 2150.0)
    assert (g.attributed_j, g.unattributed_j) == (200.0, 1950.0)


def test_a_scrape_whose_energy_never_comes_is_applied_unmeasured_after_the_gap_limit() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    energy(acc, 0, 0)
    energy(acc, 1, 100)
    scrape(acc, "s", 0.5, 0, 0)
    scrape(acc, "s", 2.0, 0, 10)
    assert acc.settle(7.0) == []  # waited exactly the gap limit: still waiting
    (interval,) = acc.settle(7.1)
    assert interval.energy_j is None
    assert _server(acc.snapshot(7.1), "s").unmeasured_s == 1.5


def test_a_shared_gpu_is_split_and_an_unplaced_gpu_is_unattributed() -> None:
    acc = Accountant(["a", "b"], [60.0], gap_limit_s=5.0)
    place(acc, a=[GPU0], b=[GPU0])
    for t in range(4):
        energy(acc, t, 100.0 * t, GPU0)
        energy(acc, t, 70.0 * t, GPU1)  # serves no server
    for t, (out_a, out_b) in [(0.5, (0, 0)), (1.5, (10, 40)), (2.5, (20, 80))]:
        scrape(acc, "a", t, 0, out_a)
        scrape(acc, "b", t, 0, out_b)
    acc.settle(3.0)
    snap = acc.snapshot(3.0)
    # Equal shares of GPU0: 50 J per interval each, whatever their tokens.
    assert _server(snap, "a").energy_j == _server(snap, "b").energy_j == 100.0
    g0, g1 = snap.gpus
    assert (g0.settled_energy_j, g0.attributed_j, g0.unattributed_j) == (250.0, 200.0, 50.0)
    assert (g1.settled_t, g1.settled_energy_j, g1.attributed_j, g1.unattributed_j) == (3.0, 210.0, 0.0, 210.0)


def test_a_server_across_two_gpus_adds_their_energy() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0, GPU1])
    for t in range(3):
        energy(acc, t, 100.0 * t, GPU0)
        energy(acc, t + 0.25, 300.0 * t, GPU1)  # read at other instants: 300 W
    scrape(acc, "s", 0.5, 0, 0)
    scrape(acc, "s", 1.5, 0, 40)
    (interval,) = acc.settle(2.25)
    assert interval.energy_j == pytest.approx(100.0 + 300.0)
    assert interval.models[0].output_tokens == 40.0


def test_windows_hold_only_intervals_that_ended_inside_them() -> None:
    acc = Accountant(["s"], [1.5, 3.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for t in range(6):
        energy(acc, t, 100.0 * t)
    for t, out in [(0.5, 0), (1.5, 10), (2.5, 30), (3.5, 70), (4.5, 150)]:
        scrape(acc, "s", t, 0, out)
    acc.settle(5.0)
    (m,) = _server(acc.snapshot(4.6), "s").models
    short, long = m.windows
    # (3.1, 4.6]: the interval ending at 3.5 and at 4.5: 200 J / 120 tokens.
    assert short.joules_per_token("output") == pytest.approx(200 / 120)
    # (1.6, 4.6]: intervals ending at 2.5, 3.5, 4.5: 300 J / 140 tokens.
    assert long.joules_per_token("output") == pytest.approx(300 / 140)
    (m,) = _server(acc.snapshot(100.0), "s").models
    assert all(w.joules_per_token("output") is None for w in m.windows)  # nothing ended inside


def test_models_of_one_server_share_its_energy_by_their_tokens() -> None:
    # One scrape carries both models' counters at one instant.
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for t in range(3):
        energy(acc, t, 100.0 * t)
    for t, (x, y) in [(0.5, (0, 0)), (1.5, (30, 10))]:
        acc.add_tokens(
            [TokenSample("s", t, ModelTokens("x", 0, x)), TokenSample("s", t, ModelTokens("y", 0, y))]
        )
    acc.settle(2.0)
    models = {m.model: m for m in _server(acc.snapshot(2.0), "s").models}
    assert (models["x"].energy_j, models["y"].energy_j) == (75.0, 25.0)  # 100 J split 30:10


def test_a_server_that_starts_behind_the_horizon_is_unmeasured_until_it_catches_up() -> None:
    acc = Accountant(["a", "b"], [60.0], gap_limit_s=5.0)
    place(acc, a=[GPU0], b=[GPU0])
    for t in range(5):
        energy(acc, t, 100.0 * t)
    for t in (0.5, 1.5, 2.5, 3.5):
        scrape(acc, "a", t, 0, 10 * t)
    acc.settle(4.0)  # b has no scrape yet: the horizon moves to a's latest scrape, 3.5
    scrape(acc, "b", 2.0, 0, 0)  # arrives late, before the horizon
    scrape(acc, "b", 3.0, 0, 10)
    scrape(acc, "b", 4.0, 0, 20)
    acc.settle(4.0)
    b = _server(acc.snapshot(4.0), "b")
    # Both of b's intervals start before GPU0's horizon (3.5), whose energy is already
    # classified: b's half of it went to unattributed, so they are unmeasured.
    assert (b.energy_j, b.unmeasured_s) == (0.0, 2.0)
    # From then on b claims its half: [4, 5] is measured, 50 J.
    energy(acc, 5, 500.0)
    energy(acc, 6, 600.0)
    scrape(acc, "a", 4.5, 0, 45)
    scrape(acc, "b", 5.0, 0, 30)
    acc.settle(6.0)
    snap = acc.snapshot(6.0)
    assert _server(snap, "b").energy_j == 50.0
    assert _server(snap, "a").energy_j == 200.0  # half of 100 J, four intervals from 0.5 to 4.5
    # Settled to 4.5 (a's latest scrape): 450 J = 200 to a + 25 to b (half of [4, 4.5])
    # + 225 unattributed (all of [0, 0.5], b's half of [0.5, 4]).
    g = snap.gpus[0]
    assert (g.settled_t, g.settled_energy_j) == (4.5, 450.0)
    assert (g.attributed_j, g.unattributed_j) == (225.0, 225.0)


def test_settling_one_server_applies_its_queue_alone() -> None:
    """What a scrape settles is its own server's queue: the others wait for the full settle."""
    acc = Accountant(["a", "b"], [60.0], gap_limit_s=5.0)
    place(acc, a=[GPU0], b=[GPU1])
    for t in range(4):
        energy(acc, t, 100.0 * t, GPU0)
        energy(acc, t, 10.0 * t, GPU1)
    for t in (0.5, 1.5, 2.5):
        scrape(acc, "a", t, 0, 10 * t)
        scrape(acc, "b", t, 0, 10 * t)
    assert [i.energy_j for i in acc.settle(3.0, "a")] == [100.0, 100.0]
    snap = acc.snapshot(3.0)
    assert (_server(snap, "a").energy_j, _server(snap, "b").energy_j) == (200.0, 0.0)
    assert all(g.settled_t == 0.0 for g in snap.gpus)  # horizons move in the full settle
    assert [i.energy_j for i in acc.settle(3.0)] == [10.0, 10.0]
    snap = acc.snapshot(3.0)
    assert _server(snap, "b").energy_j == 20.0
    assert [g.settled_t for g in snap.gpus] == [2.5, 2.5]


def test_a_gpu_history_stays_short_however_long_it_runs() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for k in range(2000):  # a reading every 0.1 s and a scrape every second, for 200 s
        energy(acc, k / 10, 30.0 * k)
        if k % 10 == 5:
            scrape(acc, "s", k / 10, 0, k)
            acc.settle(k / 10)
    assert len(acc.tracks[GPU0.uuid]) <= 20  # from the horizon (the latest scrape) on: about 1 s


def test_a_lagging_server_holds_at_most_max_held_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server silent for less than hold_s holds a GPU's horizon back, but only so many readings."""
    monkeypatch.setattr(book, "MAX_HELD_READINGS", 50)
    acc = Accountant(["a", "quiet"], [60.0], gap_limit_s=5.0, hold_s=1000.0)
    place(acc, a=[GPU0], quiet=[GPU0])
    energy(acc, 0, 0.0)
    scrape(acc, "quiet", 0.5, 0, 0)
    for k in range(1, 400):
        energy(acc, k, 100.0 * k)
        scrape(acc, "a", k - 0.5, 0, k)
        acc.settle(k)
    assert len(acc.tracks[GPU0.uuid]) <= 51
    g = acc.snapshot(400.0).gpus[0]
    assert g.settled_t is not None and g.settled_t >= 399 - 51  # no longer held at 0.5 by the quiet server
    assert g.attributed_j + g.unattributed_j == pytest.approx(g.settled_energy_j)
    scrape(acc, "quiet", 399.0, 0, 5)
    acc.settle(400.0)
    assert _server(acc.snapshot(400.0), "quiet").unmeasured_s == 398.5  # its stretch was let go
