"""Timing: every contender of a case, round by round, in wall time and in CPU time.

A case has several contenders doing the same operations: ours, raw obstore, raw obstore
doing the same work as ours, the async-bridge baseline, a peer library. One warm-up
round runs each of them once (discarded); then every timed round runs each of them once,
in an order that rotates by one place every round (round 0: A B C, round 1: B C A,
round 2: C A B, ...), so no contender always runs first, right after another one or
last. Before each contender's turn the cyclic garbage collector runs untimed, so every
turn starts from the same heap state and pays only for the garbage it makes itself.

Each turn records both clocks:

- wall time, `time.perf_counter()`;
- CPU time of the whole process, `time.process_time()` (user + system time of every
  thread: obstore's runtime threads and aiosqlite's thread included, a server in
  another process not). On a shared machine CPU time stays within a few percent where
  wall time swings by tens of percent, so for cases that take microseconds per
  operation it is the steadier measure.

Ratios are taken per round (ours in round r over raw in round r: the two ran seconds
apart) and reported as their median and their min-max over the rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

#: Operations per round that a case needs at least when its raw baseline takes less than
#: FAST_SECONDS of CPU time per operation.
FAST_OPS = 10_000
FAST_SECONDS = 10e-6

Turn = Callable[[int], object]
AsyncTurn = Callable[[int], Awaitable[object]]


@dataclass
class Samples:
    """Seconds per timed round of one contender (index = round)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


@dataclass
class Spread:
    """The median and the min-max of a list of values."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


def rotation(names: list[str], rounds: int) -> list[list[str]]:
    """The order of every timed round: `names` rotated by one place per round."""
    k = len(names)
    return [names[r % k :] + names[: r % k] for r in range(rounds)]


def paired_ratios(top: list[float], bottom: list[float]) -> Spread:
    """Median and min-max of `top[r] / bottom[r]` over the rounds r."""
    return Spread.of([t / b for t, b in zip(top, bottom, strict=True)])


def _turns(
    names: list[str],
    rounds: int,
    prepare: Mapping[str, Turn] | None,
    samples: dict[str, Samples],
) -> Iterator[tuple[str, int]]:
    """Yield `(contender, round)` for each turn, timing what the caller does between yields.

    Round -1 (the warm-up, in the given order) is not recorded; timed rounds follow
    `rotation`. `prepare[name](round)` and a `gc.collect()` run untimed before each turn.
    """
    prepare = prepare or {}
    for r, order in [(-1, list(names)), *enumerate(rotation(names, rounds))]:
        for name in order:
            if (setup := prepare.get(name)) is not None:
                setup(r)
            gc.collect()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            yield name, r
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if r >= 0:
                samples[name].wall.append(wall)
                samples[name].cpu.append(cpu)


def measure(
    contenders: Mapping[str, Turn],
    rounds: int,
    prepare: Mapping[str, Turn] | None = None,
) -> dict[str, Samples]:
    """Time every contender `fn(round)` once per round; round -1 is the warm-up.

    `prepare[name](round)`, when given, runs untimed right before `name`'s turn: it
    builds what the application would already hold at that point (files just loaded).
    """
    samples = {name: Samples() for name in contenders}
    for name, r in _turns(list(contenders), rounds, prepare, samples):
        contenders[name](r)
    return samples


async def measure_async(
    contenders: Mapping[str, AsyncTurn],
    rounds: int,
    prepare: Mapping[str, Turn] | None = None,
) -> dict[str, Samples]:
    """`measure` for coroutine functions, all awaited inside one running event loop."""
    samples = {name: Samples() for name in contenders}
    for name, r in _turns(list(contenders), rounds, prepare, samples):
        await contenders[name](r)
    return samples
