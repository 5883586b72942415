"""The garbage collector's SQL: staging the references, looking listed keys up.

`gc._Collector` keeps every reference of the database in a temporary table and checks
each listing page against it. How each step is phrased depends on the database:

- **Staging.** On SQLite and PostgreSQL the database reads the `(backend, path)` of a
  plain stored file (a JSON object with a string `path` and no `renditions` object)
  and inserts it into the temporary table itself: one `INSERT ... SELECT` per batch of
  rows, the batches bounded by the first primary key column (keyset ranges: each
  batch starts where the last one ended). A count of the batch's rows tells whether
  any row was not plain; only those rows (lists, renditions, odd values) are read and
  walked in Python by `_column.stored_files`, the walker other databases use for every
  row, whose references are inserted by the driver's `executemany`. The index is
  built once the table is filled; on PostgreSQL the rows are first rewritten in index
  order (see `ReferenceTable.index`).
- **Looking a page up.** The staged paths are ordered by code point on SQLite (binary
  collation) and PostgreSQL (`COLLATE "C"`, set on the temporary table), as Python
  orders strings, so a page of keys is looked up with one index range scan between its
  smallest and largest key. When the range holds more staged paths than twice the page
  (an unsorted listing, many references to objects that are not there), and on other
  databases, the page's keys are looked up one by one (`IN`). Both answers are exact.
  (An anti-join that sends the page and gets back only its unreferenced keys was
  measured too: no faster on SQLite, three times slower on PostgreSQL.)
- **The live re-check.** The candidates (listed, unreferenced, older than the grace
  period) wait in a second temporary table (`CandidateTable`), so Python holds none of
  them; one scan of the file columns re-checks a whole group of them against the live
  rows, the database matching the scanned paths against that table (see `live_paths`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TextClause,
    bindparam,
    column,
    delete,
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
    "CandidateTable",
    "ReferenceTable",
    "iter_references",
    "live_paths",
    "raw_value",
)

RANGE_DIALECTS = frozenset({"sqlite", "postgresql"})
"""Databases whose staged paths sort as Python sorts strings (see the module docstring)."""


def raw_value(column: FileColumn) -> Any:
    """The column as plain JSON (no `FileObject`s built, malformed values tolerated)."""
    return type_coerce(column.column, JSON(none_as_null=True)).label("value")


class _Plain(NamedTuple):
    """SQL over a document `v`: whether it is a plain stored file, and what it names."""

    test: str  # true for a plain stored file that names a path and a backend (never NULL)
    path: str
    backend: str  # its backend, else the column's


def _plain(connection: Connection, v: str, default: str | None) -> _Plain | None:
    """The plain-file SQL of this database, None when it cannot read JSON in SQL.

    Plain: the document is an object whose `path` is a non-empty string, whose `backend`
    is missing, null or a string, and whose `renditions` is not an object; the backend
    is its own unless empty, else the column's (`default`, bound as `:default`), and
    there is one. For exactly those documents `stored_files` yields one reference, and
    that one.
    """
    dialect = connection.dialect.name
    if dialect == "sqlite":
        path, own = f"json_extract({v}, '$.path')", f"json_extract({v}, '$.backend')"
        shape = (
            f"json_type({v}, '$.path') IS 'text' "
            f"AND coalesce(json_type({v}, '$.backend'), 'null') IN ('text', 'null') "
            f"AND json_type({v}, '$.renditions') IS NOT 'object'"
        )
    elif dialect == "postgresql":
        j = f"CAST({v} AS jsonb)"
        path, own = f"({j} ->> 'path')", f"({j} ->> 'backend')"
        shape = (
            f"coalesce(jsonb_typeof({j} -> 'path'), '') = 'string' "
            f"AND coalesce(jsonb_typeof({j} -> 'backend'), 'null') IN ('string', 'null') "
            f"AND coalesce(jsonb_typeof({j} -> 'renditions'), '') <> 'object'"
        )
    else:
        return None
    if default is None:
        backend = f"nullif({own}, '')"
        test = f"({shape} AND {path} <> '' AND {backend} IS NOT NULL)"
    else:
        backend = f"coalesce(nullif({own}, ''), :default)"
        test = f"({shape} AND {path} <> '')"
    return _Plain(test, path, backend)


def _names(connection: Connection, column: FileColumn) -> tuple[str, str]:
    preparer = connection.dialect.identifier_preparer
    return preparer.format_table(column.table), f"t.{preparer.quote(column.column.name)}"


def iter_references(
    connection: Connection, column: FileColumn, batch_size: int
) -> Iterator[list[tuple[str, str]]]:
    """Batches of the `(backend, path)` references stored in `column` (streamed, walked)."""
    default = column.stored_type.backend
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


class _Batches:
    """The keyset ranges of a table's rows, `batch_size` rows each, and SQL within one."""

    def __init__(self, connection: Connection, column: FileColumn, batch_size: int) -> None:
        self.conn = connection
        self.size = batch_size
        keys = list(column.table.primary_key.columns)
        self.key = keys[0] if keys else None  # no primary key: the whole table at once
        quote = connection.dialect.identifier_preparer.quote
        self.quoted = "" if self.key is None else f"t.{quote(self.key.name)}"

    def ranges(self) -> Iterator[dict[str, Any]]:
        """`{"low": ..., "high": ...}` of each batch (None: unbounded on that side)."""
        if self.key is None:
            yield {"low": None, "high": None}
            return
        low = None
        while True:
            stmt = select(self.key).order_by(self.key).offset(self.size - 1).limit(1)
            if low is not None:
                stmt = stmt.where(self.key > low)
            high = self.conn.scalar(stmt)
            yield {"low": low, "high": high}
            if high is None:
                return
            low = high

    def within(self, sql: str, bounds: dict[str, Any]) -> TextClause:
        """`sql` (a query of the table as `t`, with a WHERE clause) limited to `bounds`."""
        parameters = []
        for name, operator in (("low", ">"), ("high", "<=")):
            if bounds[name] is not None and self.key is not None:
                sql += f" AND {self.quoted} {operator} :{name}"
                parameters.append(bindparam(name, bounds[name], type_=self.key.type))
        return text(sql).bindparams(*parameters)


