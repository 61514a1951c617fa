"""The `dcgm` source: NVIDIA DCGM through its Python bindings, from a host engine or embedded.

The bindings (`pydcgm`, `dcgm_agent`, `dcgm_structs`, `dcgm_fields`) ship with DCGM as plain
top-level modules in a directory, not on PyPI, and they need `libdcgm.so.4` even to talk to a
remote host engine. They are found on `sys.path`, then in `energy.dcgm.bindings_path`, then where
the DCGM 4 and DCGM 3 packages install them.

Fields are watched by number, because DCGM 4.6 renamed them (the numbers did not change):
156 energy in mJ since the driver was loaded, 155 board power (W, a 1 s average on recent GPUs),
157 instantaneous power (W, DCGM 3.2 and later). Each value carries DCGM's own sample time, which
is the reading's instant. A value whose status is not OK or that holds one of DCGM's blank
sentinels is no reading, never zero.

On MIG GPUs it also watches field 1001 (`DCGM_FI_PROF_GR_ENGINE_ACTIVE`, the ratio of time each GPU
instance's engine was busy; it needs DCGM's profiling module) on every GPU instance of
`dcgmGetGpuInstanceHierarchy`, and reports it weighted by the instance's slices as activity, which
splits a MIG GPU's energy between its instances. Without it MIG GPUs are split by slices.

When the host engine goes away (`DCGMError_ConnectionNotValid`) the source reconnects, at most once
per back-off step (from the read interval, doubling, up to 30 s), and watches its fields again: a
restarted host engine has forgotten them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import structlog
from pydantic import BeforeValidator

from exporter.backoff import backoff_s
from exporter.config import Duration, EnergyConfig, Strict, show
from exporter.energy import EnergyReadError, EnergySourceUnavailable, Registered, error_reason
from exporter.energy.library_thread import LibraryThread
from exporter.placement import MIG_SLICES_PER_GPU
from exporter.values import Gpu, GpuActivity, GpuSample

log = structlog.get_logger("tokenwatt.energy")



def _address(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"expected HOST:PORT such as localhost:5555 or a unix socket path, got {show(value)}"
        )
    if value.startswith(("/", "unix://")):
        return value
    host, colon, port = value.rpartition(":")
    if colon and (not host or not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(
            f"{show(value)} is not HOST:PORT (port 1 to 65535) nor a unix socket path starting with /"
        )
    return value


class DcgmSettings(Strict):
    """`energy.dcgm:`: where the host engine is, and where DCGM's files are."""

    address: Annotated[str, BeforeValidator(_address)] = "localhost:5555"
    """nv-hostengine's HOST[:PORT] (default port 5555), or a unix socket path."""
    embedded: bool = False
    """Start DCGM inside tokenwatt instead of connecting to a host engine."""
    bindings_path: str | None = None
    """Directory holding pydcgm.py and friends, searched after sys.path."""
    library_path: str | None = None
    """Directory holding libdcgm.so.4, where it is not on the loader's search path."""
    timeout: Duration = 5.0


BINDINGS_DIRS = (
    Path("/usr/share/datacenter-gpu-manager-4/bindings/python3"),  # DCGM 4 packages
    Path("/usr/local/dcgm/bindings/python3"),  # DCGM 3 and earlier
)
BOARD_POWER_W = 155
ENERGY_MJ = 156
INSTANT_POWER_W = 157
WATCHED_FIELDS = (BOARD_POWER_W, ENERGY_MJ, INSTANT_POWER_W)
GR_ENGINE_ACTIVE = 1001
# DCGM's sentinels: a value at or above these is blank, not found, not supported or not permitted.
INT64_BLANK = 0x7FFFFFFFFFFFFFF0
FP64_BLANK = 2.0**47
DCGM_ST_OK = 0


@dataclass(frozen=True, slots=True)
class Bindings:
    pydcgm: ModuleType
    agent: ModuleType
    structs: ModuleType
    fields: ModuleType


