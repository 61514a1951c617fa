"""The fake `pynvml` says what the real `nvidia-ml-py` says: same names, same values, same errors."""

from __future__ import annotations

import importlib
import inspect
import sys
from types import ModuleType

import pytest


@pytest.fixture
def real_pynvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    try:
        module = importlib.import_module("pynvml")
    except ImportError:
        pytest.fail("nvidia-ml-py is part of the dev extra: pip install -e '.[dev]'")
    return module


def test_constants_and_error_classes_match(real_pynvml: ModuleType, fake_nvml: ModuleType) -> None:
    constants = [n for n in vars(fake_nvml) if n.startswith("NVML_")]
    assert len(constants) >= 25
    for name in constants:
        assert getattr(real_pynvml, name) == getattr(fake_nvml, name), name
    errors = [n for n in vars(fake_nvml) if n.startswith("NVMLError_")]
    assert "NVMLError_NotSupported" in errors and "NVMLError_LibraryNotFound" in errors
    for name in errors:
        real, fake = getattr(real_pynvml, name), getattr(fake_nvml, name)
        assert real.__mro__[1].__name__ == fake.__mro__[1].__name__ == "NVMLError"
        assert real(0).value == fake(0).value  # generated classes ignore the argument, as in the real module
        code = fake(0).value
        assert real_pynvml.nvmlExceptionClass(code).__name__ == name
        assert type(fake_nvml.NVMLError(code)) is fake
        assert str(real_pynvml.NVMLError(code)) == str(fake_nvml.NVMLError(code)), name


def test_functions_and_structures_match(real_pynvml: ModuleType, fake_nvml: ModuleType) -> None:
    functions = [n for n, v in vars(fake_nvml).items() if n.startswith("nvml") and callable(v)]
    assert "nvmlDeviceGetTotalEnergyConsumption" in functions and "nvmlDeviceGetFieldValues" in functions
    for name in functions:
        real = inspect.signature(getattr(real_pynvml, name)).parameters
        fake = inspect.signature(getattr(fake_nvml, name)).parameters
        assert list(real) == list(fake), name
    structs = ("c_nvmlFieldValue_t", "c_nvmlValue_t", "c_nvmlProcessUtilizationSample_t")
    for struct in (*structs, "c_nvmlProcessUtilizationInfo_v1_t", "c_nvmlDeviceAttributes"):
        real_fields = [(n, t.__name__) for n, t in getattr(real_pynvml, struct)._fields_]
        fake_fields = [(n, t.__name__) for n, t in getattr(fake_nvml, struct)._fields_]
        assert real_fields == fake_fields, struct