class ReferenceTable:
    """The temporary table of staged `(backend, path)` references, on one connection."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.conn = connection
        self.dialect = connection.dialect.name
        # Code-point order on PostgreSQL, as on SQLite (BINARY): the range scans need it.
        path_type = String(collation="C") if self.dialect == "postgresql" else String()
        self.table = Table(
            name,
            MetaData(),
            Column("backend", String(), nullable=False),
            Column("path", path_type, nullable=False),
            prefixes=["TEMPORARY"],
        )
        self.quoted = connection.dialect.identifier_preparer.format_table(self.table)
        self.ranges = self.dialect in RANGE_DIALECTS
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

    def stage(self, file_column: FileColumn, batch_size: int) -> Iterator[int]:
        """Stage the references of a column (before `index`).

        Yields the number of references of each batch of rows that holds any.
        """
        default = file_column.stored_type.backend
        table, v = _names(self.conn, file_column)
        plain = _plain(self.conn, v, default)
        if plain is None:
            for batch in iter_references(self.conn, file_column, batch_size):
                self.add(batch)
                yield len(batch)
            return
        batches = _Batches(self.conn, file_column, batch_size)
        insert_sql = (
            f"INSERT INTO {self.quoted} (backend, path) "
            f"SELECT {plain.backend}, {plain.path} FROM {table} AS t WHERE {plain.test}"
        )
        count_sql = f"SELECT count(*) FROM {table} AS t WHERE {v} IS NOT NULL"
        others_sql = f"SELECT {v} FROM {table} AS t WHERE {v} IS NOT NULL AND NOT {plain.test}"
        document = column("document", JSON(none_as_null=True))  # decoded as the type would
        parameters = {} if default is None else {"default": default}
        for bounds in batches.ranges():
            inserted = self.conn.execute(batches.within(insert_sql, bounds), parameters).rowcount
            rows = self.conn.scalar(batches.within(count_sql, bounds))
            refs: list[tuple[str, str]] = []
            if rows != inserted:  # some rows are not plain files: walk those
                others = batches.within(others_sql, bounds).columns(document)
                for value in self.conn.scalars(others, parameters):
                    refs.extend((key, data["path"]) for data, key in stored_files(value, default))
                self.add(refs)
            if inserted or refs:
                yield inserted + len(refs)

    def add(self, batch: Sequence[tuple[str, str]]) -> None:
        """Insert `(backend, path)` pairs (before `index`)."""
        if not batch:
            return
        if self.dialect == "sqlite":
            self.conn.exec_driver_sql(
                f"INSERT INTO {self.quoted} (backend, path) VALUES (?, ?)", batch
            )
        else:
            self.conn.execute(insert(self.table), [{"backend": b, "path": p} for b, p in batch])

    def index(self) -> None:
        """Index the filled table on `(backend, path)` (and give the planner its size)."""
        # Built once over the whole table: a sort, rather than one B-tree insert per row.
        postgresql = self.dialect == "postgresql"
        if postgresql:
            # The rows rewritten in index order: a page's probes then read a few heap
            # pages, not one per key (a large temporary table lives mostly outside the
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


class CandidateTable:
    """The temporary table of the objects waiting for their live re-check: path and size.

    Kept in the database, not in Python, so that a store with millions of orphans is
    re-checked in a few large groups (a few scans of the file columns) with the
    collector's memory still flat. Read back in keyset pages of `id`, then cleared.
    """

    def __init__(self, connection: Connection, name: str) -> None:
        self.conn = connection
        self.table = Table(
            name,
            MetaData(),
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("path", String(), nullable=False),
            Column("size", BigInteger(), nullable=False),
            prefixes=["TEMPORARY"],
        )
        self.quoted = connection.dialect.identifier_preparer.format_table(self.table)
        self.count = 0
        """How many candidates wait (since the last `clear`)."""
        self._unnest = text(
            f"INSERT INTO {self.quoted} (path, size) "
            "SELECT * FROM unnest(CAST(:paths AS TEXT[]), CAST(:sizes AS BIGINT[]))"
        ).bindparams(
            bindparam("paths", type_=ARRAY(String())),
            bindparam("sizes", type_=ARRAY(BigInteger())),
        )

    def create(self) -> None:
        self.table.create(self.conn)

    def drop(self) -> None:
        self.table.drop(self.conn, checkfirst=True)

    def add(self, objects: Sequence[tuple[str, int]]) -> None:
        """Hold `(path, size)` pairs until the next re-check.

        One statement per page on PostgreSQL (two arrays, `unnest`ed) and the driver's
        own `executemany` on SQLite: SQLAlchemy's generic many-row insert cost 16 µs a
        candidate on PostgreSQL, more than the re-check it serves.
        """
        if not objects:
            return
        dialect = self.conn.dialect.name
        if dialect == "postgresql":
            paths, sizes = zip(*objects, strict=True)
            self.conn.execute(self._unnest, {"paths": list(paths), "sizes": list(sizes)})
        elif dialect == "sqlite":
            sql = f"INSERT INTO {self.quoted} (path, size) VALUES (?, ?)"
            self.conn.exec_driver_sql(sql, list(objects))
        else:
            self.conn.execute(insert(self.table), [{"path": p, "size": s} for p, s in objects])
        self.count += len(objects)

    def ready(self) -> None:
        """Give the planner the table's size (PostgreSQL never analyzes temporary tables)."""
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(f"ANALYZE {self.quoted}")

    def paths(self) -> set[str]:
        """Every waiting path, in Python: the re-check of databases that cannot read JSON."""
        return set(self.conn.scalars(select(self.table.c.path)))

    def pages(self, size: int) -> Iterator[list[tuple[str, int]]]:
        """The waiting `(path, size)` pairs, `size` at a time, in the order they came."""
        c = self.table.c
        last = 0
        while True:
            stmt = select(c.id, c.path, c.size).where(c.id > last).order_by(c.id).limit(size)
            rows = self.conn.execute(stmt).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [(path, size_) for _, path, size_ in rows]

    def clear(self) -> None:
        self.conn.execute(delete(self.table))
        self.count = 0


