from __future__ import annotations

from exporter.accounting.tracks import EnergyTrack
from exporter.values import GpuSample
from tests.accounting.builders import GPU0


def _track(readings: list[tuple[float, float]]) -> EnergyTrack:
    track = EnergyTrack(GPU0)
    for t, e in readings:
        track.add(GpuSample(GPU0, t, e, None))
    return track


def test_interpolates_between_readings_and_never_extrapolates() -> None:
    # 100 W during the first second, 200 W during the second.
    track = _track([(10.0, 5000.0), (11.0, 5100.0), (12.0, 5300.0)])
    assert track.energy_at(10.0, 5.0) == 0.0
    assert track.energy_at(10.5, 5.0) == 50.0
    assert track.energy_at(11.5, 5.0) == 200.0  # 100 + half of 200
    assert track.energy_at(12.0, 5.0) == 300.0
    assert track.energy_at(12.1, 5.0) is None
    assert track.energy_at(9.9, 5.0) is None
    assert track.covers(12.0) and not track.covers(12.1)


def test_reset_is_corrected_on_the_cumulative_series() -> None:
    # 1000 -> 1100: +100; 50 < 1100: reset, +50; 150: +100.
    track = _track([(0.0, 1000.0), (1.0, 1100.0), (2.0, 50.0), (3.0, 150.0)])
    assert track.counter.resets == 1
    assert track.energy_j == 250.0
    assert track.energy_at(0.5, 5.0) == 50.0
    assert track.energy_at(2.5, 5.0) == 200.0


def test_no_energy_is_invented_across_a_gap() -> None:
    track = _track([(0.0, 0.0), (1.0, 100.0), (20.0, 2000.0)])
    assert track.energy_at(0.5, 5.0) == 50.0
    assert track.energy_at(10.0, 5.0) is None
    assert track.energy_at(20.0, 5.0) == 2000.0


def test_repeated_or_older_readings_are_ignored() -> None:
    track = _track([(0.0, 0.0), (1.0, 100.0), (1.0, 100.0), (0.5, 7.0), (2.0, 200.0)])
    assert track.energy_j == 200.0
    assert track.energy_at(1.5, 5.0) == 150.0


def test_energy_between_refuses_stretches_over_a_gap_or_a_reset() -> None:
    # 100 W; a reset between t=2 and t=3 (raw 200 -> 30); a gap between t=4 and t=20.
    track = _track([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 30.0), (4.0, 130.0), (20.0, 1730.0)])
    assert track.energy_between(0.5, 1.5, 5.0) == 100.0
    assert track.energy_between(0.0, 2.0, 5.0) == 200.0
    assert track.energy_between(1.5, 2.5, 5.0) is None  # overlaps the reset
    assert track.energy_between(2.0, 3.0, 5.0) is None
    assert track.energy_between(3.0, 4.0, 5.0) == 100.0  # after the reset: counted since
    assert track.energy_between(3.5, 4.0, 5.0) == 50.0
    assert track.energy_between(3.5, 20.0, 5.0) is None  # spans the gap
    assert track.energy_between(3.5, 20.0, 30.0) == 1650.0  # a gap limit that allows it
