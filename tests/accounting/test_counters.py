from __future__ import annotations

from exporter.accounting.counters import ResetCounter


def test_first_reading_only_sets_the_baseline() -> None:
    c = ResetCounter()
    assert c.observe(1000.0) is None
    assert c.total == 0.0


def test_increments_and_resets_follow_prometheus_semantics() -> None:
    c = ResetCounter()
    readings = [100.0, 160.0, 20.0, 50.0, 50.0]
    increments = [c.observe(v) for v in readings]
    # 160-100 = 60; 20 < 160 is a reset: the counter counted 20 since; 50-20 = 30; then nothing.
    assert increments == [None, 60.0, 20.0, 30.0, 0.0]
    assert c.total == 110.0
    assert c.resets == 1


def test_reset_to_zero_adds_nothing_and_total_never_decreases() -> None:
    c = ResetCounter()
    totals = []
    for v in [5.0, 9.0, 0.0, 0.0, 3.0]:
        c.observe(v)
        totals.append(c.total)
    assert totals == [0.0, 4.0, 4.0, 4.0, 7.0]
    assert c.resets == 1
