from __future__ import annotations

from pytest import approx

from exporter.accounting.attribution import Claim, GpuLedger
from exporter.accounting.energy import EnergyTrack
from exporter.model import GpuSample
from tests.accounting.builders import GPU0


def _ledger() -> GpuLedger:
    track = EnergyTrack(GPU0)
    for t in range(11):
        track.add(GpuSample(GPU0, float(t), 100.0 * t, None))  # 100 W
    return GpuLedger(track)


def test_claims_never_add_up_to_more_than_the_whole_gpu() -> None:
    ledger = _ledger()
    assert ledger.can_claim(1.0, 3.0, 0.5)
    ledger.claim(Claim("a", 1.0, 3.0, 0.5))
    assert ledger.can_claim(2.0, 4.0, 0.5)
    ledger.claim(Claim("b", 2.0, 4.0, 0.5))
    assert not ledger.can_claim(2.5, 3.5, 0.25)  # [2.5, 3) is already fully claimed
    assert ledger.can_claim(3.0, 5.0, 0.5)  # a's claim ends at 3
    assert not ledger.can_claim(0.0, 1.5, 1.0)


def test_settling_splits_each_stretch_between_claims_and_the_rest() -> None:
    ledger = _ledger()
    ledger.claim(Claim("a", 1.0, 3.0, 0.5))
    ledger.claim(Claim("b", 2.0, 4.0, 1 / 3))
    ledger.settle(2.5)
    # [0, 1]: 100 J free; [1, 2]: 50 to a; [2, 2.5]: 25 to a, 50/3 to b.
    assert ledger.attributed_j == approx(50.0 + 25.0 + 50 / 3)
    assert ledger.attributed_j + ledger.unattributed_j == approx(250.0)
    assert ledger.settled_j == 250.0
    assert ledger.pending_j() == approx(25.0 + 150 / 3)  # a's [2.5, 3] and b's [2.5, 4]
    assert not ledger.can_claim(2.0, 2.6, 0.1)  # behind the horizon
    ledger.settle(20.0)  # clamped to the latest reading
    assert (ledger.horizon_t, ledger.settled_j) == (10.0, 1000.0)
    assert ledger.attributed_j == approx(100.0 + 200 / 3)
    assert ledger.unattributed_j == approx(1000.0 - ledger.attributed_j)
    assert ledger.pending_j() == 0.0
