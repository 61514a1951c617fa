"""The GPU ledger: claims take each share step's share of the energy, the rest is unattributed."""

from __future__ import annotations

import pytest
from pytest import approx

from exporter.accounting.attribution import Claim, GpuLedger
from exporter.accounting.tracks import EnergyTrack
from exporter.values import GpuSample
from tests.accounting.builders import GPU0


def _ledger(shares: dict[float, dict[str, float]] | None = None) -> GpuLedger:
    """100 W from t=0 to t=10, read every second; `shares` from a reading on (default a, b: 1/2)."""
    track = EnergyTrack(GPU0)
    ledger = GpuLedger(track)
    current = {"a": 0.5, "b": 0.5}
    for t in range(11):
        track.add(GpuSample(GPU0, float(t), 100.0 * t, None))
        current = (shares or {}).get(float(t), current)
        if t > 0:
            ledger.add_step(t - 1.0, float(t), current)
    return ledger


def test_a_server_claims_each_instant_once_and_only_ahead_of_known_steps() -> None:
    ledger = _ledger()
    assert ledger.can_claim("a", 1.0, 3.0)
    ledger.claim(Claim("a", 1.0, 3.0))
    assert ledger.can_claim("b", 2.0, 4.0)  # another server's scrapes need not line up
    ledger.claim(Claim("b", 2.0, 4.0))
    assert not ledger.can_claim("a", 2.5, 3.5)  # a already has [2.5, 3]
    assert ledger.can_claim("a", 3.0, 5.0)
    assert not ledger.can_claim("a", 9.0, 11.0)  # no step beyond the latest reading yet
    assert not ledger.can_claim("c", 3.0, 3.0)


def test_steps_with_equal_shares_merge_and_shares_past_one_are_refused() -> None:
    ledger = _ledger()
    assert len(ledger._steps) == 1
    with pytest.raises(ValueError, match="at most 1"):
        ledger.add_step(10.0, 11.0, {"a": 0.7, "b": 0.4})


def test_shares_that_change_every_step_are_applied_step_by_step() -> None:
    # a's share is 0.8 over (1, 2], 0.2 over (2, 3], 0.5 after; b takes the rest.
    ledger = _ledger({2.0: {"a": 0.8, "b": 0.2}, 3.0: {"a": 0.2, "b": 0.8}, 4.0: {"a": 0.5, "b": 0.5}})
    a, b = Claim("a", 1.5, 3.5), Claim("b", 1.0, 2.5)
    assert ledger.claim_j(a) == approx(0.8 * 50 + 0.2 * 100 + 0.5 * 50)
    assert ledger.claim_j(b) == approx(0.2 * 100 + 0.8 * 50)
    ledger.claim(a)
    ledger.claim(b)
    ledger.settle(3.0)
    # [0, 1]: free; (1, 1.5]: b 0.2 of 50; (1.5, 2]: a+b all 50; (2, 2.5]: a+b 50; (2.5, 3]: a 0.2 of 50.
    assert ledger.attributed_j == approx(10.0 + 50.0 + 50.0 + 10.0)
    assert ledger.attributed_j + ledger.unattributed_j == approx(ledger.settled_j) == approx(300.0)
    assert ledger.pending_j() == approx(0.5 * 50)  # a's (3, 3.5]
    assert not ledger.can_claim("b", 2.5, 3.2)  # behind the horizon
    ledger.settle(20.0)  # clamped to the latest reading
    assert (ledger.horizon_t, ledger.settled_j) == (10.0, 1000.0)
    assert ledger.attributed_j == approx(120.0 + 0.5 * 50)
    assert ledger.pending_j() == 0.0
