"""A hung C-library call costs one read: its worker is abandoned and the next call runs at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from exporter.energy.library_thread import LibraryThread


async def test_a_hung_call_is_abandoned_and_the_next_call_runs_on_a_fresh_thread() -> None:
    thread = LibraryThread("test")
    release = threading.Event()  # stands in for a C call on a GPU that fell off the bus
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await thread.call(release.wait)
    assert thread.abandoned == 1
    async with asyncio.timeout(2.0):  # would wait forever behind the hung call without the fresh worker
        name = await thread.call(lambda: threading.current_thread().name)
    assert name == "tokenwatt-test"
    hung = [t for t in threading.enumerate() if t.name == "tokenwatt-test"]
    assert len(hung) == 2 and all(t.daemon for t in hung)  # daemon threads never block the process's exit
    release.set()
    thread.close()


async def test_calls_run_one_at_a_time_in_order_and_errors_reach_the_caller() -> None:
    thread = LibraryThread("order")
    seen: list[int] = []
    await asyncio.gather(*(thread.call(seen.append, i) for i in range(20)))
    assert seen == list(range(20))

    def broken() -> None:
        raise OSError("NVML_ERROR_GPU_IS_LOST")

    with pytest.raises(OSError, match="GPU_IS_LOST"):
        await thread.call(broken)
    assert await thread.call(lambda: 7) == 7
    assert thread.abandoned == 0
    thread.close()
