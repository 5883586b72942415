"""The garbage collector's SQL: reading references, staging them, looking listed keys up.

`gc._Collector` keeps every reference of the database in a temporary table and checks
each listing page against it. How each step is phrased depends on the database:

- **Reading the references.** On SQLite and PostgreSQL the database itself extracts the
  `(backend, path)` of a plain stored file (a JSON object with a string `path` and no
  `renditions` object); only the other rows (lists, renditions, odd values) have their
  document decoded and walked in Python by `_column.stored_files`, the same walker
  other databases use for every row.
- **Staging.** One statement per batch on SQLite (the driver's `executemany`) and
  PostgreSQL (`unnest` of two arrays); SQLAlchemy's `insert` elsewhere. The index is
  built once the table is filled; on PostgreSQL the rows are first rewritten in index
  order (see `ReferenceTable.index`).
- **Looking a page up.** The staged paths are ordered by code point on SQLite (binary
  collation) and PostgreSQL (`COLLATE "C"`, set on the temporary table), as Python
  orders strings, so a page of keys is looked up with one index range scan between its
  smallest and largest key. When the range holds more staged paths than twice the page
  (an unsorted listing, many references to objects that are not there), and on other
  databases, the page's keys are looked up one by one (`IN`). Both answers are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    column,
    insert,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY

from ._column import stored_files
from ._file_columns import FileColumn

__all__ = (
    "RANGE_DIALECTS",
    "ReferenceTable",
    "iter_references",
    "live_reference_query",
    "raw_value",
)

RANGE_DIALECTS = frozenset({"sqlite", "postgresql"})
"""Databases whose staged paths sort as Python sorts strings (see the module docstring)."""


def raw_value(column: FileColumn) -> Any:
    """The column as plain JSON (no `FileObject`s built, malformed values tolerated)."""
    return type_coerce(column.column, JSON(none_as_null=True)).label("value")


def _names(connection: Connection, column: FileColumn) -> tuple[str, str]:
    preparer = connection.dialect.identifier_preparer
    return preparer.format_table(column.table), f"t.{preparer.quote(column.column.name)}"


def _extracting_query(connection: Connection, file_column: FileColumn) -> Any:
    """`(query, JSON type names, decode)`, or None when the database cannot extract.

    The query returns `(path type, path, backend type, backend, renditions type,
    document)`: `document` is the stored value for the walker, decoded by `decode` (on
    SQLite the raw text, decoded only when needed; on PostgreSQL NULL for plain files).
    """
    dialect = connection.dialect.name
    table, v = _names(connection, file_column)
    if dialect == "sqlite":
        sql = (
            f"SELECT json_type({v}, '$.path'), json_extract({v}, '$.path'), "
            f"json_type({v}, '$.backend'), json_extract({v}, '$.backend'), "
            f"json_type({v}, '$.renditions'), {v} "
            f"FROM {table} AS t WHERE {v} IS NOT NULL"
        )
        types = ("text", "null")
        document: Any = String()
    elif dialect == "postgresql":
        j = f"CAST({v} AS jsonb)"
        simple = (
            f"jsonb_typeof({j} -> 'path') = 'string' "
            f"AND coalesce(jsonb_typeof({j} -> 'backend'), 'null') IN ('string', 'null') "
            f"AND coalesce(jsonb_typeof({j} -> 'renditions'), '') <> 'object'"
        )
        sql = (
            f"SELECT jsonb_typeof({j} -> 'path'), {j} ->> 'path', "
            f"jsonb_typeof({j} -> 'backend'), {j} ->> 'backend', "
            f"jsonb_typeof({j} -> 'renditions'), CASE WHEN {simple} THEN NULL ELSE {v} END "
            f"FROM {table} AS t WHERE {v} IS NOT NULL"
        )
        types = ("string", "null")
        document = JSON(none_as_null=True)
    else:
        return None
    query = text(sql).columns(
        column("path_type", String()),
        column("path", String()),
        column("backend_type", String()),
        column("backend", String()),
        column("renditions_type", String()),
        column("document", document),
    )
    decode = None
    if isinstance(document, String):  # the driver's text: decoded as the JSON type would
        json_type = JSON(none_as_null=True).dialect_impl(connection.dialect)
        decode = json_type.result_processor(connection.dialect, None)
    return query, types, decode


def iter_references(
    connection: Connection, column: FileColumn, batch_size: int
) -> Iterator[list[tuple[str, str]]]:
    """Batches of the `(backend, path)` references stored in `column` (streamed).

    The same references, in the same order, as `stored_files` finds in each row.
    """
    default = column.stored_type.backend
    extracting = _extracting_query(connection, column)
    if extracting is None:
        stmt = select(raw_value(column)).execution_options(yield_per=batch_size)
        batch: list[tuple[str, str]] = []
        for partition in connection.execute(stmt).partitions():
            for row in partition:
                for data, backend in stored_files(row[0], default):
                    batch.append((backend, data["path"]))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    stmt, (string, null), decode = extracting
    batch = []
    append = batch.append
    for partition in connection.execute(stmt.execution_options(yield_per=batch_size)).partitions():
        for path_type, path, backend_type, backend, renditions_type, document in partition:
            # A plain stored file: what `stored_files` yields for it, read by the database.
            if (
                path_type == string
                and renditions_type != "object"
                and (backend_type is None or backend_type in (string, null))
            ):
                if path:
                    key = backend or default
                    if key is not None:
                        append((key, path))
                continue
            if decode is not None:
                document = decode(document)
            for data, key in stored_files(document, default):
                append((key, data["path"]))
        if len(batch) >= batch_size:
            yield batch
            batch = []
            append = batch.append
    if batch:
        yield batch


class ReferenceTable:
    """The temporary table of staged `(backend, path)` references, on one connection."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.conn = connection
        dialect = connection.dialect.name
        # Code-point order on PostgreSQL, as on SQLite (BINARY): the range scans need it.
        path_type = String(collation="C") if dialect == "postgresql" else String()
        self.table = Table(
            name,
            MetaData(),
            Column("backend", String(), nullable=False),
            Column("path", path_type, nullable=False),
            prefixes=["TEMPORARY"],
        )
        self.quoted = connection.dialect.identifier_preparer.format_table(self.table)
        self.ranges = dialect in RANGE_DIALECTS
        c = self.table.c
        self._range = (
            select(c.path)
            .where(
                c.backend == bindparam("key"),
                c.path >= bindparam("low"),
                c.path <= bindparam("high"),
            )
            .limit(bindparam("limit", type_=Integer()))
        )
        self._in = select(c.path).where(
            c.backend == bindparam("key"), c.path.in_(bindparam("paths", expanding=True))
        )

    def create(self) -> None:
        self.table.create(self.conn)

    def drop(self) -> None:
        self.table.drop(self.conn, checkfirst=True)

    def backends(self) -> list[str]:
        """The backend keys staged references name."""
        return list(self.conn.scalars(select(self.table.c.backend).distinct()))

    def add(self, batch: Sequence[tuple[str, str]]) -> None:
        """Insert `(backend, path)` pairs (before `index`)."""
        dialect = self.conn.dialect.name
        if dialect == "sqlite":
            self.conn.exec_driver_sql(
                f"INSERT INTO {self.quoted} (backend, path) VALUES (?, ?)", batch
            )
        elif dialect == "postgresql":
            stmt = text(
                f"INSERT INTO {self.quoted} (backend, path) "
                "SELECT * FROM unnest(CAST(:backends AS VARCHAR[]), CAST(:paths AS VARCHAR[]))"
            ).bindparams(
                bindparam("backends", type_=ARRAY(String())),
                bindparam("paths", type_=ARRAY(String())),
            )
            self.conn.execute(
                stmt, {"backends": [b for b, _ in batch], "paths": [p for _, p in batch]}
            )
        else:
            self.conn.execute(insert(self.table), [{"backend": b, "path": p} for b, p in batch])

    def index(self) -> None:
        """Index the filled table on `(backend, path)` (and give the planner its size)."""
        # Built once over the whole table: a sort, rather than one B-tree insert per row.
        postgresql = self.conn.dialect.name == "postgresql"
        if postgresql:
            # The rows rewritten in index order: a page's range scan then reads a few heap
            # pages, not one per row (a large temporary table lives mostly outside the
            # session's `temp_buffers`, and without a vacuum no scan is index-only).
            preparer = self.conn.dialect.identifier_preparer
            unsorted = preparer.quote(f"{self.table.name}_unsorted")
            self.conn.exec_driver_sql(f"ALTER TABLE {self.quoted} RENAME TO {unsorted}")
            self.conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {self.quoted} AS "
                f"SELECT backend, path FROM {unsorted} ORDER BY backend, path"
            )
            self.conn.exec_driver_sql(f"DROP TABLE {unsorted}")
        Index(f"{self.table.name}_ix", self.table.c.backend, self.table.c.path).create(self.conn)
        if postgresql:  # temporary tables are never auto-analyzed
            self.conn.exec_driver_sql(f"ANALYZE {self.quoted}")

    def staged(self, key: str, paths: list[str]) -> set[str]:
        """Which of `paths` (a listing page of backend `key`) are staged references."""
        if self.ranges and paths:
            limit = 2 * len(paths) + 16
            parameters = {"key": key, "low": min(paths), "high": max(paths), "limit": limit}
            found = self.conn.scalars(self._range, parameters).all()
            if len(found) < limit:
                return set(found)
        return set(self.conn.scalars(self._in, {"key": key, "paths": paths}).all())


