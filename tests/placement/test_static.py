"""Static placement and the shares of each GPU: indices, GPU and MIG UUIDs resolve to devices;
each GPU is split by the method its sharing and the measured activity allow."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest import approx

from exporter.config import ConfigError
from exporter.config_file import validate_config
from exporter.placement import SHARE_METHODS, Holding, Share, Unmatched, mig_profile_slices, place_static
from exporter.values import Gpu, GpuActivity, MigDevice, PodRef

GPUS = [Gpu(i, f"GPU-aaaa-{i}", "H100") for i in range(4)]
MIGS = [
    MigDevice("MIG-bbbb-1", "GPU-aaaa-3", 1, "3g.40gb", 3),
    MigDevice("MIG-bbbb-2", "GPU-aaaa-3", 2, "2g.20gb", 2),
    MigDevice("MIG-bbbb-5", "GPU-aaaa-3", 5, "1g.10gb", 1),
    MigDevice("MIG-cccc-1", "GPU-gone", 1, "7g.80gb", 7),
]
POD_A, POD_B = PodRef("ns", "a", "uid-a"), PodRef("ns", "b", "uid-b")


def _values(shares: tuple[Share, ...]) -> dict[str, tuple[float, str]]:
    return {s.server: (s.share, s.method) for s in shares}


def test_indices_uuids_and_all() -> None:
    placement, unmatched = place_static({"a": [0, "gpu-AAAA-1"], "b": None, "c": [3]}, GPUS)
    assert unmatched == []
    assert placement.gpus["a"] == {"GPU-aaaa-0", "GPU-aaaa-1"}
    assert placement.gpus["b"] == {g.uuid for g in GPUS}
    assert placement.gpus["c"] == {"GPU-aaaa-3"}


def test_mig_uuids_resolve_to_their_parent_gpu_and_instance() -> None:
    placement, unmatched = place_static({"a": ["mig-BBBB-1"], "b": ["MIG-bbbb-2", "MIG-cccc-1"]}, GPUS, MIGS)
    assert placement.holdings["a"] == {Holding("GPU-aaaa-3", 1, 3)}
    assert placement.holdings["b"] == {Holding("GPU-aaaa-3", 2, 2)}
    assert unmatched == [Unmatched("b", "MIG-cccc-1")]  # its parent GPU is not seen


def test_one_holder_takes_the_whole_gpu_and_others_split_equally_without_activity() -> None:
    placement, _ = place_static({"a": [0, 1], "b": [1, 2], "c": [1]}, GPUS)
    assert _values(placement.shares("GPU-aaaa-0", None)) == {"a": (1.0, "exclusive")}
    assert _values(placement.shares("GPU-aaaa-1", None)) == {s: (1 / 3, "equal") for s in "abc"}
    assert placement.shares("GPU-aaaa-3", None) == ()


def test_time_sliced_gpu_is_split_by_the_pods_activity() -> None:
    pods = {"a": POD_A, "b": POD_B}
    placement, _ = place_static({"a": [0], "b": [0]}, GPUS, pods=pods)
    busy = GpuActivity("GPU-aaaa-0", 5.0, pods={"uid-a": 0.6, "uid-b": 0.2, "uid-other": 0.2})
    shares = _values(placement.shares("GPU-aaaa-0", busy))
    # The third pod's fifth is nobody's here: unattributed.
    assert shares == {"a": (approx(0.6), "activity"), "b": (approx(0.2), "activity")}
    idle = GpuActivity("GPU-aaaa-0", 6.0, pods={"uid-a": 0.0, "uid-b": 0.0})
    assert _values(placement.shares("GPU-aaaa-0", idle)) == {"a": (0.5, "activity"), "b": (0.5, "activity")}
    # A server whose pod UID is unknown cannot be matched to processes: equal shares for all.
    unknown, _ = place_static({"a": [0], "b": [0]}, GPUS, pods={"a": POD_A, "b": PodRef("ns", "b")})
    assert _values(unknown.shares("GPU-aaaa-0", busy)) == {"a": (0.5, "equal"), "b": (0.5, "equal")}


def test_mig_gpu_is_split_by_instance_activity_else_by_slices_and_unheld_slices_stay_free() -> None:
    placement, _ = place_static({"a": ["MIG-bbbb-1"], "b": ["MIG-bbbb-2"]}, GPUS, MIGS)
    # Instance 5 (nobody's) is busy too: its part is unattributed.
    busy = GpuActivity("GPU-aaaa-3", 5.0, instances={1: 0.9 * 3 / 7, 2: 0.3 * 2 / 7, 5: 1.0 / 7})
    total = (2.7 + 0.6 + 1.0) / 7
    assert _values(placement.shares("GPU-aaaa-3", busy)) == {
        "a": (approx(2.7 / 7 / total), "mig_activity"),
        "b": (approx(0.6 / 7 / total), "mig_activity"),
    }
    assert _values(placement.shares("GPU-aaaa-3", None)) == {
        "a": (approx(3 / 7), "mig_slices"),
        "b": (approx(2 / 7), "mig_slices"),
    }
    idle = GpuActivity("GPU-aaaa-3", 6.0, instances={1: 0.0, 2: 0.0, 5: 0.0})
    assert {s.method for s in placement.shares("GPU-aaaa-3", idle)} == {"mig_slices"}


def test_unknown_selectors_are_reported() -> None:
    placement, unmatched = place_static({"a": [0, 7, "GPU-nope"]}, GPUS)
    assert placement.gpus["a"] == {"GPU-aaaa-0"}
    assert unmatched == [Unmatched("a", 7), Unmatched("a", "GPU-nope")]


def test_readings_that_cannot_be_activity_are_ignored_and_slices_never_exceed_the_gpu() -> None:
    placement, _ = place_static({"a": [0], "b": [0]}, GPUS, pods={"a": POD_A, "b": POD_B})
    poisoned = GpuActivity("GPU-aaaa-0", 5.0, pods={"uid-a": float("nan"), "uid-b": -1.0})
    assert {s.method for s in placement.shares("GPU-aaaa-0", poisoned)} == {"equal"}
    half = GpuActivity("GPU-aaaa-0", 5.0, pods={"uid-a": float("inf"), "uid-b": 0.4})
    assert _values(placement.shares("GPU-aaaa-0", half)) == {"a": (0.0, "activity"), "b": (1.0, "activity")}
    # A source claiming 5 + 4 slices on one GPU: scaled to the whole GPU, not past it.
    too_many = [
        MigDevice("MIG-x-1", "GPU-aaaa-2", 1, "5g.40gb", 5),
        MigDevice("MIG-x-2", "GPU-aaaa-2", 2, "4g.40gb", 4),
    ]
    mig, _ = place_static({"a": ["MIG-x-1"], "b": ["MIG-x-2"]}, GPUS, too_many)
    assert sum(s.share for s in mig.shares("GPU-aaaa-2", None)) == approx(1.0)


def test_every_share_method_is_documented() -> None:
    docs = Path(__file__).parent.parent.parent / "docs"
    metrics, accuracy = (docs / "metrics.md").read_text(), (docs / "accuracy.md").read_text()
    for method in SHARE_METHODS:
        assert f"`{method}` (" in metrics, method
        assert f"| `{method}` |" in accuracy, method


def test_mig_profiles_name_their_compute_slices() -> None:
    cases = {"3g.40gb": 3, "1c.3g.40gb": 3, "1g.10gb+me": 1, "7g.80gb": 7, "1g.18gb": 1, "4g.71gb": 4}
    assert {p: mig_profile_slices(p) for p in cases} == cases
    for bad in ("", "MIG", "8g.80gb", "3g"):
        with pytest.raises(ValueError, match="not a MIG profile"):
            mig_profile_slices(bad)


def test_a_servers_pod_uid_is_checked_where_it_is_configured() -> None:
    server = {"name": "a", "url": "http://127.0.0.1:8000/metrics", "gpus": [0]}
    uid = "0a0a0a0a-1111-4222-8333-00000000000a"
    assert validate_config({"servers": [server | {"pod_uid": uid}]}).servers[0].pod_uid == uid
    with pytest.raises(ConfigError, match=r"servers\[0\]\.pod_uid: .*'pod-a'"):
        validate_config({"servers": [server | {"pod_uid": "pod-a"}]})
