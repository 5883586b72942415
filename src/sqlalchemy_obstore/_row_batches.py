"""The rows of a table's file columns, read in batches and rewritten by compare-and-swap.

`migrate` and `reprocess` walk tables the same way, and this is their one reader and
writer:

- [`row_batches`][sqlalchemy_obstore._row_batches.row_batches] reads the rows in
  primary-key order (keyset pagination, resumable after any key), each batch in its own
  short transaction (committed when the run owns the connection), so nothing stays open
  while storage is called. Each file column's value is read as text, the exact text the
  rewrite compares against, and decoded as JSON (a value that is not JSON is left out).
- [`swap_row`][sqlalchemy_obstore._row_batches.swap_row] writes the new values of one row
  only if every rewritten column still holds the text that was read: a row the
  application changed meanwhile is never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Table,
    Text,
    and_,
    cast,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)

from ._errors import ConfigurationError
from ._file_columns import FileColumn

__all__ = ("Row", "on_connection", "require_primary_key", "row_batches", "swap_row")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Row(Generic[T]):
    """One row: its primary key and, per non-null JSON value, `(item, raw text, JSON)`."""

    key: tuple[Any, ...]
    values: list[tuple[T, str, Any]]


def require_primary_key(table: Table) -> None:
    """Refuse a table whose rows cannot be addressed one by one.

    Raises:
        ConfigurationError: If `table` has no primary key.
    """
    if not table.primary_key.columns:
        raise ConfigurationError(
            f"Table {table.fullname!r} has no primary key, so its rows cannot be rewritten "
            "safely; add one or leave the table out of the target."
        )


def on_connection(bind: Engine | Connection, run: Callable[[Connection, bool], R]) -> R:
    """`run(connection, owns)` on the caller's connection, or on a new one of the engine.

    A run that `owns` its connection commits after every batch (an interrupted run keeps
    its progress); on the caller's connection it stays inside the caller's transaction.
    """
    if isinstance(bind, Connection):
        return run(bind, False)
    with bind.connect() as connection:
        return run(connection, True)


def row_batches(
    connection: Connection,
    table: Table,
    columns: Sequence[tuple[T, Column[Any]]],
    *,
    where: Sequence[ColumnElement[bool]],
    batch_size: int,
    commit: bool,
    start_after: Sequence[Any] | None = None,
) -> Iterator[list[Row[T]]]:
    """Batches of the rows of `table` that match any of `where`, in primary-key order.

    Args:
        connection: Where to read.
        table: The table (it has a primary key).
        columns: The file columns to read, each with the item it stands for (what the
            caller gets back beside its value).
        where: Conditions, one of which a row must meet to be read.
        batch_size: Rows per batch (and per transaction).
        commit: Commit after each read (the run owns the connection).
        start_after: Read only the rows after this primary key.
    """
    keys = list(table.primary_key.columns)
    texts = [cast(column, Text) for _, column in columns]
    base = select(*keys, *texts).where(or_(*where)).order_by(*keys).limit(batch_size)
    last = tuple(start_after) if start_after is not None else None
    width = len(keys)
    while True:
        stmt = base
        if last is not None:
            stmt = stmt.where(keys[0] > last[0] if width == 1 else tuple_(*keys) > tuple_(*last))
        rows = connection.execute(stmt).all()
        if commit:
            connection.commit()
        if not rows:
            return
        last = tuple(rows[-1][:width])
        batch = []
        for row in rows:
            values = []
            for (item, _), raw in zip(columns, row[width:], strict=True):
                if raw is None:
                    continue
                try:
                    values.append((item, raw, json.loads(raw)))
                except (TypeError, ValueError):
                    continue  # not JSON: nothing to read or rewrite
            batch.append(Row(tuple(row[:width]), values))
        yield batch
        if len(rows) < batch_size:
            return


def swap_row(
    connection: Connection,
    table: Table,
    key: tuple[Any, ...],
    changes: Sequence[tuple[FileColumn, str, Any]],
) -> bool:
    """Write each `(column, raw, new)` of `changes` into the row `key`, compare-and-swap.

    The row is updated only if every changed column still holds `raw` (its text as
    `row_batches` read it). Returns whether it was (`False`: the row changed meanwhile,
    or is gone).
    """
    conditions = [k == v for k, v in zip(table.primary_key.columns, key, strict=True)]
    values: dict[Any, Any] = {}
    for column, raw, new in changes:
        impl = column.stored_type.load_dialect_impl(connection.dialect)
        values[column.column] = type_coerce(new, impl)
        conditions.append(cast(column.column, Text) == raw)
    result = connection.execute(update(table).where(and_(*conditions)).values(values))
    return result.rowcount == 1