def live_reference_query(connection: Connection, column: FileColumn) -> Any:
    """A query of the paths in `column` among `:paths` (expanding), None to walk rows.

    Matches every stored file's path whatever its backend: on SQLite a `path` key
    anywhere in the document (`json_tree`); on PostgreSQL the top-level `path` of a
    plain stored file and a `path` anywhere in the other documents (jsonpath
    `$.**.path`). A false match keeps an orphan, never deletes a referenced object.
    """
    dialect = connection.dialect.name
    table, v = _names(connection, column)
    if dialect == "sqlite":
        sql = (
            f"SELECT DISTINCT jt.value FROM {table} AS t, json_tree({v}) AS jt "
            f"WHERE {v} IS NOT NULL AND jt.key = 'path' AND jt.value IN :paths"
        )
        return text(sql).bindparams(bindparam("paths", expanding=True))
    if dialect == "postgresql":
        j = f"CAST({v} AS jsonb)"
        plain = (
            f"jsonb_typeof({j}) = 'object' "
            f"AND coalesce(jsonb_typeof({j} -> 'renditions'), '') <> 'object'"
        )
        sql = (
            f"SELECT {j} ->> 'path' FROM {table} AS t "
            f"WHERE {plain} AND {j} ->> 'path' = ANY(CAST(:paths AS VARCHAR[])) "
            f"UNION SELECT j.v #>> '{{}}' FROM {table} AS t, "
            f"jsonb_path_query({j}, 'lax $.**.path') AS j(v) "
            f"WHERE {v} IS NOT NULL AND NOT ({plain}) "
            "AND j.v #>> '{}' = ANY(CAST(:paths AS VARCHAR[]))"
        )
        return text(sql).bindparams(bindparam("paths", type_=ARRAY(String())))
    return None
