"""Value types that cross layers.

Every layer of the pipeline (energy, tokens, placement, accounting, exposition) speaks in these
frozen dataclasses, so no dict-shaped data travels between them. Units are in the field names:
`_j` joules, `_w` watts, `_s` seconds; instants are Unix seconds (floats) on the wall clock, the
time base that DCGM, NVML readers and the token scraper share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class EnergyMethod(StrEnum):
    """How a GPU's energy is known."""

    COUNTER = "counter"
    """The GPU's own cumulative energy counter."""
    POWER_INTEGRATION = "power_integration"
    """Integrated power readings, where the GPU has no usable counter."""


class TokenType(StrEnum):
    """Which tokens a per-token figure divides by (the `token_type` label)."""

    OUTPUT = "output"
    INPUT = "input"
    ALL = "all"
    """Input and output together."""


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU as an energy source sees it."""

    index: int
    uuid: str
    model: str
    """Product name, e.g. "NVIDIA H100 80GB HBM3"."""
    energy_method: EnergyMethod = EnergyMethod.COUNTER
    pci_bus_id: str | None = None
    """PCI address `DOMAIN:BUS:DEVICE.FUNCTION` where the source reports it: AMD's device plugin names
    GPUs by it."""


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of a GPU's energy counter.

    `energy_j` is cumulative energy in joules since an arbitrary origin. It behaves like a
    Prometheus counter: it may go back (driver reload, host-engine restart), which the accounting
    treats as a reset. A failed read is never a sample: a source leaves the GPU out instead.
    """

    gpu: Gpu
    t: float
    """Instant of the reading (the source's own timestamp where it has one)."""
    energy_j: float
    power_w: float | None
    """Instantaneous or averaged board power; None where the source has no power reading."""


@dataclass(frozen=True, slots=True)
class ModelTokens:
    """Cumulative token counters of one model on one server, as read from its metrics page.

    `input_tokens` counts every prompt token, prefix-cache hits included. `requests` is the number
    of finished requests, or None where the server has no such counter. `running` is the number
    of requests in flight, where the server reports it.
    """

    model: str | None
    input_tokens: float
    output_tokens: float
    requests: float | None = None
    running: float | None = None
    cached_input_tokens: float | None = None


@dataclass(frozen=True, slots=True)
class TokenSample:
    """One server's counters for one model at one instant.

    `t` is the midpoint between sending the scrape request and receiving the whole response.
    """

    server: str
    t: float
    tokens: ModelTokens


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device (a GPU instance, with its compute instance) on a physical GPU.

    Energy is measured only for the parent GPU; placement maps a MIG device ID (`MIG-<uuid>`, or GKE's
    `nvidiaN/giM`) to its parent and instance through these.
    """

    uuid: str
    """The MIG device UUID, `MIG-<uuid>`, as NVML and the device plugins name it."""
    parent_uuid: str
    """UUID of the physical GPU it is carved from."""
    gpu_instance: int
    """The GPU instance ID (`GPU_I_ID` in dcgm-exporter's labels)."""
    profile: str
    """The MIG profile, e.g. `3g.40gb`."""
    slices: int
    """Compute slices of the profile (3 for `3g.40gb`), of the GPU's 7."""


@dataclass(frozen=True, slots=True)
class PodRef:
    """A Kubernetes pod that serves a server. Pods are matched by namespace and name; `uid` is known
    where a source gives it (the Downward API, the Kubernetes API) and is what `/proc/<pid>/cgroup`
    names, so per-process GPU activity maps to a pod through it."""

    namespace: str
    name: str
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class GpuActivity:
    """How busy each tenant kept one physical GPU over the stretch that ended at `t` (since the
    source's previous activity reading of that GPU). Values are fractions of the whole GPU's
    compute, 0 to 1, so the tenants of one GPU add up to at most one.

    `pods` is for a GPU shared whole (time-slicing, MPS): pod UID -> the SM activity of that pod's
    processes (NVML per-process samples, summed over the pod's PIDs; key `""` for processes in no
    pod, whose part is nobody's). `instances` is for a MIG
    GPU: GPU instance ID -> its graphics-engine activity (DCGM `DCGM_FI_PROF_GR_ENGINE_ACTIVE`, a
    fraction of the instance) times the instance's compute slices over the GPU's seven.
    """

    uuid: str
    """The physical GPU's UUID."""
    t: float
    pods: Mapping[str, float] = field(default_factory=dict)
    instances: Mapping[int, float] = field(default_factory=dict)


class Derived(StrEnum):
    """Which derived figures `/metrics` carries besides the counters (`exposition.derived`)."""

    ALL = "all"
    """Every windowed ratio."""
    ESSENTIAL = "essential"
    """The windowed J/token and server power only; recording rules compute the rest."""
    NONE = "none"
    """No windowed ratio: recording rules compute them all from the counters."""
