"""CPU-bound work off the event loop, within a process-wide memory budget.

Image decoding and encoding are CPU-bound and hold large buffers for a while. Two
process-wide limits keep them from hurting the rest of the application:

* **threads**: every image job runs on a small dedicated pool of threads
  (`ProcessingLimits.workers`, one by default). Async callers await the job, so the
  event loop keeps serving while it runs; sync callers block until it is done, as any
  sync call does. Keeping the work on a few known threads also keeps memory bounded in
  practice: glibc gives each thread its own heap and keeps what a thread freed for that
  thread, so jobs spread over many request threads would each leave their peak behind.
* **memory**: each job states, before it allocates anything, how much memory it will
  hold at most (image processing estimates it from the image header), and waits until
  that much of the budget is free. Jobs are admitted first come, first served, so
  concurrent jobs never hold more than `ProcessingLimits.max_memory` together, however
  many uploads arrive at once; a job larger than the whole budget runs alone.

This is CPU-bound work, which is what threads are for: the I/O itself never goes
through a thread pool (it uses obstore's native sync and async calls).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ._errors import ConfigurationError

__all__ = (
    "DEFAULT_PROCESSING_MEMORY",
    "DEFAULT_PROCESSING_WORKERS",
    "ProcessingLimits",
    "hold_memory",
    "processing_limits",
    "run_in_worker",
    "run_in_worker_async",
    "set_processing_limits",
)

_T = TypeVar("_T")

DEFAULT_PROCESSING_MEMORY = 384 * 1024 * 1024
"""Default `ProcessingLimits.max_memory`: 384 MiB for all image jobs of the process."""
DEFAULT_PROCESSING_WORKERS = 1
"""Default `ProcessingLimits.workers`: one image at a time, on one thread."""


@dataclass(frozen=True)
class ProcessingLimits:
    """Process-wide limits on image processing (decoding, resizing, encoding).

    Args:
        max_memory: Bytes that all image jobs of the process may hold together. Each
            job reserves its estimate (see `ImagePolicy.max_memory`) before it decodes,
            and waits while the reservations of running jobs leave too little; a job
            estimated above `max_memory` waits until it can run alone.
        workers: Threads that run image jobs, for sync and async callers alike; the
            event loop never decodes an image itself. More workers process more images
            at once (Pillow releases the GIL), within `max_memory`; each worker thread
            also keeps the memory it freed for its next job (glibc's per-thread heaps),
            so the resident size can reach `workers x max_memory`.

    Raises:
        ConfigurationError: For a non-positive value.

    Example:
        >>> from sqlalchemy_obstore.processing import ProcessingLimits
        >>> ProcessingLimits(max_memory=512 * 1024 * 1024, workers=2).workers
        2
    """

    max_memory: int = DEFAULT_PROCESSING_MEMORY
    workers: int = DEFAULT_PROCESSING_WORKERS

    def __post_init__(self) -> None:
        for name in ("max_memory", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive int, not {value!r}.")


class _MemoryLimiter:
    """A first-come-first-served counting semaphore weighted in bytes, for threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._ready = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = min(max(amount, 0), self.capacity)  # too large: wait to run alone
        ticket = object()
        with self._ready:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.used + amount > self.capacity:
                    self._ready.wait()
            except BaseException:
                self._queue.remove(ticket)
                self._ready.notify_all()
                raise
            self._queue.popleft()
            self.used += amount
            self._ready.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._ready:
                self.used -= amount
                self._ready.notify_all()


_THREAD_NAME = "sqlalchemy-obstore-image"
_lock = threading.Lock()
_limits = ProcessingLimits()
_limiter = _MemoryLimiter(_limits.max_memory)
_pool: ThreadPoolExecutor | None = None


def processing_limits() -> ProcessingLimits:
    """The process-wide image processing limits in force.

    Example:
        >>> from sqlalchemy_obstore.processing import processing_limits
        >>> processing_limits().max_memory >= 1
        True
    """
    return _limits


def set_processing_limits(limits: ProcessingLimits) -> ProcessingLimits:
    """Replace the process-wide image processing limits; returns the previous ones.

    Jobs already admitted finish under the limits they were admitted with; new jobs
    use the new ones. Call it at start-up (or in a test, restoring the returned value).

    Args:
        limits: The new limits.

    Returns:
        The limits in force before the call.

    Raises:
        ConfigurationError: If `limits` is not a `ProcessingLimits`.

    Example:
        >>> from sqlalchemy_obstore.processing import ProcessingLimits, set_processing_limits
        >>> previous = set_processing_limits(ProcessingLimits(max_memory=64 * 1024 * 1024))
        >>> _ = set_processing_limits(previous)
    """
    global _limits, _limiter, _pool
    if not isinstance(limits, ProcessingLimits):
        raise ConfigurationError(f"set_processing_limits takes ProcessingLimits, not {limits!r}.")
    with _lock:
        previous, _limits = _limits, limits
        if limits.max_memory != previous.max_memory:
            _limiter = _MemoryLimiter(limits.max_memory)
        if limits.workers != previous.workers and _pool is not None:
            _pool.shutdown(wait=False)  # running jobs finish; new ones use a new pool
            _pool = None
    return previous


@contextmanager
def hold_memory(amount: int) -> Iterator[None]:
    """Reserve `amount` bytes of the process-wide budget while the block runs (blocking)."""
    with _limiter.hold(amount):
        yield


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_limits.workers, thread_name_prefix=_THREAD_NAME)
        return _pool


def run_in_worker(job: Callable[[], _T]) -> _T:
    """Run `job` on an image worker thread and wait for its result (blocking).

    Called from an image worker thread itself, the job runs right there.
    """
    if threading.current_thread().name.startswith(_THREAD_NAME):
        return job()
    return _executor().submit(job).result()


async def run_in_worker_async(job: Callable[[], _T]) -> _T:
    """Run `job` on an image worker thread and await its result; the loop keeps running.

    If the awaiting task is cancelled, a job that has not started yet never starts; a
    job already running finishes in its thread (releasing what it holds) and its
    result is dropped.
    """
    return await asyncio.get_running_loop().run_in_executor(_executor(), job)


def _after_fork() -> None:  # pragma: no cover - runs in a forked child
    # A forked child inherits neither the pool's threads nor the holders of memory.
    global _lock, _limiter, _pool
    _lock = threading.Lock()
    _limiter = _MemoryLimiter(_limits.max_memory)
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
