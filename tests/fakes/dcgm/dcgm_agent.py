"""Fake `dcgm_agent`: the DCGM C API as the real bindings expose it, on the fake host engine.

Handles are plain integers, as `dcgmHandle_t` is. Every call on a handle raises
`DCGMError_ConnectionNotValid` once the host engine has stopped or restarted since the handle was
made; `dcgmConnect_v2` raises it while the host engine is down, and `DCGMError_VerMismatch` when the
client and host engine versions differ.
"""

from __future__ import annotations

import itertools

import dcgm_fields
import dcgm_structs
from fake_hostengine import ENGINE

_EMBEDDED = -1
_handles: dict[int, int] = {}
"""Handle -> host-engine generation it was made in (embedded handles: _EMBEDDED)."""
_next_id = itertools.count(1)


def _check(handle: int) -> None:
    generation = _handles.get(handle)
    if generation is None:
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_BADPARAM)
    if generation != _EMBEDDED and (not ENGINE.running or generation != ENGINE.generation):
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_CONNECTION_NOT_VALID)


def dcgmInit() -> None:
    ENGINE.record("dcgmInit")


def dcgmShutdown() -> None:
    ENGINE.record("dcgmShutdown")


def dcgmStartEmbedded(opMode: int) -> int:
    ENGINE.record("dcgmStartEmbedded")
    handle = next(_next_id)
    _handles[handle] = _EMBEDDED
    return handle


def dcgmStopEmbedded(dcgm_handle: int) -> None:
    ENGINE.record("dcgmStopEmbedded")
    _handles.pop(dcgm_handle, None)


def dcgmConnect_v2(ip_address: str, connectParams: object, version: int = 0) -> int:
    ENGINE.record("dcgmConnect_v2")
    ENGINE.connects.append(ip_address)
    if not ENGINE.running:
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_CONNECTION_NOT_VALID)
    if ENGINE.version_mismatch:
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_VER_MISMATCH)
    handle = next(_next_id)
    _handles[handle] = ENGINE.generation
    return handle


def dcgmDisconnect(dcgm_handle: int) -> None:
    ENGINE.record("dcgmDisconnect")
    _handles.pop(dcgm_handle, None)


def dcgmGetAllSupportedDevices(dcgm_handle: int) -> list[int]:
    ENGINE.record("dcgmGetAllSupportedDevices")
    _check(dcgm_handle)
    return list(range(len(ENGINE.gpus)))


def dcgmGetDeviceAttributes(dcgm_handle: int, gpuId: int) -> dcgm_structs.c_dcgmDeviceAttributes_v3:
    ENGINE.record("dcgmGetDeviceAttributes")
    _check(dcgm_handle)
    gpu = ENGINE.gpus[gpuId]
    attributes = dcgm_structs.c_dcgmDeviceAttributes_v3()
    attributes.identifiers.uuid = gpu.uuid.encode()
    attributes.identifiers.deviceName = gpu.name.encode()
    return attributes


def dcgmFieldGroupCreate(dcgm_handle: int, fieldIds: list[int], fieldGroupName: str) -> int:
    ENGINE.record("dcgmFieldGroupCreate")
    _check(dcgm_handle)
    group_id = max(ENGINE.field_groups, default=0) + 1
    ENGINE.field_groups[group_id] = tuple(fieldIds)
    return group_id


def dcgmFieldGroupDestroy(dcgm_handle: int, fieldGroupId: int) -> None:
    ENGINE.record("dcgmFieldGroupDestroy")
    _check(dcgm_handle)
    ENGINE.field_groups.pop(fieldGroupId, None)


def dcgmGroupCreate(dcgm_handle: int, type: int, groupName: str) -> int:
    ENGINE.record("dcgmGroupCreate")
    _check(dcgm_handle)
    group_id = max(ENGINE.groups, default=0) + 1
    ENGINE.groups[group_id] = type
    return group_id


