"""Sync or async: the one place above the backends that chooses.

Every backend offers each operation twice, over obstore's own sync and async calls
(`put`/`put_async`, `head`/`head_async`, ...). Code above the backends writes each
operation once, in one of two shapes, and this module runs it.

**A plan** is a generator that yields *steps* and receives their outcomes; everything
between two `yield`s is plain code deciding what to do next (httpx's way: one flow
without I/O, two thin drivers). A step is one call in both colours
([`Call`][sqlalchemy_obstore._io.Call]), a listing read to its end
([`Collect`][sqlalchemy_obstore._io.Collect]) or several calls at once
([`Gather`][sqlalchemy_obstore._io.Gather]: concurrent in async code, one after another
in sync code). [`run_sync`][sqlalchemy_obstore._io.run_sync] makes the sync calls and
[`run_async`][sqlalchemy_obstore._io.run_async] awaits the async ones, so a public
`name`/`name_async` pair is two one-line drivers of one plan. An exception raised by a
step is raised inside the plan at its `yield`, so the plan's `try`/`except`/`finally`
work as in straight-line code.

**Sync code that may run inside SQLAlchemy's greenlet bridge**: the session's flush and
commit hooks (an `AsyncSession` runs them in the bridge), and the garbage collector,
the migration and the CLI (their async entry points run the sync body there, as
SQLAlchemy's `AsyncSession` does with `greenlet_spawn`, see
[`bridge`][sqlalchemy_obstore._io.bridge]). Such code calls
[`run`][sqlalchemy_obstore._io.run], [`iterate`][sqlalchemy_obstore._io.iterate] and
[`map_concurrently`][sqlalchemy_obstore._io.map_concurrently]: inside the bridge they
await the async calls (concurrently where asked), elsewhere they make the sync calls.
Those three are the only functions of the package that ask where they run.

Never an event loop run inside sync code, never a thread pool standing in for async
(a sync `Engine` handed to async code aside: see
[`run_on_engine`][sqlalchemy_obstore._io.run_on_engine]).
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Concatenate, Generic, TypeAlias, TypeVar, overload

from typing_extensions import ParamSpec

from ._compat import await_, greenlet_spawn, in_async_context

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = (
    "NOT_RUN",
    "Call",
    "Collect",
    "Gather",
    "NotRun",
    "Plan",
    "Step",
    "as_call",
    "bridge",
    "bridge_bind",
    "in_async_context",
    "iterate",
    "map_concurrently",
    "run",
    "run_async",
    "run_on_engine",
    "run_sync",
)

_T = TypeVar("_T")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)
_P = ParamSpec("_P")


class NotRun(Exception):
    """The outcome of a call a sync `Gather` did not make: an earlier call failed."""

    def __init__(self) -> None:
        super().__init__("not attempted")


NOT_RUN = NotRun()
"""The one `NotRun` outcome."""


# -- steps -----------------------------------------------------------------------------------------
class Step(Generic[_R_co]):
    """Something a plan yields: I/O that can be done with sync or async calls."""

    __slots__ = ()

    def run_sync(self) -> _R_co:
        """Do it with the sync calls."""
        raise NotImplementedError

    async def run_async(self) -> _R_co:
        """Do it with the async calls."""
        raise NotImplementedError


class Call(Step[_T]):
    """One operation in both colours: `sync(*args, **kwargs)` or `await async_(*args, **kwargs)`.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> backend = ObstoreBackend("b", "memory://")
        >>> run_sync(Call(backend.exists, backend.exists_async, "a.txt"))
        False
    """

    __slots__ = ("_args", "_async", "_kwargs", "_sync")

    def __init__(
        self,
        sync: Callable[_P, _T],
        async_: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        self._sync: Callable[..., _T] = sync
        self._async: Callable[..., Awaitable[_T]] = async_
        self._args = args
        self._kwargs = kwargs

    def run_sync(self) -> _T:
        """Make the sync call."""
        return self._sync(*self._args, **self._kwargs)

    async def run_async(self) -> _T:
        """Await the async call."""
        return await self._async(*self._args, **self._kwargs)


class Collect(Step[list[_T]]):
    """A listing read to its end: `list(sync(...))`, or the items of `async_(...)`."""

    __slots__ = ("_args", "_async", "_kwargs", "_sync")

    def __init__(
        self,
        sync: Callable[_P, Iterable[_T]],
        async_: Callable[_P, AsyncIterable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        self._sync: Callable[..., Iterable[_T]] = sync
        self._async: Callable[..., AsyncIterable[_T]] = async_
        self._args = args
        self._kwargs = kwargs

    def run_sync(self) -> list[_T]:
        """Read the sync listing."""
        return list(self._sync(*self._args, **self._kwargs))

    async def run_async(self) -> list[_T]:
        """Read the async listing."""
        return [item async for item in self._async(*self._args, **self._kwargs)]


class Gather(Step[list[_T | BaseException]]):
    """Several calls; the outcome of each is its result or the exception it raised.

    Async code makes them concurrently, at most `concurrency` at once. Sync code, and
    async code with a `concurrency` of 1, makes them one after another, in one plan
    (no task per call: for calls that never wait, such as a memory store's, that is
    most of their cost); then, with `fail_fast`, the calls after the first that fails
    are not made and their outcome is `NOT_RUN`, and a call that raises something other
    than an `Exception` (`KeyboardInterrupt`, a cancellation) stops everything.

    Args:
        calls: The calls, in the order of their outcomes.
        concurrency: How many run at once in async code (1: one after another).
        fail_fast: Stop at the first failure when the calls run one after another.
    """

    __slots__ = ("calls", "concurrency", "fail_fast")

    def __init__(
        self, calls: Iterable[Call[_T]], *, concurrency: int = 8, fail_fast: bool = True
    ) -> None:
        self.calls = list(calls)
        self.concurrency = concurrency
        self.fail_fast = fail_fast

    def _one_by_one(self) -> Plan[list[_T | BaseException]]:
        """The calls one after another, as a plan (the same for both drivers)."""
        outcomes: list[_T | BaseException] = []
        failed = False
        for call in self.calls:
            if failed and self.fail_fast:
                outcomes.append(NOT_RUN)
                continue
            try:
                outcome: _T = yield call
            except Exception as exc:
                outcomes.append(exc)
                failed = True
            else:
                outcomes.append(outcome)
        return outcomes

    def run_sync(self) -> list[_T | BaseException]:
        """Make the calls one after another."""
        return run_sync(self._one_by_one())

    async def run_async(self) -> list[_T | BaseException]:
        """Make the calls concurrently (bounded), or one after another at concurrency 1."""
        if self.concurrency <= 1:
            return await run_async(self._one_by_one())
        semaphore = asyncio.Semaphore(self.concurrency)

        async def limited(call: Call[_T]) -> _T:
            async with semaphore:
                return await call.run_async()

        outcomes = await asyncio.gather(*(limited(c) for c in self.calls), return_exceptions=True)
        return list(outcomes)


Plan: TypeAlias = Generator[Step[Any], Any, _R]
"""A flow that yields steps, receives their outcomes and returns a result."""


# -- drivers ---------------------------------------------------------------------------------------
@overload
def run_sync(work: Step[_R]) -> _R: ...
@overload
def run_sync(work: Plan[_R]) -> _R: ...
def run_sync(work: Step[_R] | Plan[_R]) -> _R:
    """Do `work` (a step, or a plan step by step) with the sync calls."""
    if isinstance(work, Step):
        return work.run_sync()
    send, throw = work.send, work.throw
    try:
        step = send(None)
        while True:
            try:
                outcome = step.run_sync()
            except BaseException as exc:
                step = throw(exc)
            else:
                step = send(outcome)
    except StopIteration as stop:
        result: _R = stop.value
        return result


@overload
async def run_async(work: Step[_R]) -> _R: ...
@overload
async def run_async(work: Plan[_R]) -> _R: ...
async def run_async(work: Step[_R] | Plan[_R]) -> _R:
    """Do `work` (a step, or a plan step by step) with the async calls."""
    if isinstance(work, Step):
        return await work.run_async()
    send, throw = work.send, work.throw
    try:
        step = send(None)
        while True:
            try:
                outcome = await step.run_async()
            except BaseException as exc:
                step = throw(exc)
            else:
                step = send(outcome)
    except StopIteration as stop:
        result: _R = stop.value
        return result


def as_call(plan: Plan[_R]) -> Call[_R]:
    """`plan` as one call (to `Gather` plans): it is run by whichever driver makes the call."""
    return Call(run_sync, run_async, plan)


# -- sync code that may run inside the greenlet bridge ---------------------------------------------
@overload
def run(work: Step[_R]) -> _R: ...
@overload
def run(work: Plan[_R]) -> _R: ...
def run(work: Step[_R] | Plan[_R]) -> _R:
    """Do `work` where the caller runs: awaited through the bridge inside it, sync elsewhere."""
    if in_async_context():
        return await_(run_async(work))
    return run_sync(work)


def iterate(
    sync: Callable[_P, Iterable[_T]],
    async_: Callable[_P, AsyncIterable[_T]],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> Generator[_T, None, None]:
    """The items of a listing, one at a time: pulled through the bridge inside it.

    Closing the iterator (or leaving a `for` loop early) closes the async listing, from
    inside the bridge; do that before leaving it.
    """
    if not in_async_context():
        yield from sync(*args, **kwargs)
        return
    items = aiter(async_(*args, **kwargs))
    try:
        while True:
            try:
                item = await_(anext(items))
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await_(close())


def map_concurrently(
    function: Callable[[_T], _R], items: Sequence[_T], *, concurrency: int
) -> list[_R]:
    """`[function(item) for item in items]`; concurrently inside the greenlet bridge.

    Inside the bridge each call runs in a greenlet of its own (so the I/O it does with
    `run` and `iterate` is awaited there) and at most `concurrency` run at once; if one
    raises, the others are cancelled and the exception is raised. Elsewhere they run one
    after another.
    """
    if not in_async_context() or len(items) < 2 or concurrency < 2:
        return [function(item) for item in items]
    limit = asyncio.Semaphore(concurrency)

    async def one(item: _T) -> _R:
        async with limit:
            return await greenlet_spawn(function, item)

    async def every() -> list[_R]:
        tasks = [asyncio.ensure_future(one(item)) for item in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # nothing keeps running once the caller has given up
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    return await_(every())


async def bridge(function: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run sync code that uses `run`/`iterate` in the greenlet bridge: its I/O is awaited.

    The async entry point of an operation written once as sync code (SQLAlchemy's
    `AsyncSession` runs its `Session` the same way).
    """
    return await greenlet_spawn(function, *args, **kwargs)


