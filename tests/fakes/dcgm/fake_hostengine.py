"""The simulated machine behind the fake DCGM bindings: nv-hostengine, its cache and its GPUs.

Not part of DCGM: tests drive it to stop and restart the host engine, make `libdcgm.so.4`
missing, make the client and host engine versions differ, blank a field, reset a counter or
mark a field unsupported. Every binding call is recorded with the thread it ran on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INT64_BLANK = 0x7FFFFFFFFFFFFFF0
INT64_NOT_SUPPORTED = INT64_BLANK + 2
FP64_BLANK = 140737488355328.0
FP64_NOT_SUPPORTED = FP64_BLANK + 2.0


@dataclass
class FakeInstance:
    """A MIG GPU instance (with one compute instance) on a GPU."""

    gpu_instance: int
    """NVML's GPU instance ID (`GPU_I_ID` in dcgm-exporter)."""
    slices: int
    engine_active: float = 0.0
    """Field 1001, DCGM_FI_PROF_GR_ENGINE_ACTIVE: ratio of time the instance's engine was busy."""


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    """Field 156, mJ since the driver was loaded; set to INT64_NOT_SUPPORTED before Volta."""
    power_w: float = 70.0
    """Field 155."""
    instant_power_w: float = 72.5
    """Field 157; FP64_NOT_SUPPORTED on a DCGM before 3.2."""
    instances: list[FakeInstance] = field(default_factory=list)
    """MIG GPU instances; empty when MIG is off."""


@dataclass
class CachedValue:
    status: int
    ts_us: int
    value: float | int


@dataclass
class HostEngine:
    gpus: list[FakeGpu] = field(default_factory=list)
    library_found: bool = True
    running: bool = True
    version_mismatch: bool = False
    clock: Callable[[], float] = time.time
    generation: int = 0
    """Bumped when the host engine restarts: connections from before it are no longer valid."""
    watches: list[tuple[int, tuple[int, ...], int, float, int]] = field(default_factory=list)
    """(group id, field ids, update period µs, max keep age s, max keep samples) per watch."""
    field_groups: dict[int, tuple[int, ...]] = field(default_factory=dict)
    cache: dict[tuple[int, int], CachedValue] = field(default_factory=dict)
    """(gpu id, field id) -> latest sample."""
    blank: set[tuple[int, int]] = field(default_factory=set)
    """(gpu id, field id) pairs that sample as DCGM's blank sentinel."""
    profiling: bool = True
    """False where DCGM's profiling module is not loaded: watching fields 1001+ fails."""
    groups: dict[int, int] = field(default_factory=dict)
    """Entity group id -> group type it was created with."""
    instance_cache: dict[tuple[int, int], CachedValue] = field(default_factory=dict)
    """(GPU-instance entity id, field id) -> latest sample."""
    connects: list[str] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        self.running = False

    def restart(self) -> None:
        """nv-hostengine comes back empty: no watches, no field groups, no cached values."""
        self.running = True
        self.generation += 1
        self.watches.clear()
        self.field_groups.clear()
        self.groups.clear()
        self.cache.clear()
        self.instance_cache.clear()

    def instances(self) -> list[tuple[int, int, FakeInstance]]:
        """(GPU-instance entity id, GPU id, instance): DCGM numbers instances across the node."""
        found = [(gpu_id, i) for gpu_id, gpu in enumerate(self.gpus) for i in gpu.instances]
        return [(eid, gpu_id, i) for eid, (gpu_id, i) in enumerate(found)]

    def sample(self) -> None:
        """One update cycle: every watched field of every GPU is sampled now."""
        ts_us = int(self.clock() * 1_000_000)
        watched = {f for _, fields, *_ in self.watches for f in fields}
        for gpu_id, gpu in enumerate(self.gpus):
            live = {156: gpu.energy_mj, 155: gpu.power_w, 157: gpu.instant_power_w}
            for field_id in watched & live.keys():
                value = live[field_id]
                if (gpu_id, field_id) in self.blank:
                    value = INT64_BLANK if field_id == 156 else FP64_BLANK
                self.cache[(gpu_id, field_id)] = CachedValue(0, ts_us, value)
        if 1001 in watched:
            for eid, _, instance in self.instances():
                self.instance_cache[(eid, 1001)] = CachedValue(0, ts_us, instance.engine_active)

    def record(self, name: str) -> None:
        with self.lock:
            self.calls.append((name, threading.get_ident()))


ENGINE = HostEngine()
