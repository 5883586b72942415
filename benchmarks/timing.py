"""A tiny timing helper: one warm-up round, then the median of several rounds.

`ours` and `raw` are measured interleaved (ours, raw, ours, raw, ...) in the same
process so that drift (CPU frequency, page cache, a growing store) hits both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Pair:
    """Median seconds per round of our library and of raw obstore doing the same work."""

    ours: float
    raw: float
    ops: int
    """Operations (or bytes, for throughput cases) done per round."""


def measure(
    ours: Callable[[int], object],
    raw: Callable[[int], object],
    rounds: int,
    prepare: Callable[[int], object] | None = None,
) -> Pair:
    """Time `ours(round)` and `raw(round)`; round -1 is the warm-up and is discarded.

    `prepare(round)`, when given, runs untimed right before each `ours(round)`: it
    builds what the application would already hold at that point.
    """
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for r in range(-1, rounds):
        for name, fn in (("ours", ours), ("raw", raw)):
            if prepare is not None and fn is ours:
                prepare(r)
            start = time.perf_counter()
            fn(r)
            elapsed = time.perf_counter() - start
            if r >= 0:
                times[name].append(elapsed)
    return Pair(statistics.median(times["ours"]), statistics.median(times["raw"]), 0)


async def measure_async(
    ours: Callable[[int], Awaitable[object]],
    raw: Callable[[int], Awaitable[object]],
    rounds: int,
) -> Pair:
    """Async twin of `measure`, run inside one event loop."""
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for r in range(-1, rounds):
        for name, fn in (("ours", ours), ("raw", raw)):
            start = time.perf_counter()
            await fn(r)
            elapsed = time.perf_counter() - start
            if r >= 0:
                times[name].append(elapsed)
    return Pair(statistics.median(times["ours"]), statistics.median(times["raw"]), 0)
