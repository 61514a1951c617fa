"""The accounting figures reach /metrics under their documented names, with hand-computed values."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.accounting.book import Accountant
from exporter.accounting.tariff import Tariff
from exporter.exposition.collector import Health, SourceHealth
from exporter.exposition.render import render_text
from tests.accounting.builders import GPU0, GPU1, energy, place, scrape

Labels = tuple[tuple[str, str], ...]


def _render(acc: Accountant, now: float) -> dict[tuple[str, Labels], float]:
    health = Health("0", SourceHealth("simulated", True, None, ()), ())
    text = render_text(acc.snapshot(now), health).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _trace(acc: Accountant) -> None:
    place(acc, s=[GPU0])
    for t in range(6):
        energy(acc, t, 100.0 * t, GPU0)  # 100 J per 1 s interval
        energy(acc, t, 50.0 * t, GPU1)  # serves nobody
    for t, out, running in [(0.5, 0, 0), (1.5, 0, 0), (2.5, 20, 2), (3.5, 40, 6), (4.5, 60, 2)]:
        scrape(acc, "s", t, 0, out, running=running)
    acc.settle(5.0)


def test_idle_active_power_bands_and_unattributed() -> None:
    acc = Accountant(["s"], [60.0], gap_limit_s=5.0)
    _trace(acc)
    found = _render(acc, 5.0)
    s_w = (("server", "s"), ("window", "1m"))
    # 400 J over 4 s measured; the first interval was idle: 100 J over 1 s.
    assert found[("tokenwatt_server_power_watts", s_w)] == 100.0
    assert found[("tokenwatt_server_idle_power_watts", s_w)] == 100.0
    out = (("model", "m"), ("server", "s"), ("token_type", "output"), ("window", "1m"))
    assert found[("tokenwatt_joules_per_token", out)] == 400 / 60
    assert found[("tokenwatt_active_joules_per_token", out)] == 300 / 60
    # Bands: [1.5, 2.5] ran 0 -> 2 (1-4), [2.5, 3.5] 2 -> 6 (5-16), [3.5, 4.5] 6 -> 2 (5-16).
    band = {k[1]: v for k, v in found.items() if k[0] == "tokenwatt_server_band_energy_joules_total"}
    assert band == {
        (("band", "1-4"), ("model", "m"), ("server", "s")): 100.0,
        (("band", "5-16"), ("model", "m"), ("server", "s")): 200.0,
    }
    key = (("band", "5-16"), ("model", "m"), ("server", "s"), ("token_type", "output"), ("window", "1m"))
    assert found[("tokenwatt_band_joules_per_token", key)] == 200 / 40
    # GPU 0: settled to 4.5, 50 J before the first scrape; GPU 1 serves nobody: 250 J.
    unattributed = {
        dict(k[1])["gpu"]: v
        for k, v in found.items()
        if k[0] == "tokenwatt_gpu_unattributed_energy_joules_total"
    }
    assert unattributed == {"0": 50.0, "1": 250.0}
    assert not any(k[0].startswith(("tokenwatt_cost", "tokenwatt_server_energy_cost")) for k in found)
    assert not any(k[0].startswith("tokenwatt_prefill") for k in found)  # too few samples for a fit


def test_cost_and_carbon_only_when_configured() -> None:
    acc = Accountant(
        ["s"],
        [60.0],
        gap_limit_s=5.0,
        tariff=Tariff(pue=1.5, price_per_kwh=0.2, currency="EUR", grams_per_kwh=400),
    )
    _trace(acc)
    found = _render(acc, 5.0)
    # 400 J * 1.5 / 3.6e6 kWh/J = 1/6000 kWh at the meter.
    cost = found[
        ("tokenwatt_server_energy_cost_total", (("currency", "EUR"), ("model", "m"), ("server", "s")))
    ]
    assert cost == pytest.approx(0.2 / 6000)
    assert found[("tokenwatt_server_carbon_grams_total", (("model", "m"), ("server", "s")))] == pytest.approx(
        400 / 6000
    )
    per_token = (
        ("currency", "EUR"),
        ("model", "m"),
        ("server", "s"),
        ("token_type", "output"),
        ("window", "1m"),
    )
    assert found[("tokenwatt_cost_per_token", per_token)] == pytest.approx(0.2 / 6000 / 60)
