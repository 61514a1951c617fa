"""The fake DCGM bindings and the fake `amdsmi` say what the real ones say: names, values, errors.

DCGM's Python bindings ship only with the DCGM packages (no PyPI release), so the fake is checked
against values recorded from NVIDIA's sources:

- `dcgm_structs.py`: NVIDIA/DCGM testing/python3/dcgm_structs.py at
  ffde4e54bc7249a6039a5e6b45b395141e1217f9 (status codes and their strings, group and mode
  constants, the error class hierarchy, the field value, entity pair and MIG hierarchy structures);
  `c_dcgmDeviceAttributes_v3`, which DCGM 4 returns from `dcgmGetDeviceAttributes`, as a later
  version of the same file defines it (version, clockSets, thermalSettings, powerLimits,
  identifiers, memoryUsage, settings).
- `dcgm_agent.py`: NVIDIA/DCGM testing/python3/dcgm_agent.py at
  28bfbd4c97413d4aec249cdd9543a67d24f95b78 (parameter names of each call).
- `dcgm_fields.py`: NVIDIA/DCGM testing/python3/dcgm_fields.py at
  28bfbd4c97413d4aec249cdd9543a67d24f95b78 (field IDs, entity groups, field types).
- `pydcgm`: NVIDIA/DCGM testing/python3/DcgmHandle.py at e69b1d70620bcd20d76f6d63c4cd05850e2fb059
  and testing/python3/DcgmSystem.py at 28bfbd4c97413d4aec249cdd9543a67d24f95b78.

The real `amdsmi` installs from PyPI (the test extra pins it) but does not import without ROCm's
`libamd_smi.so`, so its installed sources are read instead of imported.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from ctypes import (
    Array,
    Structure,
    Union,
    c_byte,
    c_char,
    c_double,
    c_int,
    c_int64,
    c_short,
    c_uint,
    c_ushort,
)
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DCGM_STRUCTS_CONSTANTS = {
    "DCGM_ST_OK": 0,
    "DCGM_ST_BADPARAM": -1,
    "DCGM_ST_GENERIC_ERROR": -3,
    "DCGM_ST_NOT_SUPPORTED": -6,
    "DCGM_ST_INIT_ERROR": -7,
    "DCGM_ST_UNINITIALIZED": -10,
    "DCGM_ST_TIMEOUT": -11,
    "DCGM_ST_VER_MISMATCH": -12,
    "DCGM_ST_NO_DATA": -14,
    "DCGM_ST_STALE_DATA": -15,
    "DCGM_ST_NOT_WATCHED": -16,
    "DCGM_ST_NO_PERMISSION": -17,
    "DCGM_ST_GPU_IS_LOST": -18,
    "DCGM_ST_CONNECTION_NOT_VALID": -21,
    "DCGM_ST_LIBRARY_NOT_FOUND": -25,
    "DCGM_ST_MODULE_NOT_LOADED": -33,
    "DCGM_OPERATION_MODE_AUTO": 1,
    "DCGM_OPERATION_MODE_MANUAL": 2,
    "DCGM_GROUP_DEFAULT": 0,
    "DCGM_GROUP_EMPTY": 1,
    "DCGM_GROUP_DEFAULT_INSTANCES": 3,
    "DCGM_GROUP_ALL_GPUS": 0x7FFFFFFF,
    "DCGM_FV_FLAG_LIVE_DATA": 0x00000001,
    "DCGM_MAX_STR_LENGTH": 256,
    "DCGM_MAX_NUM_DEVICES": 32,
    "DCGM_MAX_HIERARCHY_INFO": 32 * 14,
}
DCGM_ERRORS = {  # status name: (generated class, `_error_code_to_string` entry)
    "DCGM_ST_OK": ("DCGMError_Ok", "Success"),
    "DCGM_ST_BADPARAM": ("DCGMError_Badparam", "Bad parameter passed to function"),
    "DCGM_ST_GENERIC_ERROR": ("DCGMError_GenericError", "Generic unspecified error"),
    "DCGM_ST_NOT_SUPPORTED": ("DCGMError_NotSupported", "Feature not supported"),
    "DCGM_ST_INIT_ERROR": ("DCGMError_InitError", "DCGM initialization error"),
    "DCGM_ST_UNINITIALIZED": ("DCGMError_Uninitialized", "Object is in an undefined state"),
    "DCGM_ST_TIMEOUT": ("DCGMError_Timeout", "Timeout"),
    "DCGM_ST_VER_MISMATCH": ("DCGMError_VerMismatch", "API version mismatch"),
    "DCGM_ST_NO_DATA": ("DCGMError_NoData", "No data is available"),
    "DCGM_ST_STALE_DATA": ("DCGMError_StaleData", "Data is considered stale"),
    "DCGM_ST_NOT_WATCHED": ("DCGMError_NotWatched", "Field is not being updated"),
    "DCGM_ST_NO_PERMISSION": ("DCGMError_NoPermission", "Not permissioned"),
    "DCGM_ST_GPU_IS_LOST": ("DCGMError_GpuIsLost", "GPU is unreachable"),
    "DCGM_ST_CONNECTION_NOT_VALID": (
        "DCGMError_ConnectionNotValid",
        "The connection to the host engine is not valid any longer",
    ),
    "DCGM_ST_LIBRARY_NOT_FOUND": ("DCGMError_LibraryNotFound", "DCGM library could not be found"),
    "DCGM_ST_MODULE_NOT_LOADED": (
        "DCGMError_ModuleNotLoaded",
        "This request is serviced by a module of DCGM that is not currently loaded",
    ),
}
_S = c_char * 256
DCGM_STRUCTS: dict[str, list[tuple[str, Any]]] = {  # a type, or a structure's name
    "c_dcgmGroupEntityPair_t": [("entityGroupId", c_uint), ("entityId", c_uint)],
    "c_dcgmFieldValue_v1_value": [
        ("i64", c_int64),
        ("dbl", c_double),
        ("str", c_char * 256),
        ("blob", c_byte * 4096),
    ],
    "c_dcgmFieldValue_v2": [
        ("version", c_uint),
        ("entityGroupId", c_uint),
        ("entityId", c_uint),
        ("fieldId", c_ushort),
        ("fieldType", c_short),
        ("status", c_int),
        ("unused", c_uint),
        ("ts", c_int64),
        ("value", "c_dcgmFieldValue_v1_value"),
    ],
    "c_dcgmDeviceIdentifiers_v1": [
        ("version", c_uint),
        ("brandName", _S),
        ("deviceName", _S),
        ("pciBusId", _S),
        ("serial", _S),
        ("uuid", _S),
        ("vbios", _S),
        ("inforomImageVersion", _S),
        ("pciDeviceId", c_uint),
        ("pciSubSystemId", c_uint),
        ("driverVersion", _S),
        ("virtualizationMode", c_uint),
    ],
    "c_dcgmDeviceAttributes_v3": [
        ("version", c_uint),
        ("clockSets", "c_dcgmDeviceSupportedClockSets_v1"),
        ("thermalSettings", "c_dcgmDeviceThermals_v1"),
        ("powerLimits", "c_dcgmDevicePowerLimits_v1"),
        ("identifiers", "c_dcgmDeviceIdentifiers_v1"),
        ("memoryUsage", "c_dcgmDeviceMemoryUsage_v1"),
        ("settings", "c_dcgmDeviceSettings_v2"),
    ],
    "c_dcgmMigEntityInfo_t": [
        ("gpuUuid", c_char * 128),
        ("nvmlGpuIndex", c_uint),
        ("nvmlInstanceId", c_uint),
        ("nvmlComputeInstanceId", c_uint),
        ("nvmlMigProfileId", c_uint),
        ("nvmlProfileSlices", c_uint),
    ],
    "c_dcgmMigHierarchyInfo_v2": [
        ("entity", "c_dcgmGroupEntityPair_t"),
        ("parent", "c_dcgmGroupEntityPair_t"),
        ("info", "c_dcgmMigEntityInfo_t"),
    ],
    "c_dcgmMigHierarchy_v2": [
        ("version", c_uint),
        ("count", c_uint),
        ("entityList", ("c_dcgmMigHierarchyInfo_v2", 32 * 14)),
    ],
}
ABRIDGED = {"c_dcgmDeviceIdentifiers_v1", "c_dcgmDeviceAttributes_v3"}
"""Structures the fake keeps only the fields of that tokenwatt reads (in the real order)."""
DCGM_AGENT_PARAMETERS = {
    "dcgmInit": [],
    "dcgmShutdown": [],
    "dcgmStartEmbedded": ["opMode"],
    "dcgmStopEmbedded": ["dcgm_handle"],
    "dcgmConnect_v2": ["ip_address", "connectParams", "version"],
    "dcgmDisconnect": ["dcgm_handle"],
    "dcgmGetAllSupportedDevices": ["dcgm_handle"],
    "dcgmGetDeviceAttributes": ["dcgm_handle", "gpuId"],
    "dcgmGetGpuInstanceHierarchy": ["dcgm_handle"],
    "dcgmGroupCreate": ["dcgm_handle", "type", "groupName"],
    "dcgmFieldGroupCreate": ["dcgm_handle", "fieldIds", "fieldGroupName"],
    "dcgmFieldGroupDestroy": ["dcgm_handle", "fieldGroupId"],
    "dcgmUpdateAllFields": ["dcgm_handle", "waitForUpdate"],
    "dcgmWatchFields": [
        "dcgm_handle", "groupId", "fieldGroupId", "updateFreq", "maxKeepAge", "maxKeepSamples"
    ],
    "dcgmEntitiesGetLatestValues": ["dcgmHandle", "entities", "fieldIds", "flags"],
}
DCGM_FIELDS = {
    "DCGM_FT_BINARY": "b",
    "DCGM_FT_DOUBLE": "d",
    "DCGM_FT_INT64": "i",
    "DCGM_FT_STRING": "s",
    "DCGM_FT_TIMESTAMP": "t",
    "DCGM_FE_NONE": 0,
    "DCGM_FE_GPU": 1,
    "DCGM_FE_VGPU": 2,
    "DCGM_FE_SWITCH": 3,
    "DCGM_FE_GPU_I": 4,
    "DCGM_FE_GPU_CI": 5,
    "DCGM_FI_DEV_NAME": 50,
    "DCGM_FI_DEV_UUID": 54,
    "DCGM_FI_DEV_POWER_USAGE": 155,
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 156,
    "DCGM_FI_DEV_POWER_USAGE_INSTANT": 157,
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 1001,
}
PYDCGM_PARAMETERS = {
    "DcgmHandle.__init__": [
        "self", "handle", "ipAddress", "opMode", "persistAfterDisconnect", "unixSocketPath", "timeoutMs"
    ],
    "DcgmHandle.GetSystem": ["self"],
    "DcgmHandle.Shutdown": ["self"],
    "DcgmSystem.__init__": ["self", "dcgmHandle"],
    "DcgmSystem.UpdateAllFields": ["self", "waitForUpdate"],
    "DcgmSystemDiscovery.__init__": ["self", "dcgmHandle"],
    "DcgmSystemDiscovery.GetAllSupportedGpuIds": ["self"],
    "DcgmSystemDiscovery.GetGpuAttributes": ["self", "gpuId"],
}


def _shape(t: Any) -> Any:
    """A ctypes field type as something comparable with the recorded one."""
    if isinstance(t, str):
        return t
    if isinstance(t, tuple):
        return (t[0], t[1])
    if issubclass(t, Array):
        element = t._type_
        if issubclass(element, Structure | Union):
            return (element.__name__, t._length_)
        return (_shape(element), t._length_)
    if issubclass(t, Structure | Union):
        return t.__name__
    return t._type_


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_dcgm_constants_and_errors_match_the_bindings(fake_dcgm: Any) -> None:
    import dcgm_fields
    import dcgm_structs

    constants = {n: v for n, v in vars(dcgm_structs).items() if n.startswith("DCGM_")}
    assert constants == DCGM_STRUCTS_CONSTANTS
    assert {n: v for n, v in vars(dcgm_fields).items() if n.startswith("DCGM_")} == DCGM_FIELDS
    for name, (class_name, text) in DCGM_ERRORS.items():
        code = constants[name]
        error = dcgm_structs.DCGMError(code)
        assert type(error).__name__ == class_name and error.value == code, name
        assert dcgm_structs.dcgmExceptionClass(code) is type(error)
        assert type(error)().value == code  # generated classes take no argument, as in DCGM
        assert str(error) == text, name
    assert dcgm_structs.dcgmExceptionClass(-9999) is None
    assert str(dcgm_structs.DCGMError(-9999)) == "DCGM Error with code -9999"


def test_dcgm_structures_have_the_real_fields(fake_dcgm: Any) -> None:
    import dcgm_structs

    for name, real in DCGM_STRUCTS.items():
        fake = [(field, _shape(t)) for field, t in getattr(dcgm_structs, name)._fields_]
        recorded = [(field, _shape(t)) for field, t in real]
        if name in ABRIDGED:
            assert fake == [f for f in recorded if f in fake] and len(fake) >= 2, name
        else:
            assert fake == recorded, name


def test_dcgm_calls_take_the_real_parameters(fake_dcgm: Any) -> None:
    import dcgm_agent
    import pydcgm

    calls = {n: f for n, f in vars(dcgm_agent).items() if n.startswith("dcgm") and callable(f)}
    assert {n: _parameters(f) for n, f in calls.items()} == DCGM_AGENT_PARAMETERS
    wrappers = {
        f"{c}.{m}": _parameters(getattr(getattr(pydcgm, c), m))
        for c in ("DcgmHandle", "DcgmSystem", "DcgmSystemDiscovery")
        for m, f in vars(getattr(pydcgm, c)).items()
        if callable(f)
    }
    assert wrappers == PYDCGM_PARAMETERS


# --- amdsmi: the installed package's sources --------------------------------------------------------


@pytest.fixture(scope="module")
def amdsmi_sources() -> dict[str, ast.Module]:
    """The real package's modules, parsed (importing it needs libamd_smi.so)."""
    spec = importlib.util.find_spec("amdsmi")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the amdsmi package is part of the test extra: pip install -e '.[test]'")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return {
        name: ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        for name in ("__init__", "amdsmi_interface", "amdsmi_wrapper", "amdsmi_exception")
    }


