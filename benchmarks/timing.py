"""A tiny timing helper: one warm-up round, then the median of several rounds.

`ours` and `raw` (and `peer`, another library doing the same work, when given) are
measured interleaved (ours, raw, peer, ours, raw, peer, ...) in the same process so
that drift (CPU frequency, page cache, a growing store) hits all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Pair:
    """Median seconds per round of our library and of raw obstore doing the same work."""

    ours: float
    raw: float
    ops: int
    """Operations (or bytes, for throughput cases) done per round."""
    peer: float | None = None
    """Median seconds of the peer library (advanced-alchemy), when it was measured."""


def _contenders(
    ours: Callable[[int], T], raw: Callable[[int], T], peer: Callable[[int], T] | None
) -> list[tuple[str, Callable[[int], T]]]:
    """The callables of one round in their fixed order: ours, raw, then peer if given."""
    return [("ours", ours), ("raw", raw), *([("peer", peer)] if peer is not None else [])]


def _pair(times: dict[str, list[float]]) -> Pair:
    peer = times.get("peer")
    return Pair(
        statistics.median(times["ours"]),
        statistics.median(times["raw"]),
        0,
        statistics.median(peer) if peer else None,
    )


def measure(
    ours: Callable[[int], object],
    raw: Callable[[int], object],
    rounds: int,
    prepare: Callable[[int], object] | None = None,
    peer: Callable[[int], object] | None = None,
    prepare_peer: Callable[[int], object] | None = None,
) -> Pair:
    """Time `ours(round)`, `raw(round)` and `peer(round)`; round -1 is the discarded warm-up.

    `prepare(round)`, when given, runs untimed right before each `ours(round)`: it
    builds what the application would already hold at that point; `prepare_peer` does
    the same for `peer(round)`.
    """
    untimed = {"ours": prepare, "peer": prepare_peer}
    times: dict[str, list[float]] = {}
    for r in range(-1, rounds):
        for name, fn in _contenders(ours, raw, peer):
            setup = untimed.get(name)
            if setup is not None:
                setup(r)
            start = time.perf_counter()
            fn(r)
            elapsed = time.perf_counter() - start
            if r >= 0:
                times.setdefault(name, []).append(elapsed)
    return _pair(times)


async def measure_async(
    ours: Callable[[int], Awaitable[object]],
    raw: Callable[[int], Awaitable[object]],
    rounds: int,
    peer: Callable[[int], Awaitable[object]] | None = None,
) -> Pair:
    """Async twin of `measure`, run inside one event loop."""
    times: dict[str, list[float]] = {}
    for r in range(-1, rounds):
        for name, fn in _contenders(ours, raw, peer):
            start = time.perf_counter()
            await fn(r)
            elapsed = time.perf_counter() - start
            if r >= 0:
                times.setdefault(name, []).append(elapsed)
    return _pair(times)
