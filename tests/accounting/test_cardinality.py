"""Model cardinality: a cap per server, short labels, expiry of models no longer seen."""

from __future__ import annotations

from exporter.accounting.book import Accountant
from exporter.accounting.cardinality import MAX_LABEL_CHARS, ModelLimit
from exporter.values import ModelTokens, TokenSample
from tests.accounting.builders import GPU0, energy, place


def _scrape(acc: Accountant, t: float, models: list[str]) -> None:
    acc.add_tokens([TokenSample("s", t, ModelTokens(m, 10.0 * t, t)) for m in models])


def _accountant(max_models: int, expiry_s: float) -> Accountant:
    acc = Accountant(["s"], [60.0], 5.0, model_limits={"s": ModelLimit(max_models, expiry_s)})
    place(acc, s=[GPU0])
    return acc


def test_models_beyond_the_cap_are_dropped_and_counted() -> None:
    acc = _accountant(3, 600.0)
    for i in range(5):
        t = 10.0 + i
        energy(acc, t + 0.5, 100.0 * i)
        _scrape(acc, t, [f"m{j}" for j in range(5)])
        acc.settle(t + 0.5)
    snap = acc.snapshot(15.0)
    assert [m.model for m in snap.servers[0].models] == ["m0", "m1", "m2"]
    assert snap.dropped_models == (("s", 10),)


def test_models_unseen_past_the_expiry_leave_and_make_room() -> None:
    acc = _accountant(2, 30.0)
    for i in range(100):  # a new pair of model names every 10 s
        t = 10.0 + i
        energy(acc, t + 0.5, 100.0 * i)
        _scrape(acc, t, [f"gen{i // 10}-a", f"gen{i // 10}-b"])
        acc.settle(t + 0.5)
    snap = acc.snapshot(110.0)
    # gen0 (t 10-19) is admitted; gen1-3 are dropped until gen0 expires 30 s after t=19; gen4 (t 50-59)
    # is admitted; gen5-7 dropped; gen8 admitted when gen4 expires; gen9 dropped: 70 scrapes of 2.
    assert {m.model for m in snap.servers[0].models} == {"gen8-a", "gen8-b"}
    assert snap.dropped_models == (("s", 2 * 70),)


def test_long_model_names_are_cut_and_stay_distinct() -> None:
    acc = _accountant(64, 600.0)
    long_a, long_b = "a" * 5000 + "1", "a" * 5000 + "2"
    for i in range(3):
        energy(acc, 10.5 + i, 100.0 * i)
        _scrape(acc, 10.0 + i, [long_a, long_b])
        acc.settle(10.5 + i)
    names = [m.model or "" for m in acc.snapshot(13.0).servers[0].models]
    assert len(names) == 2 and names[0] != names[1]
    assert all(len(n) <= MAX_LABEL_CHARS for n in names)
