"""The implementation of `sqlalchemy_obstore.migration`, documented and imported there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    Text,
    bindparam,
    cast,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._column import retarget, rewrite_stored_files, stored_files
from ._errors import ConfigurationError, StorageError
from ._file_columns import FileColumn, target_columns
from ._io import Call, bridge_bind, map_concurrently, run
from ._keys import join_key
from ._logging import library_logger
from ._migration_copy import Job, Mover, check_destination, delete, head, job_of
from ._registry import BackendRegistry, storages
from ._report_data import report_data
from ._row_batches import Row, on_connection, require_primary_key, row_batches, swap_row
from ._telemetry import run_span
from .backends import DEFAULT_CHUNK_SIZE, Backend, ObjectInfo

__all__ = (
    "DEFAULT_MAX_PASSES",
    "MigrationFailure",
    "MigrationProgress",
    "MigrationReport",
    "migrate",
    "migrate_async",
)

logger = library_logger("sqlalchemy_obstore.migration")

Phase: TypeAlias = Literal["copy", "delete"]
"""What a migration is doing when it reports progress."""


DEFAULT_MAX_PASSES = 5
"""Passes over the tables before the migration gives up on rows that keep changing."""
_PROBE_PREFIX = ".sqlalchemy-obstore-migrate-probe"


# -- public data ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MigrationFailure:
    """A reference that could not be migrated (the row keeps pointing at the source).

    Attributes:
        table: The table name.
        primary_key: The row's primary key values.
        column: The column name.
        path: The object path.
        error: What went wrong.
    """

    table: str
    primary_key: tuple[Any, ...]
    column: str
    path: str
    error: str


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """A snapshot passed to the `progress` callback after each batch.

    Attributes:
        phase: `copy` (copying objects and rewriting rows) or `delete` (deleting the
            migrated source objects).
        pass_number: The pass over the tables (1-based).
        table: The table being processed.
        rows_scanned: Rows read so far (all passes).
        rows_rewritten: Rows pointed at the destination so far.
        objects_copied: Objects copied so far.
        objects_skipped: Objects found already at the destination so far.
        bytes_copied: Bytes copied so far.
        objects_deleted: Source objects deleted so far.
        failures: Failures so far.
    """

    phase: Phase
    pass_number: int
    table: str
    rows_scanned: int
    rows_rewritten: int
    objects_copied: int
    objects_skipped: int
    bytes_copied: int
    objects_deleted: int
    failures: int


@dataclass(slots=True)
class MigrationReport:
    """The outcome of [`migrate`][sqlalchemy_obstore.migration.migrate].

    In a dry run nothing is written: `objects_copied`, `bytes_copied` and
    `rows_rewritten` count what a real run would copy and rewrite.

    Attributes:
        source: The source backend key.
        destination: The destination backend key.
        dry_run: Whether this was a dry run.
        passes: Passes made over the tables.
        rows_scanned: Rows read (all passes).
        rows_rewritten: Rows now pointing at the destination.
        rows_conflicted: Rewrites skipped because the application changed the row
            meanwhile (each is retried in the next pass).
        objects_copied: Objects copied to the destination.
        objects_skipped: Objects already at the destination (same size and checksum).
        bytes_copied: Bytes copied.
        objects_deleted: Source objects deleted (`delete_source=True`).
        rows_remaining: Rows still referencing the source at the end.
        failures: The references that could not be migrated (up to the report limit).
        failures_omitted: Failures beyond the report limit, counted only.
        delete_skipped_reason: Why the source objects were not deleted although
            `delete_source=True` was given, if so.
    """

    source: str
    destination: str
    dry_run: bool
    passes: int = 0
    rows_scanned: int = 0
    rows_rewritten: int = 0
    rows_conflicted: int = 0
    objects_copied: int = 0
    objects_skipped: int = 0
    bytes_copied: int = 0
    objects_deleted: int = 0
    rows_remaining: int = 0
    failures: list[MigrationFailure] = field(default_factory=list)
    failures_omitted: int = 0
    delete_skipped_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every row points at the destination and nothing failed."""
        return self.rows_remaining == 0 and not self.failures and not self.failures_omitted

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (primary keys as lists, `ok` included).

        Example:
            >>> MigrationReport("old", "new", dry_run=True).as_dict()["ok"]
            True
        """
        return report_data(self)


# -- what a row holds ---------------------------------------------------------------------------
def _sources(row: Row[FileColumn], backend: str) -> list[tuple[FileColumn, Mapping[str, Any]]]:
    """Each stored file of `row` that lives in `backend`, with its column."""
    return [
        (column, entry)
        for column, _, data in row.values
        for entry in _source_entries(data, column.stored_type.backend, backend)
    ]


def _source_entries(
    data: Any, default_backend: str | None, source: str
) -> Iterator[Mapping[str, Any]]:
    """Each stored file of a raw document that lives in `source`, renditions included."""
    return (entry for entry, backend in stored_files(data, default_backend) if backend == source)


def _rewritten(
    data: Any,
    default_backend: str | None,
    source: str,
    destination: str,
    infos: Mapping[str, ObjectInfo | None],
) -> Any:
    """A copy of a raw document with every `source` file pointing at `destination`."""

    def move(entry: dict[str, Any], backend: str) -> None:
        if backend == source:
            retarget(entry, destination, infos.get(entry["path"]))

    return rewrite_stored_files(data, default_backend, move)


# -- the migration ------------------------------------------------------------------------------
class _Migration:
    """The migration's plan over one sync connection (its storage calls go through `_io`)."""

    def __init__(
        self,
        connection: Connection,
        columns: list[FileColumn],
        *,
        source: Backend,
        destination: Backend,
        delete_source: bool,
        dry_run: bool,
        concurrency: int,
        batch_size: int,
        max_passes: int,
        chunk_size: int,
        report_limit: int,
        progress: Callable[[MigrationProgress], object] | None,
        owns_connection: bool,
    ) -> None:
        self.conn = connection
        self.columns = columns
        self.source = source
        self.destination = destination
        self.delete_source = delete_source
        self.dry_run = dry_run
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.max_passes = max_passes
        self.report_limit = report_limit
        self.progress = progress
        self.owns = owns_connection
        self.report = MigrationReport(source.key, destination.key, dry_run)
        self.mover = Mover(source, destination, chunk_size=chunk_size, dry_run=dry_run)
        self.pass_number = 0
        self.plain_key = json.dumps(source.key) == f'"{source.key}"'

    # -- driver -------------------------------------------------------------------------------
    def run(self) -> MigrationReport:
        for column in self.columns:
            require_primary_key(column.table)
        if self.delete_source and not self.dry_run:
            self._check_distinct_stores()
        remaining = 0
        for number in range(1, self.max_passes + 1):
            self.pass_number = number
            self.report.passes = number
            before = (self.report.rows_rewritten, self.report.rows_conflicted)
            # failures describe the last pass: a reference that failed before is tried again
            self.report.failures.clear()
            self.report.failures_omitted = 0
            remaining = sum(
                self._copy_table(table, columns) for table, columns in self._tables().items()
            )
            if remaining == 0 or self.dry_run:
                break
            rewritten = self.report.rows_rewritten - before[0]
            conflicted = self.report.rows_conflicted - before[1]
            if rewritten == 0 and conflicted == 0:
                break  # nothing moved: only failures are left, another pass cannot help
            remaining = -1  # unknown: the rows rewritten this pass may have changed again
        if remaining < 0:
            remaining = self._count_remaining()
        self.report.rows_remaining = remaining
        if self.delete_source and not self.dry_run:
            if not self.report.ok:
                self.report.delete_skipped_reason = (
                    f"{remaining} row(s) still reference the source and "
                    f"{len(self.report.failures) + self.report.failures_omitted} "
                    "failure(s) occurred; source objects are deleted only after a "
                    "complete migration. Run it again."
                )
            else:
                for table, columns in self._tables().items():
                    self._delete_table(table, columns)
        return self.report

    def _commit(self) -> None:
        if self.owns:
            self.conn.commit()

    def _notify(self, phase: Phase, table: str) -> None:
        if self.progress is None:
            return
        r = self.report
        self.progress(
            MigrationProgress(
                phase=phase,
                pass_number=self.pass_number,
                table=table,
                rows_scanned=r.rows_scanned,
                rows_rewritten=r.rows_rewritten,
                objects_copied=r.objects_copied,
                objects_skipped=r.objects_skipped,
                bytes_copied=r.bytes_copied,
                objects_deleted=r.objects_deleted,
                failures=len(r.failures) + r.failures_omitted,
            )
        )

    def _fail(self, column: FileColumn, key: tuple[Any, ...], path: str, error: str) -> None:
        # Logged as it happens: the report keeps only the last pass's failures, so one
        # that a later pass repaired would otherwise leave no trace.
        logger.warning(
            "Pass %d could not migrate %r (row %s of %s, column %s): %s",
            self.pass_number,
            path,
            key,
            column.table.fullname,
            column.column.name,
            error,
        )
        if len(self.report.failures) >= self.report_limit:
            self.report.failures_omitted += 1
            return
        self.report.failures.append(
            MigrationFailure(column.table.fullname, key, column.column.name, path, error)
        )

    def _check_distinct_stores(self) -> None:
        """Refuse `delete_source` when both keys lead to the same store (it would delete
        the copies): write a probe to the source and look for it at the destination."""
        # (under the source's prefix: a backend deletes nothing outside it)
        probe = join_key(self.source.prefix, _PROBE_PREFIX, uuid.uuid4().hex)
        run(Call(self.source.put, self.source.put_async, probe, b"probe"))
        try:
            shared = head(self.destination, probe) is not None
        finally:
            delete(self.source, [probe])
        if shared:
            raise ConfigurationError(
                f"Backends {self.source.key!r} and {self.destination.key!r} use the same "
                "store, so deleting the source objects would delete the migrated copies. "
                "Run without delete_source."
            )

    # -- reading rows -----------------------------------------------------------------------
    def _tables(self) -> dict[Table, list[FileColumn]]:
        tables: dict[Table, list[FileColumn]] = {}
        for column in self.columns:
            tables.setdefault(column.table, []).append(column)
        return tables

    def _batches(
        self, table: Table, columns: list[FileColumn], *, prefilter: bool
    ) -> Iterator[list[Row[FileColumn]]]:
        """Batches of rows (primary key, and each file column's raw text and JSON).

        Rows are read in primary-key order, each batch in its own short transaction
        (see `_row_batches.row_batches`), so nothing stays open while objects are copied.
        """
        conditions = []
        for column in columns:
            if prefilter and column.stored_type.backend != self.source.key and self.plain_key:
                # A file in `source` names it explicitly (the column's default is
                # another backend): only values whose text mentions the key can hold one.
                key_text = json.dumps(self.source.key)
                as_text = cast(column.column, Text)
                conditions.append(as_text.contains(key_text, autoescape=True))
            else:
                conditions.append(column.column.is_not(None))
        for batch in row_batches(
            self.conn,
            table,
            [(column, column.column) for column in columns],
            where=conditions,
            batch_size=self.batch_size,
            commit=self.owns,
        ):
            self.report.rows_scanned += len(batch)
            yield batch

    def _count_remaining(self) -> int:
        count = 0
        for table, columns in self._tables().items():
            for batch in self._batches(table, columns, prefilter=True):
                count += sum(1 for row in batch if _sources(row, self.source.key))
        return count

    # -- copying --------------------------------------------------------------------------------
    def _copy_table(self, table: Table, columns: list[FileColumn]) -> int:
        """One pass over a table; returns how many rows referenced the source."""
        found = 0
        for batch in self._batches(table, columns, prefilter=True):
            rows = []
            jobs: dict[str, Job] = {}
            for row in batch:
                entries = _sources(row, self.source.key)
                if entries:
                    rows.append((row, entries))
                    for column, entry in entries:
                        jobs.setdefault(entry["path"], job_of(entry, column))
            found += len(rows)
            if not rows:
                continue
            results = map_concurrently(
                self.mover.bring, list(jobs.values()), concurrency=self.concurrency
            )
            outcomes = dict(zip(jobs, results, strict=True))
            for outcome in results:
                if outcome.status == "skipped":
                    self.report.objects_skipped += 1
                elif outcome.status in {"copied", "would_copy"}:
                    self.report.objects_copied += 1
                    self.report.bytes_copied += outcome.size
            infos = {path: o.info for path, o in outcomes.items()}
            for row, entries in rows:
                failed = False
                for column, entry in entries:
                    outcome = outcomes[entry["path"]]
                    if outcome.status == "failed":
                        failed = True
                        self._fail(column, row.key, entry["path"], outcome.error or "failed")
                if failed:
                    continue
                if self.dry_run:
                    self.report.rows_rewritten += 1
                    continue
                self._rewrite(table, row, infos)
            self._commit()
            self._notify("copy", table.fullname)
        return found

    def _rewrite(
        self, table: Table, row: Row[FileColumn], infos: Mapping[str, ObjectInfo | None]
    ) -> None:
        """Point one row at the destination, unless the application changed it meanwhile."""
        changes = []
        for column, raw, data in row.values:
            default = column.stored_type.backend
            if next(_source_entries(data, default, self.source.key), None) is None:
                continue
            new = _rewritten(data, default, self.source.key, self.destination.key, infos)
            changes.append((column, raw, new))
        if swap_row(self.conn, table, row.key, changes):
            self.report.rows_rewritten += 1
        else:
            self.report.rows_conflicted += 1
            logger.info(
                "Row %s of %s changed during the migration; it is retried in the next pass",
                row.key,
                table.fullname,
            )

    # -- deleting the sources -------------------------------------------------------------------
    def _delete_table(self, table: Table, columns: list[FileColumn]) -> None:
        for batch in self._batches(table, columns, prefilter=False):
            jobs: dict[str, tuple[FileColumn, tuple[Any, ...], Job]] = {}
            for row in batch:
                for column, entry in _sources(row, self.destination.key):
                    jobs.setdefault(entry["path"], (column, row.key, job_of(entry, column)))
            if not jobs:
                continue
            candidates = list(jobs.values())
            verdicts = map_concurrently(
                self.mover.deletable, [job for *_, job in candidates], concurrency=self.concurrency
            )
            chosen = []
            for (column, key, job), verdict in zip(candidates, verdicts, strict=True):
                if verdict is None:
                    chosen.append((column, key, job))
                elif verdict:
                    self._fail(column, key, job.path, verdict)
            # The last look, right before the delete: a row the application wrote back
            # to the source meanwhile keeps its object.
            still = _source_references(
                self.conn, self.columns, self.source.key, [job.path for *_, job in chosen]
            )
            self._commit()
            chosen = [c for c in chosen if c[2].path not in still]
            if chosen:
                try:
                    delete(self.source, [job.path for *_, job in chosen])
                except StorageError as exc:
                    for column, key, job in chosen:
                        self._fail(column, key, job.path, f"deleting the source failed: {exc}")
                else:
                    self.report.objects_deleted += len(chosen)
            self._notify("delete", table.fullname)


