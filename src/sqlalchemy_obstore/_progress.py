"""`Progress`, what the long-running operations tell their `progress` callback.

Garbage collection ([`gc`][sqlalchemy_obstore.gc]) and reference verification share it;
`gc` re-exports both names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ("Progress", "ProgressCallback")


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a long-running operation is, passed to its `progress` callback.

    The callback is called after every batch (garbage collection) or every reference
    (verification), from the thread running the operation; it should return quickly.

    Attributes:
        phase: `"staging"` (references read from the database), `"scanning"` (objects
            listed in a backend) or `"verifying"` (references checked).
        done: Items handled so far in this phase (for `"scanning"`: in this backend).
        total: Items expected in this phase, when known (else `None`).
        backend: The backend being scanned, if any.

    Example:
        >>> updates = []
        >>> collect_garbage(engine, Base, progress=updates.append)  # doctest: +SKIP
        >>> updates[-1]  # doctest: +SKIP
        Progress(phase='scanning', done=1200, total=None, backend='uploads')
    """

    phase: str
    done: int
    total: int | None = None
    backend: str | None = None


ProgressCallback: TypeAlias = Callable[[Progress], None]
"""A callable receiving [`Progress`][sqlalchemy_obstore.gc.Progress] updates."""
