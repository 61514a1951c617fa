"""The one thread in which a source talks to its blocking C library.

DCGM, NVML and amdsmi are ctypes bindings: every call blocks, and their handles are not safe to
share between threads (DCGM's own reader serializes start-up and shutdown with a lock). Each source
therefore owns a single worker thread: calls never run on the event loop and never overlap.

A call can hang (a GPU that fell off the bus, a host engine that stopped answering). The caller's
deadline cancels the wait; the worker still stuck inside the C call is then abandoned (it exits
whenever the call returns, and never blocks the process's exit) and a fresh worker takes the next
calls, so one hung call costs one failed read, not every read after it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

import structlog

P = ParamSpec("P")
R = TypeVar("R")

log = structlog.get_logger("tokenwatt.energy")

_Job = tuple[Future[Any], Callable[[], Any]] | None


class _Worker:
    """A daemon thread running queued calls in order; `None` on the queue ends it."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:  # handed to the awaiting caller, whatever it is
                future.set_exception(e)
            else:
                future.set_result(result)


class LibraryThread:
    """Runs blocking calls one at a time in a dedicated thread, replaced when a call hangs."""

    def __init__(self, name: str) -> None:
        self._name = f"tokenwatt-{name}"
        self._worker = _Worker(self._name)
        self.abandoned = 0
        """Workers left behind inside a call that overran its caller's deadline."""

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        future: Future[R] = Future()
        worker = self._worker
        worker.jobs.put((future, lambda: fn(*args, **kwargs)))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.running() and worker is self._worker:
                self._replace(worker, getattr(fn, "__name__", repr(fn)))
            raise

    def _replace(self, worker: _Worker, call: str) -> None:
        fresh = _Worker(self._name)
        while True:  # calls queued behind the hung one move to the fresh worker
            try:
                job = worker.jobs.get_nowait()
            except queue.Empty:
                break
            fresh.jobs.put(job)
        worker.jobs.put(None)
        self.abandoned += 1
        self._worker = fresh
        log.error("library call hung: worker thread abandoned", thread=self._name, call=call)

    def close(self) -> None:
        """Stop the thread once the call in progress, if any, has returned."""
        self._worker.jobs.put(None)