def find_bindings(configured: str | None, standard: tuple[Path, ...] = BINDINGS_DIRS) -> Bindings:
    """Import DCGM's Python bindings from the first place that has them."""
    try:
        return _import_bindings()
    except ImportError:
        pass
    places = [Path(configured)] if configured else []
    for place in [*places, *standard]:
        if (place / "pydcgm.py").is_file():
            sys.path.insert(0, str(place))
            try:
                return _import_bindings()
            except ImportError as e:
                raise EnergySourceUnavailable.of(
                    "dcgm", f"the DCGM bindings in {place} do not import: {e}"
                ) from None
    tried = ", ".join(["sys.path", *(str(p) for p in [*places, *standard])])
    raise EnergySourceUnavailable.of(
        "dcgm",
        f"DCGM's Python bindings (pydcgm) not found in {tried}: install datacenter-gpu-manager-4-core "
        "or set energy.dcgm.bindings_path",
    )


def _import_bindings() -> Bindings:
    return Bindings(
        pydcgm=importlib.import_module("pydcgm"),
        agent=importlib.import_module("dcgm_agent"),
        structs=importlib.import_module("dcgm_structs"),
        fields=importlib.import_module("dcgm_fields"),
    )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class _Instance:
    entity_id: int
    """DCGM's entity id of the GPU instance (`DCGM_FE_GPU_I`)."""
    parent_uuid: str
    gpu_instance: int
    """NVML's GPU instance ID (`GPU_I_ID`)."""
    slices: int