def dcgmGetGpuInstanceHierarchy(dcgm_handle: int) -> dcgm_structs.c_dcgmMigHierarchy_v2:
    """Every GPU instance (parent: its GPU) and compute instance (parent: its GPU instance)."""
    ENGINE.record("dcgmGetGpuInstanceHierarchy")
    _check(dcgm_handle)
    hierarchy = dcgm_structs.c_dcgmMigHierarchy_v2()
    entries = []
    for eid, gpu_id, instance in ENGINE.instances():
        gpu = ENGINE.gpus[gpu_id]
        entries.append((dcgm_fields.DCGM_FE_GPU_I, eid, dcgm_fields.DCGM_FE_GPU, gpu_id, gpu, instance))
        entries.append((dcgm_fields.DCGM_FE_GPU_CI, eid, dcgm_fields.DCGM_FE_GPU_I, eid, gpu, instance))
    for i, (group, eid, parent_group, parent_id, gpu, instance) in enumerate(entries):
        entry = hierarchy.entityList[i]
        entry.entity.entityGroupId, entry.entity.entityId = group, eid
        entry.parent.entityGroupId, entry.parent.entityId = parent_group, parent_id
        entry.info.gpuUuid = gpu.uuid.encode()
        entry.info.nvmlGpuIndex = ENGINE.gpus.index(gpu)
        entry.info.nvmlInstanceId = instance.gpu_instance
        entry.info.nvmlComputeInstanceId = 0
        entry.info.nvmlProfileSlices = instance.slices
    hierarchy.count = len(entries)
    return hierarchy


def dcgmWatchFields(
    dcgm_handle: int, groupId: int, fieldGroupId: int, updateFreq: int, maxKeepAge: float, maxKeepSamples: int
) -> None:
    """`updateFreq` in microseconds, `maxKeepAge` in seconds, as in DCGM."""
    ENGINE.record("dcgmWatchFields")
    _check(dcgm_handle)
    fields = ENGINE.field_groups[fieldGroupId]
    if not ENGINE.profiling and any(f >= 1001 for f in fields):
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_MODULE_NOT_LOADED)
    ENGINE.watches.append((groupId, fields, updateFreq, maxKeepAge, maxKeepSamples))


def dcgmUpdateAllFields(dcgm_handle: int, waitForUpdate: int) -> None:
    ENGINE.record("dcgmUpdateAllFields")
    _check(dcgm_handle)
    ENGINE.sample()


def dcgmEntitiesGetLatestValues(
    dcgmHandle: int, entities: list[dcgm_structs.c_dcgmGroupEntityPair_t], fieldIds: list[int], flags: int
):
    """One `c_dcgmFieldValue_v2` per entity and field; a field never sampled has a non-OK status."""
    ENGINE.record("dcgmEntitiesGetLatestValues")
    _check(dcgmHandle)
    values = (dcgm_structs.c_dcgmFieldValue_v2 * (len(entities) * len(fieldIds)))()
    watched = {f for _, fields, *_ in ENGINE.watches for f in fields}
    i = 0
    for entity in entities:
        for field_id in fieldIds:
            v = values[i]
            i += 1
            v.version, v.entityGroupId, v.entityId, v.fieldId = (
                0x2000000,
                entity.entityGroupId,
                entity.entityId,
                field_id,
            )
            is_int = field_id == dcgm_fields.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
            v.fieldType = ord(dcgm_fields.DCGM_FT_INT64 if is_int else dcgm_fields.DCGM_FT_DOUBLE)
            cached = ENGINE.cache.get((entity.entityId, field_id))
            if entity.entityGroupId == dcgm_fields.DCGM_FE_GPU_I:
                known = entity.entityId < len(ENGINE.instances())
                cached = ENGINE.instance_cache.get((entity.entityId, field_id))
            else:
                known = entity.entityGroupId == dcgm_fields.DCGM_FE_GPU and entity.entityId < len(ENGINE.gpus)
            if not known:
                v.status = dcgm_structs.DCGM_ST_BADPARAM
            elif field_id not in watched:
                v.status = dcgm_structs.DCGM_ST_NOT_WATCHED
            elif cached is None:
                v.status = dcgm_structs.DCGM_ST_NO_DATA
            else:
                v.status, v.ts = cached.status, cached.ts_us
                if is_int:
                    v.value.i64 = int(cached.value)
                else:
                    v.value.dbl = float(cached.value)
    return values
