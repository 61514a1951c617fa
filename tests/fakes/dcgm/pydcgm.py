"""Fake `pydcgm`: the high-level wrappers tokenwatt uses, `DcgmHandle` and `DcgmSystem`.

`DcgmHandle(ipAddress=..., unixSocketPath=..., opMode=..., timeoutMs=...)` connects as the real one
does (`_dcgmInit`, `dcgmInit`, then embedded start or connect), keeping the raw handle in `.handle`.
"""

from __future__ import annotations

import dcgm_agent
import dcgm_structs


class DcgmSystemDiscovery:
    def __init__(self, dcgmHandle: DcgmHandle) -> None:
        self._dcgmHandle = dcgmHandle

    def GetAllSupportedGpuIds(self) -> list[int]:
        return dcgm_agent.dcgmGetAllSupportedDevices(self._dcgmHandle.handle)

    def GetGpuAttributes(self, gpuId: int) -> dcgm_structs.c_dcgmDeviceAttributes_v3:
        return dcgm_agent.dcgmGetDeviceAttributes(self._dcgmHandle.handle, gpuId)


class DcgmSystem:
    def __init__(self, dcgmHandle: DcgmHandle) -> None:
        self._dcgmHandle = dcgmHandle
        self.discovery = DcgmSystemDiscovery(dcgmHandle)

    def UpdateAllFields(self, waitForUpdate: int) -> None:
        dcgm_agent.dcgmUpdateAllFields(self._dcgmHandle.handle, waitForUpdate)


class DcgmHandle:
    def __init__(
        self,
        handle: int | None = None,
        ipAddress: str | None = None,
        opMode: int = dcgm_structs.DCGM_OPERATION_MODE_AUTO,
        persistAfterDisconnect: bool = False,
        unixSocketPath: str | None = None,
        timeoutMs: int = 0,
    ) -> None:
        self.isEmbedded = False
        if handle is not None:
            self.handle = handle
            return
        if ipAddress is not None and unixSocketPath is not None:
            raise dcgm_structs.dcgmExceptionClass(dcgm_structs.DCGM_ST_BADPARAM)
        dcgm_structs._dcgmInit()
        dcgm_agent.dcgmInit()
        if ipAddress is None and unixSocketPath is None:
            self.handle = dcgm_agent.dcgmStartEmbedded(opMode)
            self.isEmbedded = True
            return
        address = ipAddress if ipAddress is not None else f"unix://{unixSocketPath}"
        self.handle = dcgm_agent.dcgmConnect_v2(address, None)

    def GetSystem(self) -> DcgmSystem:
        return DcgmSystem(self)

    def Shutdown(self) -> None:
        if self.isEmbedded:
            dcgm_agent.dcgmStopEmbedded(self.handle)
        else:
            dcgm_agent.dcgmDisconnect(self.handle)
