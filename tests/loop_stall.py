"""How long an event loop is kept from running: a ticker coroutine that measures it.

`async with LoopStallProbe() as probe:` runs a coroutine that wakes every 5 ms; the
lateness of each wake-up is time the loop could not run. Part of that lateness can be
the machine's, not the code's: on a busy CI host the loop's thread waits, runnable, for
a CPU that other processes hold. That wait is read from the kernel's scheduler
statistics for the thread (`/proc/thread-self/schedstat`, Linux) and subtracted, so
`probe.stall` is what the code under test did to the loop: running on it, or holding
the GIL it needs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import TracebackType

__all__ = ("LoopStallProbe",)

_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _waited_for_cpu() -> float:
    """Seconds this thread has spent runnable but not running (0 where unknown)."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopStallProbe:
    """Measure the longest stall of the running event loop while the block runs.

    Attributes:
        stall: The longest time the loop could not run, CPU starvation excluded.
        gap: The longest raw gap between two ticks (CPU starvation included).
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.stall = 0.0
        self.gap = 0.0
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last, waited = time.perf_counter(), _waited_for_cpu()
        while not self._done.is_set():
            await asyncio.sleep(self.interval)
            now, waiting = time.perf_counter(), _waited_for_cpu()
            self.gap = max(self.gap, now - last)
            self.stall = max(self.stall, (now - last) - (waiting - waited))
            last, waited = now, waiting

    async def __aenter__(self) -> LoopStallProbe:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(2 * self.interval)  # ticking before the work starts
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        assert self._task is not None
        await self._task