def live_paths(connection: Connection, column: FileColumn, candidates: CandidateTable) -> set[str]:
    """Which of the waiting `candidates` some row of `column` references right now.

    Matches every stored file's path whatever its backend: on SQLite a `path` key
    anywhere in the document (`json_tree`); on PostgreSQL the top-level `path` of a
    plain stored file and a `path` anywhere in the other documents (jsonpath
    `$.**.path`); other databases walk every row. The database matches the scanned
    paths against the candidate table itself (SQLite builds a temporary index of it,
    PostgreSQL a hash semi-join), so one scan re-checks any number of candidates. A false
    match keeps an orphan, never deletes a referenced object.
    """
    table, v = _names(connection, column)
    waiting = f"(SELECT path FROM {candidates.quoted})"
    dialect = connection.dialect.name
    if dialect == "sqlite":
        sql = (
            f"SELECT DISTINCT jt.value FROM {table} AS t, json_tree({v}) AS jt "
            f"WHERE {v} IS NOT NULL AND jt.key = 'path' AND jt.value IN {waiting}"
        )
        return set(connection.scalars(text(sql)))
    if dialect == "postgresql":
        j = f"CAST({v} AS jsonb)"
        plain = (
            f"jsonb_typeof({j}) = 'object' "
            f"AND coalesce(jsonb_typeof({j} -> 'renditions'), '') <> 'object'"
        )
        sql = (
            f"SELECT {j} ->> 'path' FROM {table} AS t "
            f"WHERE {plain} AND {j} ->> 'path' IN {waiting} "
            f"UNION SELECT j.v #>> '{{}}' FROM {table} AS t, "
            f"jsonb_path_query({j}, 'lax $.**.path') AS j(v) "
            f"WHERE {v} IS NOT NULL AND NOT ({plain}) AND j.v #>> '{{}}' IN {waiting}"
        )
        return set(connection.scalars(text(sql)))
    wanted, found = candidates.paths(), set[str]()
    for batch in iter_references(connection, column, 1000):
        found.update(p for _, p in batch if p in wanted)
    return found
