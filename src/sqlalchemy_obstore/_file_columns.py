"""The `StoredObject` columns of a mapped class, looked up once per mapper, and of a
metadata (`FileColumn`, what garbage collection and migrations walk; `gc` re-exports it).

The session listeners ask this for every object of every flush and commit, so the answer
is kept per mapper, in a `WeakKeyDictionary`: a mapper that goes away (a declarative
base per test, models defined in a loop, a registry disposed) takes its entry with it,
and nothing here keeps a mapped class alive. A mapper configured again (a property
added after the first configuration) is looked up afresh: `forget` runs on every
`mapper_configured` event (see `lifecycle.install_listeners`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Column, MetaData, Table
from sqlalchemy.orm import Mapper

from ._errors import ConfigurationError
from ._types import StoredObject, stored_object_columns

__all__ = (
    "FileColumn",
    "FileColumns",
    "file_columns",
    "find_file_columns",
    "forget",
    "target_columns",
)


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


# -- the columns of a metadata (gc, migration) ----------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class FileColumn:
    """A `StoredObject` column found in a target.

    Attributes:
        table: The table holding the column.
        column: The column.
        stored_type: Its `StoredObject` type (backend, `multiple`, registry).
    """

    table: Table
    column: Column[Any]
    stored_type: StoredObject

    @property
    def name(self) -> str:
        """`table.column`, as used in reports."""
        return f"{self.table.fullname}.{self.column.name}"

    def __eq__(self, other: object) -> bool:
        # (SQLAlchemy overloads == on columns: compare by identity.)
        if not isinstance(other, FileColumn):
            return NotImplemented
        return self.table is other.table and self.column is other.column

    def __hash__(self) -> int:
        return hash((id(self.table), id(self.column)))


def _metadatas(target: Any) -> Iterator[MetaData]:
    if isinstance(target, MetaData):
        yield target
    elif isinstance(getattr(target, "metadata", None), MetaData):
        yield target.metadata
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        for item in target:
            yield from _metadatas(item)
    else:
        raise ConfigurationError(
            "Expected a MetaData, a declarative base class or a sequence of them, "
            f"not {type(target).__name__}."
        )


def find_file_columns(target: Any) -> list[FileColumn]:
    """Every `StoredObject` column (single-file and `multiple=True`) of a target.

    Args:
        target: A `MetaData`, a declarative base class (or any class with a `metadata`
            attribute), or a sequence of them. Tables shared by several targets are
            listed once.

    Returns:
        The columns, table by table in dependency order.

    Raises:
        ConfigurationError: If `target` is none of the above.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table
        >>> from sqlalchemy_obstore import StoredObject
        >>> metadata = MetaData()
        >>> _ = Table("docs", metadata, Column("id", Integer, primary_key=True),
        ...           Column("file", StoredObject("uploads")))
        >>> columns = find_file_columns(metadata)
        >>> len(columns), columns[0].name, columns[0].stored_type.backend
        (1, 'docs.file', 'uploads')
    """
    found: list[FileColumn] = []
    seen: set[tuple[int, str]] = set()
    for metadata in _metadatas(target):
        for table in metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, StoredObject) and (id(table), column.key) not in seen:
                    seen.add((id(table), column.key))
                    found.append(FileColumn(table, column, column.type))
    return found


def target_columns(target: Any) -> list[FileColumn]:
    """The columns a command names: a `FileColumn`, a list of them, or what
    `find_file_columns` takes."""
    if isinstance(target, FileColumn):
        return [target]
    if isinstance(target, Sequence) and target and all(isinstance(t, FileColumn) for t in target):
        return list(target)
    return find_file_columns(target)
