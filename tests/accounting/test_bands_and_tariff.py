from __future__ import annotations

import pytest

from exporter.accounting.bands import LoadBands
from exporter.accounting.book import Accountant
from exporter.accounting.tariff import Tariff
from tests.accounting.builders import GPU0, energy, place, scrape


def test_default_bands_and_their_labels() -> None:
    bands = LoadBands()
    assert bands.labels == ("1-4", "5-16", "17-64", "65-256", "257+")
    assert [bands.band_of(r) for r in (0, 1, 4, 4.2, 5, 16, 17, 64, 65, 256, 257, 10_000)] == [
        "1-4", "1-4", "1-4", "5-16", "5-16", "5-16", "17-64", "17-64", "65-256", "65-256", "257+", "257+",
    ]  # fmt: skip
    assert LoadBands((1, 8)).labels == ("1", "2-8", "9+")


@pytest.mark.parametrize("bounds", [(4, 4), (16, 4), (0, 4), (-1,)])
def test_bounds_must_be_ascending_positive(bounds: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="ascending positive integers"):
        LoadBands(bounds)


def test_intervals_are_banded_by_the_requests_running_at_their_ends() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    place(acc, s=[GPU0])
    for t in range(7):
        energy(acc, t, 100.0 * t)  # 100 J per 1 s interval
    trace = [
        (0.5, 0, 0, 0),
        (1.5, 100, 10, 3),  # running 0 -> 3: band 1-4
        (2.5, 300, 30, 3),  # 3 -> 3: band 1-4
        (3.5, 300, 70, 12),  # 3 -> 12: the larger end decides: 5-16
        (4.5, 300, 70, 0),  # 12 -> 0, no tokens but requests ran: 5-16
        (5.5, 300, 70, 0),  # idle: no band
    ]
    for t, inp, out, running in trace:
        scrape(acc, "s", t, inp, out, running=running)
    acc.settle(6.0)
    (m,) = acc.snapshot(6.0).servers[0].models
    bands = {b.band: b for b in m.bands}
    assert set(bands) == {"1-4", "5-16"}
    assert (bands["1-4"].energy_j, bands["1-4"].input_tokens, bands["1-4"].output_tokens) == (
        200.0,
        300.0,
        30.0,
    )
    assert (bands["5-16"].energy_j, bands["5-16"].output_tokens) == (200.0, 40.0)
    (w,) = bands["5-16"].windows
    assert w.joules_per_token("output") == 5.0
    assert m.idle_energy_j == 100.0


def test_cost_and_carbon_follow_their_formulas() -> None:
    # One kWh at the GPUs, PUE 1.5: 1.5 kWh at the facility meter.
    tariff = Tariff(pue=1.5, price_per_kwh=0.2, currency="EUR", grams_per_kwh=400.0)
    assert tariff.cost(3.6e6) == pytest.approx(0.3)
    assert tariff.carbon_grams(3.6e6) == pytest.approx(600.0)
    assert Tariff().cost(3.6e6) is None and Tariff().carbon_grams(3.6e6) is None
