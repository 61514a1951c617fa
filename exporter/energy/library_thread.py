"""The one thread in which a source talks to its blocking C library.

DCGM, NVML and amdsmi are ctypes bindings: every call blocks, and their handles are not safe to
share between threads (DCGM's own reader serializes start-up and shutdown with a lock). Each source
therefore owns a single worker thread: calls never run on the event loop and never overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class LibraryThread:
    """Runs blocking calls one at a time in a dedicated thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tokenwatt-{name}")

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """Stop the thread once the call in progress, if any, has returned."""
        self._executor.shutdown(wait=False, cancel_futures=True)
