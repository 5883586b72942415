"""The `StoredObject` columns of a mapped class, looked up once per mapper.

The session listeners ask this for every object of every flush and commit, so the answer
is kept per mapper, in a `WeakKeyDictionary`: a mapper that goes away (a declarative
base per test, models defined in a loop, a registry disposed) takes its entry with it,
and nothing here keeps a mapped class alive. A mapper configured again (a property
added after the first configuration) is looked up afresh: `forget` runs on every
`mapper_configured` event (see `lifecycle.install_listeners`).
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

from sqlalchemy.orm import Mapper

from .types import StoredObject, stored_object_columns

__all__ = ("FileColumns", "file_columns", "forget")


class FileColumns(NamedTuple):
    """A mapper's `StoredObject` columns as `(attribute key, type)`."""

    all: tuple[tuple[str, StoredObject], ...]
    tracked: tuple[tuple[str, StoredObject], ...]  # those whose files the session handles
    keys: tuple[str, ...]  # the attribute keys of `all`


_KNOWN: weakref.WeakKeyDictionary[Mapper[Any], FileColumns] = weakref.WeakKeyDictionary()


def file_columns(mapper: Mapper[Any]) -> FileColumns:
    """The `StoredObject` columns of `mapper` (computed on first use)."""
    found = _KNOWN.get(mapper)
    if found is None:
        columns = tuple(stored_object_columns(mapper))
        found = _KNOWN[mapper] = FileColumns(
            columns,
            tuple((key, column) for key, column in columns if column.track),
            tuple(key for key, _ in columns),
        )
    return found


def forget(mapper: Mapper[Any], class_: type | None = None) -> None:
    """Drop what is known of `mapper` (a `mapper_configured` listener)."""
    _KNOWN.pop(mapper, None)