class DcgmSource:
    """Reads fields 155, 156 and 157 of every GPU DCGM supports, all calls in one thread."""

    name = "dcgm"
    reads_fresh = False

    def __init__(
        self,
        bindings: Bindings,
        cfg: DcgmSettings,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._b = bindings
        self.cfg = cfg
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._thread = LibraryThread("dcgm")
        self._handle: Any = None
        self._gpus: dict[int, Gpu] = {}
        self._failed_connects = 0
        self._retry_at = 0.0
        self._field_groups = 0
        self._instances: list[_Instance] = []
        """The GPU instances whose engine activity is watched (none without MIG or profiling)."""
        self.activity: tuple[GpuActivity, ...] = ()
        """MIG instances' activity at the latest read (see `ActivityReporting`)."""

    @classmethod
    async def open(
        cls, cfg: EnergyConfig, monotonic: Callable[[], float] = time.monotonic
    ) -> DcgmSource:
        """Connect to `energy.dcgm` and watch every `cfg.interval`; `EnergySourceUnavailable` says what
        is missing and how to fix it."""
        settings = cfg.section(cls.name, DcgmSettings)
        source = cls(find_bindings(settings.bindings_path), settings, cfg.interval, monotonic)
        try:
            await source._thread.call(source._start)
        except source._b.structs.DCGMError as e:
            source._thread.close()
            raise EnergySourceUnavailable.of("dcgm", source._explain(e)) from None
        if not source._gpus:
            await source.close()
            raise EnergySourceUnavailable.of(
                "dcgm", f"the host engine at {source.where} sees no supported GPU"
            )
        return source

    @property
    def where(self) -> str:
        return "embedded" if self.cfg.embedded else self.cfg.address

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(self._gpus.values())

    def _explain(self, e: Exception) -> str:
        code = getattr(e, "value", None)
        structs = self._b.structs
        if code == structs.DCGM_ST_LIBRARY_NOT_FOUND:
            return (
                "libdcgm.so.4 not found: install datacenter-gpu-manager-4-core, or set "
                "energy.dcgm.library_path to the directory that holds it"
            )
        if code == structs.DCGM_ST_VER_MISMATCH:
            return (
                f"the DCGM library here and the host engine at {self.where} are different versions: "
                "install the host engine's DCGM version next to tokenwatt"
            )
        if code == structs.DCGM_ST_CONNECTION_NOT_VALID:
            return (
                f"cannot connect to nv-hostengine at {self.where}: start it (nv-hostengine -n -b ALL), "
                "point energy.dcgm.address at it, or set energy.dcgm.embedded: true"
            )
        return f"{type(e).__name__}: {e}"

    def _start(self) -> None:
        library_dir = self.cfg.library_path
        self._b.structs._dcgmInit(os.path.expanduser(library_dir) if library_dir else None)
        self._connect()

    def _connect(self) -> None:
        """Open a handle, learn the GPUs and watch the fields (again, after a host-engine restart)."""
        b, cfg = self._b, self.cfg
        mode = b.structs.DCGM_OPERATION_MODE_AUTO
        timeout_ms = int(cfg.timeout * 1000)
        if cfg.embedded:
            handle = b.pydcgm.DcgmHandle(opMode=mode)
        elif cfg.address.startswith(("/", "unix://")):
            path = cfg.address.removeprefix("unix://")
            handle = b.pydcgm.DcgmHandle(unixSocketPath=path, opMode=mode, timeoutMs=timeout_ms)
        else:
            handle = b.pydcgm.DcgmHandle(ipAddress=cfg.address, opMode=mode, timeoutMs=timeout_ms)
        try:
            system = handle.GetSystem()
            gpus = {}
            for gpu_id in system.discovery.GetAllSupportedGpuIds():
                ids = system.discovery.GetGpuAttributes(gpu_id).identifiers
                gpus[gpu_id] = Gpu(index=gpu_id, uuid=_text(ids.uuid), model=_text(ids.deviceName))
            # Field group names are unique per host engine; ours go when we disconnect.
            self._field_groups += 1
            group = b.agent.dcgmFieldGroupCreate(
                handle.handle, list(WATCHED_FIELDS), f"tokenwatt-{os.getpid()}-{self._field_groups}"
            )
            b.agent.dcgmWatchFields(
                handle.handle,
                b.structs.DCGM_GROUP_ALL_GPUS,
                group,
                int(self._interval_s * 1_000_000),  # µs
                max(30.0, 10 * self._interval_s),  # s of samples the host engine keeps
                0,
            )
            instances = self._watch_instances(handle.handle, gpus)
            system.UpdateAllFields(1)  # the first sample, without waiting for a cycle
        except b.structs.DCGMError:
            self._shut(handle)
            raise
        self._handle = handle
        self._gpus = gpus
        self._instances = instances

    def _watch_instances(self, handle: Any, gpus: dict[int, Gpu]) -> list[_Instance]:
        """Watch the engine activity of every GPU instance; none where MIG is off or DCGM cannot
        profile (no profiling module, a GPU without profiling support): a log line, not a failure."""
        b = self._b
        hierarchy = b.agent.dcgmGetGpuInstanceHierarchy(handle)
        instances = [
            _Instance(
                e.entity.entityId,
                gpus[e.parent.entityId].uuid,
                e.info.nvmlInstanceId,
                e.info.nvmlProfileSlices,
            )
            for e in hierarchy.entityList[: hierarchy.count]
            if e.entity.entityGroupId == b.fields.DCGM_FE_GPU_I and e.parent.entityId in gpus
        ]
        if not instances:
            return []
        try:
            self._field_groups += 1
            name = f"tokenwatt-{os.getpid()}-{self._field_groups}"
            group = b.agent.dcgmGroupCreate(handle, b.structs.DCGM_GROUP_DEFAULT_INSTANCES, name)
            fields = b.agent.dcgmFieldGroupCreate(handle, [GR_ENGINE_ACTIVE], name)
            b.agent.dcgmWatchFields(
                handle, group, fields, int(self._interval_s * 1_000_000), max(30.0, 10 * self._interval_s), 0
            )
        except b.structs.DCGMError as e:
            reason = error_reason(e, "DCGM")
            log.warning("no MIG instance activity", reason=reason, error=str(e), instances=len(instances))
            return []
        return instances

    async def read(self) -> list[GpuSample]:
        return await self._thread.call(self._read)

    def _read(self) -> list[GpuSample]:
        b = self._b
        if self._handle is None:
            self._reconnect()
        entities = [b.structs.c_dcgmGroupEntityPair_t(b.fields.DCGM_FE_GPU, g) for g in self._gpus]
        try:
            values = b.agent.dcgmEntitiesGetLatestValues(
                self._handle.handle, entities, list(WATCHED_FIELDS), 0
            )
        except b.structs.DCGMError as e:
            if getattr(e, "value", None) == b.structs.DCGM_ST_CONNECTION_NOT_VALID:
                self._shut(self._handle)
                self._handle = None
                raise EnergyReadError(
                    "connection_lost", f"lost the connection to nv-hostengine at {self.where}: {e}"
                ) from None
            raise EnergyReadError(error_reason(e, "DCGM"), f"reading DCGM fields: {e}") from None
        latest: dict[tuple[int, int], tuple[float, float]] = {}
        for v in values:
            if v.status != DCGM_ST_OK:
                continue
            value = v.value.i64 if v.fieldId == ENERGY_MJ else v.value.dbl
            if value >= (INT64_BLANK if v.fieldId == ENERGY_MJ else FP64_BLANK):
                continue
            latest[(v.entityId, v.fieldId)] = (v.ts / 1e6, float(value))
        samples = []
        for gpu_id, gpu in self._gpus.items():
            energy = latest.get((gpu_id, ENERGY_MJ))
            if energy is None:
                continue
            power = latest.get((gpu_id, BOARD_POWER_W)) or latest.get((gpu_id, INSTANT_POWER_W))
            t, energy_mj = energy
            samples.append(GpuSample(gpu, t, energy_mj / 1000.0, power[1] if power else None))
        if not samples:
            raise EnergyReadError(
                "no_data", f"DCGM at {self.where} has no energy value (field 156) for any GPU yet"
            )
        self.activity = self._read_instances()
        return samples

    def _read_instances(self) -> tuple[GpuActivity, ...]:
        """Each watched GPU instance's engine activity times its slices, per parent GPU."""
        b = self._b
        if not self._instances:
            return ()
        pairs = [
            b.structs.c_dcgmGroupEntityPair_t(b.fields.DCGM_FE_GPU_I, i.entity_id) for i in self._instances
        ]
        try:
            values = b.agent.dcgmEntitiesGetLatestValues(self._handle.handle, pairs, [GR_ENGINE_ACTIVE], 0)
        except b.structs.DCGMError:
            return ()  # the energy read just succeeded; a failure here leaves the split to slices
        by_entity = {i.entity_id: i for i in self._instances}
        found: dict[str, dict[int, float]] = {}
        stamps: dict[str, float] = {}
        for v in values:
            instance = by_entity.get(v.entityId)
            if instance is None or v.status != DCGM_ST_OK or not 0.0 <= v.value.dbl <= 1.0:
                continue
            share = v.value.dbl * instance.slices / MIG_SLICES_PER_GPU
            found.setdefault(instance.parent_uuid, {})[instance.gpu_instance] = share
            stamps[instance.parent_uuid] = max(stamps.get(instance.parent_uuid, 0.0), v.ts / 1e6)
        return tuple(GpuActivity(uuid, stamps[uuid], instances=weights) for uuid, weights in found.items())

    def _reconnect(self) -> None:
        now = self._monotonic()
        if now < self._retry_at:
            raise EnergyReadError(
                "disconnected",
                f"not connected to nv-hostengine at {self.where}; "
                f"next attempt in {self._retry_at - now:.1f}s",
            )
        try:
            self._connect()
        except self._b.structs.DCGMError as e:
            self._failed_connects += 1
            self._retry_at = now + backoff_s(self._interval_s, self._failed_connects - 1)
            raise EnergyReadError(error_reason(e, "DCGM"), self._explain(e)) from None
        self._failed_connects = 0
        self._retry_at = 0.0

    def _shut(self, handle: Any) -> None:
        with contextlib.suppress(self._b.structs.DCGMError):  # the connection may be gone already
            handle.Shutdown()

    async def close(self) -> None:
        if self._handle is not None:
            await self._thread.call(self._shut, self._handle)
            self._handle = None
        self._thread.close()


SOURCE = Registered(DcgmSource.name, DcgmSource.open, auto=True, settings=DcgmSettings)
