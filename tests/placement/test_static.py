"""Static placement: indices and UUIDs resolve to GPUs; shared GPUs split in equal shares."""

from __future__ import annotations

from exporter.model import Gpu
from exporter.placement import Unmatched, place_static

GPUS = [Gpu(i, f"GPU-aaaa-{i}", "H100") for i in range(4)]


def test_indices_uuids_and_all() -> None:
    placement, unmatched = place_static({"a": [0, "gpu-AAAA-1"], "b": None, "c": [3]}, GPUS)
    assert unmatched == []
    assert placement.gpus["a"] == {"GPU-aaaa-0", "GPU-aaaa-1"}
    assert placement.gpus["b"] == {g.uuid for g in GPUS}
    assert placement.gpus["c"] == {"GPU-aaaa-3"}


def test_shares_of_a_gpu_add_up_to_one() -> None:
    placement, _ = place_static({"a": [0, 1], "b": [1, 2], "c": [1]}, GPUS)
    assert placement.share("a", "GPU-aaaa-0") == 1.0
    assert placement.share("a", "GPU-aaaa-1") == placement.share("c", "GPU-aaaa-1") == 1 / 3
    assert sum(placement.share(s, "GPU-aaaa-1") for s in "abc") == 1.0
    assert placement.share("a", "GPU-aaaa-2") == 0.0
    assert placement.share("nobody", "GPU-aaaa-0") == 0.0


def test_unknown_selectors_are_reported() -> None:
    placement, unmatched = place_static({"a": [0, 7, "GPU-nope"]}, GPUS)
    assert placement.gpus["a"] == {"GPU-aaaa-0"}
    assert unmatched == [Unmatched("a", 7), Unmatched("a", "GPU-nope")]
