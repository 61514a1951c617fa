"""Who keeps a GPU busy: the readings that split a shared GPU's energy between its tenants.

- MIG instances (`instance_activity`): dcgm-exporter's `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (renamed
  `DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO` in DCGM 4.6) on each GPU instance's row (`GPU_I_ID`,
  `GPU_I_PROFILE`, `UUID` of the parent GPU): the ratio of time the instance's graphics engine was
  active, 0 to 1, over DCGM's sampling window. Weighted by the instance's slices of seven it is the
  instance's part of the whole GPU.
- Processes on a whole GPU (`PodActivity`): NVML `nvmlDeviceGetProcessUtilization` samples, one
  per process and driver sampling period, with `smUtil` in percent and `timeStamp` in µs since
  1970. NVML's PIDs are the host's: `/proc/<pid>/cgroup` names the pod UID (`pod<uid>`, with `_`
  for `-` under the systemd cgroup driver), readable only in the host PID namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from exporter.pages.parser import parse_samples
from exporter.placement import MIG_SLICES_PER_GPU, mig_profile_slices
from exporter.values import GpuActivity

ENGINE_ACTIVE_NAMES = ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
MAX_CGROUP_BYTES = 64 * 1024
OUTSIDE_PODS = ""
"""The `pods` key of processes that are in no pod (or whose pod could not be read): their part of
the GPU is nobody's, so it stays unattributed."""


def instance_activity(text: str, t: float) -> tuple[GpuActivity, ...]:
    """The MIG instances' activity on a dcgm-exporter page, per parent GPU; rows without
    `GPU_I_ID`, with an unknown profile or a value outside 0..1 are left out. Raises `ParseError`
    for a malformed activity line, as the page's energy lines do."""
    found: dict[str, dict[int, float]] = {}
    for sample in parse_samples(text, ENGINE_ACTIVE_NAMES):
        labels = dict(sample.labels)
        uuid, gi = labels.get("UUID"), labels.get("GPU_I_ID", "")
        profile = labels.get("GPU_I_PROFILE", "")
        if not uuid or not gi.isdigit() or not 0.0 <= sample.value <= 1.0:
            continue
        try:
            slices = mig_profile_slices(profile)
        except ValueError:
            continue
        found.setdefault(uuid, {})[int(gi)] = sample.value * slices / MIG_SLICES_PER_GPU
    return tuple(GpuActivity(uuid, t, instances=instances) for uuid, instances in found.items())


def pod_uid_of(proc: Path, pid: int) -> str | None:
    """The UID of the Kubernetes pod process `pid` runs in, from `<proc>/<pid>/cgroup`; None for a
    process outside any pod, one that is gone, or one we may not read."""
    try:
        with (proc / str(pid) / "cgroup").open("rb") as f:
            text = f.read(MAX_CGROUP_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _POD_UID.search(text)
    return found.group(1).replace("_", "-") if found else None


class PodActivity:
    """Per-pod SM activity of one GPU from NVML process samples, read after read."""

    def __init__(self, proc: Path) -> None:
        self._proc = proc
        self._pods: dict[int, str | None] = {}
        """PID -> pod UID, for the PIDs of the latest samples."""
        self.last_seen_us = 0
        """Timestamp of the newest sample taken so far: the next query asks for newer ones."""
        self._latest: dict[str, float] = {}

    def update(self, samples: Iterable[tuple[int, int, int]]) -> Mapping[str, float]:
        """Fold in the samples (pid, timeStamp µs, smUtil %) newer than the last read; return each
        pod's activity (sum over its processes of their mean SM utilization, 0 to 1). Without new
        samples the previous activity stands: the driver samples every few hundred milliseconds."""
        by_pid: dict[int, list[int]] = {}
        since = self.last_seen_us
        for pid, stamp, sm_util in samples:
            if stamp > since and 0 <= sm_util <= 100:
                by_pid.setdefault(pid, []).append(sm_util)
                self.last_seen_us = max(self.last_seen_us, stamp)
        if not by_pid:
            return self._latest
        known = self._pods
        self._pods = {pid: known[pid] if pid in known else pod_uid_of(self._proc, pid) for pid in by_pid}
        if all(uid is None for uid in self._pods.values()):
            # No PID maps to a pod: not in the host PID namespace, or no pods here. Nothing is
            # known per pod, which is not the same as knowing that no pod was busy.
            self._latest = {}
            return self._latest
        pods: dict[str, float] = {}
        for pid, utils in by_pid.items():
            uid = self._pods[pid] or OUTSIDE_PODS
            pods[uid] = pods.get(uid, 0.0) + sum(utils) / len(utils) / 100.0
        self._latest = pods
        return pods
