"""Fake `dcgm_structs`: status codes, the `DCGMError` hierarchy, the value structures, `_dcgmInit`.

As in DCGM, `DCGMError(code)` becomes the generated subclass `DCGMError_<CamelCase name>`
(`DCGMError_ConnectionNotValid` for `DCGM_ST_CONNECTION_NOT_VALID`), found with
`dcgmExceptionClass(code)`, with the code in `.value`.
"""

from __future__ import annotations

import string
import sys
from ctypes import Structure, Union, c_byte, c_char, c_double, c_int, c_int64, c_short, c_uint, c_ushort
from typing import ClassVar

from fake_hostengine import ENGINE

DCGM_ST_OK = 0
DCGM_ST_BADPARAM = -1
DCGM_ST_GENERIC_ERROR = -3
DCGM_ST_NOT_SUPPORTED = -6
DCGM_ST_INIT_ERROR = -7
DCGM_ST_UNINITIALIZED = -10
DCGM_ST_TIMEOUT = -11
DCGM_ST_VER_MISMATCH = -12
DCGM_ST_NO_DATA = -14
DCGM_ST_STALE_DATA = -15
DCGM_ST_NOT_WATCHED = -16
DCGM_ST_NO_PERMISSION = -17
DCGM_ST_GPU_IS_LOST = -18
DCGM_ST_CONNECTION_NOT_VALID = -21
DCGM_ST_LIBRARY_NOT_FOUND = -25
DCGM_ST_MODULE_NOT_LOADED = -33

DCGM_OPERATION_MODE_AUTO = 1
DCGM_OPERATION_MODE_MANUAL = 2
DCGM_GROUP_DEFAULT = 0
DCGM_GROUP_EMPTY = 1
DCGM_GROUP_DEFAULT_INSTANCES = 3
"""A group of every GPU instance of the node."""
DCGM_GROUP_ALL_GPUS = 0x7FFFFFFF
DCGM_FV_FLAG_LIVE_DATA = 0x00000001
DCGM_MAX_STR_LENGTH = 256


class DCGMError(Exception):
    _valClassMapping: ClassVar[dict[int, type[DCGMError]]] = {}
    value: int

    def __new__(cls, value: int) -> DCGMError:
        if cls is DCGMError:
            cls = DCGMError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"DCGM Error with code {self.value}")


_ERROR_STRINGS = {
    DCGM_ST_OK: "Success",
    DCGM_ST_BADPARAM: "Bad parameter passed to function",
    DCGM_ST_GENERIC_ERROR: "Generic unspecified error",
    DCGM_ST_NOT_SUPPORTED: "Feature not supported",
    DCGM_ST_INIT_ERROR: "DCGM initialization error",
    DCGM_ST_UNINITIALIZED: "Object is in an undefined state",
    DCGM_ST_TIMEOUT: "Timeout",
    DCGM_ST_VER_MISMATCH: "API version mismatch",
    DCGM_ST_NO_DATA: "No data is available",
    DCGM_ST_STALE_DATA: "Data is considered stale",
    DCGM_ST_NOT_WATCHED: "Field is not being updated",
    DCGM_ST_NO_PERMISSION: "Not permissioned",
    DCGM_ST_GPU_IS_LOST: "GPU is unreachable",
    DCGM_ST_CONNECTION_NOT_VALID: "The connection to the host engine is not valid any longer",
    DCGM_ST_LIBRARY_NOT_FOUND: "DCGM library could not be found",
    DCGM_ST_MODULE_NOT_LOADED: "This request is serviced by a module of DCGM that is not currently loaded",
}
"""The real module's `_error_code_to_string` (it asks libdcgm for codes it does not list)."""


def _extractDCGMErrorsAsClasses() -> None:
    this_module = sys.modules[__name__]
    for name in [n for n in dir(this_module) if n.startswith("DCGM_ST_")]:
        class_name = "DCGMError_" + string.capwords(name.replace("DCGM_ST_", ""), "_").replace("_", "")
        code = getattr(this_module, name)

        def gen_new(val):
            def new(typ):
                return DCGMError.__new__(typ, val)

            return new

        cls = type(class_name, (DCGMError,), {"__new__": gen_new(code)})
        cls.__module__ = __name__
        setattr(this_module, class_name, cls)
        DCGMError._valClassMapping[code] = cls


_extractDCGMErrorsAsClasses()


def dcgmExceptionClass(error_code: int) -> type[DCGMError] | None:
    return DCGMError._valClassMapping.get(error_code)


def _dcgmCheckReturn(ret: int) -> int:
    if ret != DCGM_ST_OK:
        raise DCGMError(ret)
    return ret


def _dcgmInit(libDcgmPath: str | None = None) -> None:
    """Loads libdcgm.so.4 (here: fails when the engine says the library is missing)."""
    ENGINE.record("_dcgmInit")
    if not ENGINE.library_found:
        _dcgmCheckReturn(DCGM_ST_LIBRARY_NOT_FOUND)


class c_dcgmGroupEntityPair_t(Structure):
    _fields_: ClassVar = [("entityGroupId", c_uint), ("entityId", c_uint)]


class c_dcgmFieldValue_v1_value(Union):
    _fields_: ClassVar = [
        ("i64", c_int64),
        ("dbl", c_double),
        ("str", c_char * DCGM_MAX_STR_LENGTH),
        ("blob", c_byte * 4096),
    ]


class c_dcgmFieldValue_v2(Structure):
    _fields_: ClassVar = [
        ("version", c_uint),
        ("entityGroupId", c_uint),
        ("entityId", c_uint),
        ("fieldId", c_ushort),
        ("fieldType", c_short),
        ("status", c_int),
        ("unused", c_uint),
        ("ts", c_int64),
        ("value", c_dcgmFieldValue_v1_value),
    ]


class c_dcgmDeviceIdentifiers_v1(Structure):
    _fields_: ClassVar = [
        ("version", c_uint),
        ("brandName", c_char * DCGM_MAX_STR_LENGTH),
        ("deviceName", c_char * DCGM_MAX_STR_LENGTH),
        ("pciBusId", c_char * DCGM_MAX_STR_LENGTH),
        ("serial", c_char * DCGM_MAX_STR_LENGTH),
        ("uuid", c_char * DCGM_MAX_STR_LENGTH),
    ]


class c_dcgmDeviceAttributes_v3(Structure):
    _fields_: ClassVar = [("version", c_uint), ("identifiers", c_dcgmDeviceIdentifiers_v1)]


class c_dcgmMigEntityInfo_t(Structure):
    _fields_: ClassVar = [
        ("gpuUuid", c_char * 128),
        ("nvmlGpuIndex", c_uint),
        ("nvmlInstanceId", c_uint),
        ("nvmlComputeInstanceId", c_uint),
        ("nvmlMigProfileId", c_uint),
        ("nvmlProfileSlices", c_uint),
    ]


class c_dcgmMigHierarchyInfo_v2(Structure):
    _fields_: ClassVar = [
        ("entity", c_dcgmGroupEntityPair_t),
        ("parent", c_dcgmGroupEntityPair_t),
        ("info", c_dcgmMigEntityInfo_t),
    ]


DCGM_MAX_NUM_DEVICES = 32
DCGM_MAX_HIERARCHY_INFO = DCGM_MAX_NUM_DEVICES * 14


class c_dcgmMigHierarchy_v2(Structure):
    _fields_: ClassVar = [
        ("version", c_uint),
        ("count", c_uint),
        ("entityList", c_dcgmMigHierarchyInfo_v2 * DCGM_MAX_HIERARCHY_INFO),
    ]