def _source_references(
    connection: Connection, columns: Sequence[FileColumn], source: str, paths: Sequence[str]
) -> set[str]:
    """Which of `paths` some row references in backend `source` right now.

    Rows mentioning one of the paths are found with SQLite's `json_tree` or PostgreSQL's
    jsonpath (other databases rescan the column) and parsed to check the backend.
    """
    found: set[str] = set()
    wanted = set(paths)
    if not wanted:
        return found
    dialect = connection.dialect.name
    preparer = connection.dialect.identifier_preparer
    for column in columns:
        table = preparer.format_table(column.table)
        name = preparer.quote(column.column.name)
        if dialect == "sqlite":
            sql = (
                f"SELECT CAST(t.{name} AS TEXT) FROM {table} AS t WHERE t.{name} IS NOT NULL "
                f"AND EXISTS (SELECT 1 FROM json_tree(t.{name}) AS jt "
                "WHERE jt.key = 'path' AND jt.value IN :paths)"
            )
        elif dialect == "postgresql":
            sql = (
                f"SELECT CAST(t.{name} AS TEXT) FROM {table} AS t WHERE EXISTS (SELECT 1 FROM "
                f"jsonb_path_query(CAST(t.{name} AS jsonb), 'lax $.**.path') AS j(v) "
                "WHERE j.v #>> '{}' IN :paths)"
            )
        else:
            sql = f"SELECT CAST(t.{name} AS TEXT) FROM {table} AS t WHERE t.{name} IS NOT NULL"
        stmt = text(sql)
        params: dict[str, Any] = {}
        if ":paths" in sql:
            stmt = stmt.bindparams(bindparam("paths", expanding=True))
            params["paths"] = list(wanted)
        for (raw,) in connection.execute(stmt, params):
            try:
                data = json.loads(raw)
            except (TypeError, ValueError):
                continue
            for entry in _source_entries(data, column.stored_type.backend, source):
                if entry["path"] in wanted:
                    found.add(entry["path"])
    return found


