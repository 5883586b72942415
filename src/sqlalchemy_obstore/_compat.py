"""The one place that knows SQLAlchemy's version-specific names for its greenlet bridge.

Session events are synchronous. Inside an `AsyncSession` they run in SQLAlchemy's
greenlet bridge, where a coroutine can be awaited with `await_` (2.1; `await_only` in
2.0) — the same mechanism SQLAlchemy uses for its async drivers. Outside it (a plain
`Session`), `in_greenlet()` is false. Only [`_io`][sqlalchemy_obstore._io] uses these:
it is the module that decides between sync and async calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.util.concurrency import greenlet_spawn as _greenlet_spawn

_T = TypeVar("_T")

try:  # SQLAlchemy 2.1+
    from sqlalchemy.util.concurrency import await_ as _await
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as _await

try:
    from sqlalchemy.util.concurrency import in_greenlet as _in_greenlet
except ImportError:  # pragma: no cover - very old 2.0 releases
    _in_greenlet = None  # type: ignore[assignment]

__all__ = ("await_", "greenlet_spawn", "in_async_context")


def in_async_context() -> bool:
    """Whether the caller runs inside SQLAlchemy's async greenlet bridge.

    Without the greenlet package SQLAlchemy raises instead of answering; no
    `AsyncSession` can exist then, so the answer is `False`.
    """
    if _in_greenlet is None:
        return False
    try:
        return bool(_in_greenlet())
    except (ImportError, ValueError, NotImplementedError):
        return False


def await_(awaitable: Awaitable[_T]) -> _T:
    """Await `awaitable` from sync code running inside the greenlet bridge."""
    result: Any = _await(awaitable)
    return result  # type: ignore[no-any-return]


async def greenlet_spawn(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run the sync `function` in a new greenlet whose `await_` calls await here."""
    result: Any = await _greenlet_spawn(function, *args, **kwargs)
    return result  # type: ignore[no-any-return]