def _top_level_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _returned_keys(function: ast.FunctionDef) -> set[str]:
    """The string keys of the dict literals a function builds."""
    return {
        k.value
        for node in ast.walk(function)
        if isinstance(node, ast.Dict)
        for k in node.keys
        if isinstance(k, ast.Constant) and isinstance(k.value, str)
    }


def test_amdsmi_functions_and_their_results_match(
    amdsmi_sources: dict[str, ast.Module], fake_amdsmi: ModuleType
) -> None:
    exported = {
        alias.name
        for node in amdsmi_sources["__init__"].body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    real = _top_level_functions(amdsmi_sources["amdsmi_interface"])
    functions = [n for n, v in vars(fake_amdsmi).items() if n.startswith("amdsmi_") and callable(v)]
    assert "amdsmi_get_energy_count" in functions and "amdsmi_get_power_info" in functions
    for name in functions:
        assert name in exported, name
        assert [a.arg for a in real[name].args.args] == _parameters(getattr(fake_amdsmi, name)), name
    fake_amdsmi.SMI.gpus = [fake_amdsmi.FakeGpu("GPU-1")]
    fake_amdsmi.amdsmi_init()
    [handle] = fake_amdsmi.amdsmi_get_processor_handles()
    for name in ("amdsmi_get_energy_count", "amdsmi_get_power_info"):
        assert set(getattr(fake_amdsmi, name)(handle)) == _returned_keys(real[name]), name
    asic = set(fake_amdsmi.amdsmi_get_gpu_asic_info(handle))
    assert "market_name" in asic and asic <= _returned_keys(real["amdsmi_get_gpu_asic_info"])


def test_amdsmi_errors_match(amdsmi_sources: dict[str, ast.Module], fake_amdsmi: ModuleType) -> None:
    classes = {n.name: n for n in amdsmi_sources["amdsmi_exception"].body if isinstance(n, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in classes[name].bases] for name in classes}
    assert bases["AmdSmiException"] == ["Exception"]
    assert bases["AmdSmiLibraryException"] == ["AmdSmiException"]
    assert issubclass(fake_amdsmi.AmdSmiLibraryException, fake_amdsmi.AmdSmiException)
    library_error = classes["AmdSmiLibraryException"]
    [real_init] = [f for f in library_error.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
    assert [a.arg for a in real_init.args.args] == _parameters(fake_amdsmi.AmdSmiLibraryException.__init__)
    status = {
        t.id: node.value.value
        for node in amdsmi_sources["amdsmi_wrapper"].body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id.startswith("AMDSMI_STATUS_")
    }
    info = {
        ast.unparse(k).removeprefix("amdsmi_wrapper."): v.value
        for node in ast.walk(library_error)
        if isinstance(node, ast.Dict)
        for k, v in zip(node.keys, node.values, strict=True)
        if k is not None and isinstance(v, ast.Constant)
    }
    codes = {n: v for n, v in vars(fake_amdsmi).items() if n.startswith("AMDSMI_STATUS_")}
    assert codes
    for name, code in codes.items():
        assert status[name] == code, name
        error = fake_amdsmi.AmdSmiLibraryException(-code)  # the library returns negative codes too
        assert error.err_code == code
        assert str(error) == f"Error code:\n\t{code} | {info[name]}", name