# -- entry points -------------------------------------------------------------------------------
def _prepare(
    registry: BackendRegistry,
    source: str,
    destination: str,
    concurrency: int,
    batch_size: int,
    max_passes: int,
    chunk_size: int,
) -> tuple[Backend, Backend]:
    if source == destination:
        raise ConfigurationError(
            f"source and destination are both {source!r}; name two different backends."
        )
    if concurrency < 1 or batch_size < 1 or max_passes < 1 or chunk_size < 1:
        raise ConfigurationError(
            "concurrency, batch_size, max_passes and chunk_size must be at least 1."
        )
    pair = registry.get_backend(source), registry.get_backend(destination)
    check_destination(*pair)  # before anything is read or written
    return pair


class _Options(TypedDict):
    """What a migration does, as `migrate` was asked."""

    delete_source: bool
    dry_run: bool
    concurrency: int
    batch_size: int
    max_passes: int
    chunk_size: int
    report_limit: int
    progress: Callable[[MigrationProgress], object] | None


def migrate(
    bind: Engine | Connection,
    target: Any,
    *,
    source: str,
    destination: str,
    registry: BackendRegistry = storages,
    delete_source: bool = False,
    dry_run: bool = False,
    concurrency: int = 8,
    batch_size: int = 500,
    progress: Callable[[MigrationProgress], object] | None = None,
    max_passes: int = DEFAULT_MAX_PASSES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> MigrationReport:
    """Copy every object referenced in backend `source` to `destination` and rewrite the rows.

    Resumable and idempotent: objects already at the destination (same size, and same
    checksum when one was recorded) are not copied again, and only rows still naming
    `source` are rewritten, each with compare-and-swap so that a row the application
    changes meanwhile is never overwritten (it is picked up by the next pass). See the
    module documentation for the whole procedure.

    Args:
        bind: The database. With an `Engine` the migration opens its own connection and
            commits after every batch (an interrupted run keeps its progress); with a
            `Connection` it runs inside the caller's transaction and leaves it open.
        target: A `MetaData`, a declarative base, or a sequence of them: every
            `StoredObject` column in them is migrated. It must include every table that
            references `source` when `delete_source=True`.
        source: The backend key to move away from.
        destination: The backend key to move to.
        registry: Where both keys are resolved.
        delete_source: After a complete, verified migration, delete the source objects
            that were migrated (never one a row still references in `source`).
        dry_run: Only count what would be copied and rewritten; nothing is written.
        concurrency: Objects copied at once by the async version (the sync version
            copies one at a time).
        batch_size: Rows read, and rewritten in one transaction, at a time.
        progress: Called with a
            [`MigrationProgress`][sqlalchemy_obstore.migration.MigrationProgress]
            after every batch (a plain function, also for `migrate_async`). An
            exception it raises stops the migration (what was committed stays; run it
            again to resume).
        max_passes: Passes over the tables before giving up on rows that keep changing
            or keep failing.
        chunk_size: Streaming read size and multipart part size.
        report_limit: Failures listed in the report (the rest are counted).

    Returns:
        A [`MigrationReport`][sqlalchemy_obstore.migration.MigrationReport]; `report.ok`
        tells whether every row now points at `destination`.

    The destination must manage the paths it receives: its prefix must be the source's
    or contain it (or it has none), since a backend deletes, and garbage collection
    lists, only under its prefix. Otherwise the migration refuses before anything is
    copied. A reference whose path lies outside the destination's prefix all the same
    (written before the source got its prefix) fails on its own, in `report.failures`:
    it is not copied and its row keeps naming the source.

    Raises:
        ConfigurationError: For equal source and destination, a destination whose
            prefix does not contain the source's, a table without a primary key,
            options below 1, or `delete_source` with two keys on the same store.
        BackendNotFoundError: If a key is not registered.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages
        >>> metadata = MetaData()
        >>> docs = Table("docs", metadata, Column("id", Integer, primary_key=True),
        ...              Column("file", StoredObject("old")))
        >>> engine = create_engine("sqlite://")
        >>> metadata.create_all(engine)
        >>> with storages.temporary(ObstoreBackend("old", "memory://"),
        ...                         ObstoreBackend("new", "memory://")):
        ...     f = FileObject(filename="a.txt", content=b"hello", backend="old").save()
        ...     with engine.begin() as conn:
        ...         _ = conn.execute(insert(docs), {"id": 1, "file": f})
        ...     report = migrate(engine, metadata, source="old", destination="new")
        ...     with engine.connect() as conn:
        ...         moved = conn.execute(docs.select()).one().file
        ...     report.ok, report.objects_copied, moved.backend, moved.get_content()
        (True, 1, 'new', b'hello')
        >>> engine.dispose()
    """
    source_backend, destination_backend = _prepare(
        registry, source, destination, concurrency, batch_size, max_passes, chunk_size
    )
    columns = target_columns(target)
    options: _Options = {
        "delete_source": delete_source,
        "dry_run": dry_run,
        "concurrency": concurrency,
        "batch_size": batch_size,
        "max_passes": max_passes,
        "chunk_size": chunk_size,
        "report_limit": report_limit,
        "progress": progress,
    }

    def run(connection: Connection, owns: bool) -> MigrationReport:
        return _Migration(
            connection,
            columns,
            source=source_backend,
            destination=destination_backend,
            owns_connection=owns,
            **options,
        ).run()

    facts: dict[str, str | bool] = {
        "sqlalchemy_obstore.migrate.source": source,
        "sqlalchemy_obstore.migrate.destination": destination,
        "sqlalchemy_obstore.migrate.dry_run": dry_run,
        "sqlalchemy_obstore.migrate.delete_source": delete_source,
    }
    with run_span("migrate", facts) as span:
        report = on_connection(bind, run)
        span.record(_migration_facts(report), complete=report.ok)
    return report


def _migration_facts(report: MigrationReport) -> dict[str, Any]:
    """The attributes of a migration's span."""
    names = (
        "passes",
        "rows_scanned",
        "rows_rewritten",
        "rows_remaining",
        "objects_copied",
        "objects_skipped",
        "bytes_copied",
        "objects_deleted",
    )
    facts: dict[str, Any] = {f"sqlalchemy_obstore.migrate.{n}": getattr(report, n) for n in names}
    facts["sqlalchemy_obstore.migrate.failures"] = len(report.failures) + report.failures_omitted
    return facts


async def migrate_async(
    bind: AsyncEngine | AsyncConnection,
    target: Any,
    *,
    source: str,
    destination: str,
    registry: BackendRegistry = storages,
    delete_source: bool = False,
    dry_run: bool = False,
    concurrency: int = 8,
    batch_size: int = 500,
    progress: Callable[[MigrationProgress], object] | None = None,
    max_passes: int = DEFAULT_MAX_PASSES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> MigrationReport:
    """Async version of [`migrate`][sqlalchemy_obstore.migration.migrate].

    Takes an `AsyncEngine` or `AsyncConnection`; storage is called through obstore's
    async API, with up to `concurrency` objects copied at once.

    Example:
        >>> async def main(engine, Base):  # doctest: +SKIP
        ...     report = await migrate_async(
        ...         engine, Base, source="local", destination="s3", concurrency=16
        ...     )
        ...     assert report.ok, report.as_dict()
    """
    return await bridge_bind(
        bind,
        migrate,
        target,
        source=source,
        destination=destination,
        registry=registry,
        delete_source=delete_source,
        dry_run=dry_run,
        concurrency=concurrency,
        batch_size=batch_size,
        progress=progress,
        max_passes=max_passes,
        chunk_size=chunk_size,
        report_limit=report_limit,
    )
