"""Hand-computed shares that change at every reading, for two servers whose scrapes never line up."""

from __future__ import annotations

import pytest

from exporter.accounting.book import Accountant
from exporter.placement import Holding, Placement
from exporter.values import GpuActivity, PodRef
from tests.accounting.builders import GPU0, energy, scrape


def test_each_stretch_is_split_by_the_activity_measured_over_it() -> None:
    acc = Accountant(["a", "b"], [60.0], gap_limit_s=5.0)
    acc.set_placement(
        Placement(
            {"a": frozenset({Holding(GPU0.uuid)}), "b": frozenset({Holding(GPU0.uuid)})},
            {"a": PodRef("ns", "a", "uid-a"), "b": PodRef("ns", "b", "uid-b")},
        )
    )
    # 100 W throughout. Activity over (0, 1]: a 3/4; over (1, 2]: a 1/4; then even.
    busy = {1: (0.6, 0.2), 2: (0.1, 0.3), 3: (0.4, 0.4), 4: (0.4, 0.4)}
    energy(acc, 0.0, 0.0)
    for t in range(1, 5):
        a, b = busy[t]
        acc.add_activity([GpuActivity(GPU0.uuid, float(t), pods={"uid-a": a, "uid-b": b})])
        energy(acc, float(t), 100.0 * t)
    scrape(acc, "a", 0.0, 0, 0)
    scrape(acc, "b", 0.5, 0, 0)
    scrape(acc, "a", 1.5, 10, 10)  # (0, 1]: 0.75 x 100; (1, 1.5]: 0.25 x 50      -> 87.5 J
    scrape(acc, "b", 2.5, 10, 10)  # (0.5, 1]: 0.25 x 50; (1, 2]: 0.75 x 100; (2, 2.5]: 0.5 x 50 -> 112.5 J
    scrape(acc, "a", 3.0, 20, 20)  # (1.5, 2]: 0.25 x 50; (2, 3]: 0.5 x 100         -> 62.5 J
    scrape(acc, "b", 4.0, 20, 20)  # (2.5, 4]: 0.5 x 150                           -> 75 J
    closed = acc.settle(4.0)
    assert [(i.t_end, i.energy_j) for i in closed] == [
        (1.5, pytest.approx(87.5)),
        (3.0, pytest.approx(62.5)),
        (2.5, pytest.approx(112.5)),
        (4.0, pytest.approx(75.0)),
    ]
    snap = acc.snapshot(4.0)
    (gpu,) = snap.gpus
    assert [(s.server, s.share, s.method) for s in gpu.shares] == [
        ("a", 0.5, "activity"),
        ("b", 0.5, "activity"),
    ]
    # Of the 400 J, b's 12.5 J of (0, 0.5] (before its first scrape) and a's 50 J of (3, 4] (after
    # its last) are nobody's.
    assert gpu.attributed_j + acc.gpu_ledgers[GPU0.uuid].pending_j() == pytest.approx(337.5)
    assert gpu.attributed_j + gpu.unattributed_j == pytest.approx(gpu.settled_energy_j)


def test_activity_a_read_did_not_measure_does_not_linger() -> None:
    acc = Accountant(["a", "b"], [60.0], gap_limit_s=5.0)
    holding = frozenset({Holding(GPU0.uuid)})
    pods = {"a": PodRef("ns", "a", "uid-a"), "b": PodRef("ns", "b", "uid-b")}
    acc.set_placement(Placement({"a": holding, "b": holding}, pods))
    energy(acc, 0.0, 0.0)
    acc.add_activity([GpuActivity(GPU0.uuid, 1.0, pods={"uid-a": 0.9, "uid-b": 0.1})])
    energy(acc, 1.0, 100.0)
    assert [(s.share, s.method) for s in acc.shares[GPU0.uuid]] == [(0.9, "activity"), (0.1, "activity")]
    acc.add_activity([])  # the next read measured nothing on this GPU
    energy(acc, 2.0, 200.0)
    assert [(s.share, s.method) for s in acc.shares[GPU0.uuid]] == [(0.5, "equal"), (0.5, "equal")]
