"""Processes that answer as-of questions, beside analytics and below it in priority.

An as-of answer reads a few thousand rows and folds the participants' states they hold in
Python (``asof.answer_in_worker``). In a thread of analytics that work held the interpreter
the live projector runs in: on two cores, four analysts asking as-of questions made every
event wait several times longer to be counted. It runs here instead, in worker processes
of their own (started with the first as-of question, one per ``ENGAGE_AS_OF_CONCURRENCY``
slot, each with its own connection to PostgreSQL and its own event loop). They run under
Linux's ``SCHED_IDLE`` policy (elsewhere ``NICE`` lower), so the projector, PostgreSQL and
NATS get the processors first: the kernel gives an idle-policy task the smallest share of
any, and takes the processor from it as soon as a normal task wakes (a niced task keeps a
larger share, and may keep the processor a while after the live path wakes). They log
through the same redacting renderer as the service.

A worker that dies (killed, out of memory) breaks the pool: a new one is started, and the
question that met it is asked once more. A question whose asker is gone is dropped if it
has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, TypeVar

from shared.logging import configure_logging, get_logger

log = get_logger("engage.analytics.asof")

T = TypeVar("T")
NICE = 10  # where SCHED_IDLE is not: added to the workers' niceness (a tenth of a busy core's share)

# In a worker process: its own event loop, kept from one call to the next with what it opened
# (e.g. a connection pool).
_loop: asyncio.AbstractEventLoop | None = None


def on_worker_loop(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run ``fn(*args)`` to its end on the calling worker's own event loop."""
    global _loop  # one loop per worker process, made on its first call
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(fn(*args))


def _start_worker(log_format: str, log_level: str) -> None:
    """In each new worker: the lowest priority, and logs through the same redacting renderer."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # lowering one's own is always allowed
    except (AttributeError, OSError):  # not Linux
        with contextlib.suppress(OSError):  # a platform that refuses it: the worker runs at normal priority
            os.nice(NICE)
    configure_logging(log_format, log_level)


class Workers:
    """A pool of ``processes`` worker processes for pure functions of picklable arguments."""

    def __init__(self, processes: int, log_format: str = "auto", log_level: str = "info") -> None:
        self.processes = max(1, processes)
        self._logging = (log_format, log_level)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # "spawn": a fork of a process running an event loop and threads can inherit held locks.
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=self._logging,
            )
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker process; a pool broken by a dead worker is replaced once."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), partial(fn, *args))
        except BrokenProcessPool:
            log.warning("as_of_worker_lost", reason="a worker process died; starting a new one")
            self.close()
        return await loop.run_in_executor(self._pool(), partial(fn, *args))

    def close(self, wait: bool = False) -> None:
        """Stop the workers; questions not yet started are dropped. With ``wait``, until they have exited."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)