async def bridge_bind(
    bind: AsyncEngine | AsyncConnection,
    function: Callable[Concatenate[Engine | Connection, _P], _R],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _R:
    """`function(sync bind, ...)` in the greenlet bridge, for an async engine or connection.

    An `AsyncConnection` lends its sync `Connection` (as `run_sync` does); an
    `AsyncEngine` its sync `Engine`, whose connections then work in the bridge.
    """
    from sqlalchemy.ext.asyncio import AsyncConnection

    if isinstance(bind, AsyncConnection):
        return await bind.run_sync(function, *args, **kwargs)
    return await greenlet_spawn(function, bind.sync_engine, *args, **kwargs)


async def run_on_engine(
    engine: Engine | AsyncEngine,
    function: Callable[Concatenate[Engine, _P], _R],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _R:
    """`function(sync engine, ...)` from async code, for an engine of either kind.

    An `AsyncEngine` lends its sync engine and `function` runs in the greenlet bridge
    (its database I/O is awaited). A sync `Engine` has a blocking driver that no event
    loop can wait for: `function` then runs in a worker thread, so the loop stays free
    (the one place a thread stands in, and only for a sync engine handed to async code).
    """
    from sqlalchemy.ext.asyncio import AsyncEngine

    if isinstance(engine, AsyncEngine):
        return await greenlet_spawn(function, engine.sync_engine, *args, **kwargs)
    return await asyncio.to_thread(function, engine, *args, **kwargs)
