"""`_io`: one flow, two drivers; and the one place that asks where it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from sqlalchemy_obstore._io import (
    NOT_RUN,
    Call,
    Collect,
    Gather,
    Plan,
    as_call,
    bridge,
    iterate,
    map_concurrently,
    run,
    run_async,
    run_sync,
)


class Boom(Exception):
    pass


class Recorder:
    """One operation in both colours, recording which colour ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running = 0
        self.most = 0

    def op(self, value: int) -> int:
        self.calls.append("sync")
        if value < 0:
            raise Boom(value)
        return value * 2

    async def op_async(self, value: int) -> int:
        self.calls.append("async")
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.001)
        self.running -= 1
        if value < 0:
            raise Boom(value)
        return value * 2

    def listing(self, n: int) -> Iterator[int]:
        self.calls.append("sync")
        yield from range(n)

    async def listing_async(self, n: int) -> AsyncIterator[int]:
        self.calls.append("async")
        for i in range(n):
            yield i


def flow(r: Recorder) -> Plan[tuple[int, list[int], str]]:
    doubled = yield Call(r.op, r.op_async, 2)
    items = yield Collect(r.listing, r.listing_async, 3)
    try:
        yield Call(r.op, r.op_async, -1)
    except Boom:  # a step's exception is raised in the plan, at its yield
        handled = "handled"
    return doubled, items, handled


def test_one_plan_two_drivers() -> None:
    r = Recorder()
    assert run_sync(flow(r)) == (4, [0, 1, 2], "handled")
    assert r.calls == ["sync"] * 3
    r = Recorder()
    assert asyncio.run(run_async(flow(r))) == (4, [0, 1, 2], "handled")
    assert r.calls == ["async"] * 3


def test_an_unhandled_failure_leaves_the_plan() -> None:
    def failing(r: Recorder) -> Plan[int]:
        value: int = yield Call(r.op, r.op_async, -5)
        return value

    with pytest.raises(Boom):
        run_sync(failing(Recorder()))
    with pytest.raises(Boom):
        asyncio.run(run_async(failing(Recorder())))


def test_gather_is_sequential_and_fails_fast_in_sync_code() -> None:
    r = Recorder()
    outcomes = run_sync(Gather([Call(r.op, r.op_async, v) for v in (1, -1, 3)]))
    assert outcomes[0] == 2
    assert isinstance(outcomes[1], Boom)
    assert outcomes[2] is NOT_RUN
    lenient = run_sync(Gather([Call(r.op, r.op_async, v) for v in (1, -1, 3)], fail_fast=False))
    assert lenient[2] == 6


def test_gather_is_concurrent_and_bounded_in_async_code() -> None:
    r = Recorder()
    calls = [Call(r.op, r.op_async, v) for v in (*range(10), -1)]
    outcomes = asyncio.run(run_async(Gather(calls, concurrency=3)))
    assert outcomes[:10] == [v * 2 for v in range(10)]
    assert isinstance(outcomes[10], Boom)  # every call made; failures are outcomes
    assert r.most == 3


def test_gather_at_concurrency_one_runs_one_by_one_in_async_code_without_tasks() -> None:
    r = Recorder()
    tasks: list[int] = []

    async def counted(value: int) -> int:
        tasks.append(len(asyncio.all_tasks()))  # the main task alone: no task per call
        return await r.op_async(value)

    async def main() -> list[object]:
        return await run_async(Gather([Call(r.op, counted, v) for v in (1, -1, 3)], concurrency=1))

    outcomes = asyncio.run(main())
    assert outcomes[0] == 2
    assert isinstance(outcomes[1], Boom)
    assert outcomes[2] is NOT_RUN  # as in sync code: stops at the first failure
    assert r.calls == ["async"] * 2
    assert r.most == 1
    assert tasks == [1, 1]
    tasks.clear()
    asyncio.run(run_async(Gather([Call(r.op, counted, v) for v in (1, 2)], concurrency=2)))
    assert tasks == [3, 3]  # (the concurrent way: one task per call)


def test_gather_at_concurrency_one_lets_a_cancellation_through() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(60)

        calls = [Call(lambda: None, hang), Call(lambda: None, hang)]
        task = asyncio.ensure_future(run_async(Gather(calls, concurrency=1)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_plan_runs_as_one_call_of_a_gather() -> None:
    def twice(r: Recorder, value: int) -> Plan[int]:
        first: int = yield Call(r.op, r.op_async, value)
        second: int = yield Call(r.op, r.op_async, first)
        return second

    r = Recorder()
    gathered = Gather([as_call(twice(r, 1)), as_call(twice(r, 2))])
    assert asyncio.run(run_async(gathered)) == [4, 8]
    assert r.calls == ["async"] * 4


def test_run_uses_the_async_calls_inside_the_greenlet_bridge() -> None:
    r = Recorder()

    def sync_code() -> tuple[int, list[int], list[int]]:
        one = run(Call(r.op, r.op_async, 1))
        every = map_concurrently(lambda v: run(Call(r.op, r.op_async, v)), [1, 2, 3], concurrency=2)
        return one, every, list(iterate(r.listing, r.listing_async, 2))

    assert sync_code() == (2, [2, 4, 6], [0, 1])
    assert set(r.calls) == {"sync"}
    r.calls.clear()
    assert asyncio.run(bridge(sync_code)) == (2, [2, 4, 6], [0, 1])
    assert set(r.calls) == {"async"}
    assert r.most == 2  # map_concurrently ran two at once


def test_leaving_an_iteration_early_closes_the_async_listing() -> None:
    closed: list[bool] = []

    async def listing() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    def first_two() -> list[int]:
        items = iterate(lambda: iter(range(10)), listing)
        try:
            return [next(items), next(items)]
        finally:
            items.close()

    assert asyncio.run(bridge(first_two)) == [0, 1]
    assert closed == [True]
