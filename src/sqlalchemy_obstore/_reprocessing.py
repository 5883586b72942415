"""The implementation of `sqlalchemy_obstore.reprocessing`, documented and imported there."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._attributes import object_attributes
from ._column import COLUMN_FORMAT_VERSION, ImageFacts, is_renditions
from ._content import format_checksum
from ._errors import ConfigurationError, FileTooLargeError, StorageError
from ._file_columns import FileColumn, target_columns
from ._image_job import Processed, process_image, process_image_async, rendition_filename
from ._io import Call, bridge_bind, iterate, map_concurrently, run
from ._logging import library_logger
from ._prefixes import manages, prefix_of
from ._processing import ImagePolicy, Rendition
from ._registry import BackendRegistry, storages
from ._row_batches import Row, on_connection, require_primary_key, row_batches, swap_row
from ._types import StoredObject
from ._validation import UploadPolicy, effective_policy
from .backends import DEFAULT_CHUNK_SIZE, Backend

__all__ = (
    "ReprocessFailure",
    "ReprocessProgress",
    "ReprocessReport",
    "reprocess",
    "reprocess_async",
)

logger = library_logger("sqlalchemy_obstore.reprocessing")


# -- public data ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReprocessFailure:
    """A stored image that could not be reprocessed (its row is left as it was).

    Attributes:
        table: The table name.
        primary_key: The row's primary key values.
        column: The column name.
        path: The object path of the original.
        error: What went wrong.
    """

    table: str
    primary_key: tuple[Any, ...]
    column: str
    path: str
    error: str


@dataclass(frozen=True, slots=True)
class ReprocessProgress:
    """A snapshot passed to the `progress` callback after each batch.

    Attributes:
        table: The table being processed.
        last_key: The primary key of the last row of the batch: pass
            `start_after={table: last_key}` to resume after it.
        rows_scanned: Rows read so far.
        rows_updated: Rows rewritten so far.
        renditions_built: Renditions built so far.
        facts_recorded: Images whose size was recorded so far.
        failures: Failures so far.
    """

    table: str
    last_key: tuple[Any, ...]
    rows_scanned: int
    rows_updated: int
    renditions_built: int
    facts_recorded: int
    failures: int


@dataclass(slots=True)
class ReprocessReport:
    """The outcome of [`reprocess`][sqlalchemy_obstore.reprocessing.reprocess].

    In a dry run nothing is read or written: `rows_updated`, `renditions_built` and
    `facts_recorded` count what a real run would do.

    Attributes:
        dry_run: Whether this was a dry run.
        rows_scanned: Rows read.
        rows_updated: Rows rewritten with new renditions or image facts.
        rows_conflicted: Rows left alone because the application changed them
            meanwhile (run again to pick them up).
        images_up_to_date: Stored images that needed nothing.
        renditions_built: Renditions built and stored.
        facts_recorded: Images (originals) whose width and height were recorded.
        bytes_written: Bytes of the renditions stored.
        objects_deleted: Replaced renditions deleted after their row's commit.
        objects_left: Replaced renditions not deleted (the run was given a
            `Connection`, or a delete failed): garbage collection removes them.
        columns_skipped: Columns without an image policy (`table.column`).
        failures: The images that could not be reprocessed (up to the report limit).
        failures_omitted: Failures beyond the report limit, counted only.
    """

    dry_run: bool
    rows_scanned: int = 0
    rows_updated: int = 0
    rows_conflicted: int = 0
    images_up_to_date: int = 0
    renditions_built: int = 0
    facts_recorded: int = 0
    bytes_written: int = 0
    objects_deleted: int = 0
    objects_left: int = 0
    columns_skipped: list[str] = field(default_factory=list)
    failures: list[ReprocessFailure] = field(default_factory=list)
    failures_omitted: int = 0

    @property
    def ok(self) -> bool:
        """Whether every image is up to date: nothing failed and no row conflicted."""
        return not self.failures and not self.failures_omitted and not self.rows_conflicted

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (primary keys as lists, `ok` included).

        Example:
            >>> ReprocessReport(dry_run=True).as_dict()["ok"]
            True
        """
        data = asdict(self)
        data["failures"] = [
            {**asdict(f), "primary_key": [_jsonable(v) for v in f.primary_key]}
            for f in self.failures
        ]
        data["ok"] = self.ok
        return data


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


# -- what a row needs -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Target:
    """A column to reprocess, with the image policy that applies to it."""

    column: FileColumn
    policy: ImagePolicy
    registry: BackendRegistry  # the column's own, else the one `reprocess` was given


@dataclass(slots=True)
class _Work:
    """One stored image of a row that needs work."""

    target: _Target
    index: int | None  # its position in a list column, `None` for a single-file column
    entry: Mapping[str, Any]
    backend: str
    build: tuple[Rendition, ...]  # renditions to (re)build
    facts: bool  # whether its width and height are missing
    # what doing it gave:
    image: ImageFacts | None = None
    renditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: int = 0
    error: str | None = None

    @property
    def path(self) -> str:
        path: str = self.entry["path"]
        return path


def _image_facts(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("width"), int)
        and isinstance(value.get("height"), int)
    )


def _spec(rendition: Mapping[str, Any] | None) -> Any:
    """The spec a stored rendition records it was made to (`None`: absent or unknown)."""
    facts = rendition.get("image") if rendition is not None else None
    return facts.get("spec") if isinstance(facts, Mapping) else None


def _image_backend(entry: Any, default: str | None) -> str | None:
    """The backend of `entry` when it is a raw stored image (else `None`)."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        return None
    backend = entry.get("backend") or default
    content_type = entry.get("content_type")
    if not isinstance(backend, str) or (
        isinstance(content_type, str) and not content_type.startswith("image/")
    ):
        return None
    return backend


def _needs(
    target: _Target, index: int | None, entry: Mapping[str, Any], backend: str
) -> _Work | None:
    """The work a raw stored image needs under `target`'s policy, if any."""
    held = entry.get("renditions") or {}
    if not is_renditions(held):
        held = {}
    build = tuple(r for r in target.policy.renditions if _spec(held.get(r.name)) != r.spec)
    facts = not _image_facts(entry.get("image"))
    if not build and not facts:
        return None
    return _Work(target, index, entry, backend, build, facts)


def _job_policy(policy: ImagePolicy, build: tuple[Rendition, ...]) -> ImagePolicy:
    """The policy of one reprocessing job: the limits that bound the work, and `build`.

    The checks on what an upload may be (its dimensions, aspect ratio) are left out:
    the file is stored already, and a policy tightened since must not stop its
    renditions from being made.
    """
    return dataclasses.replace(
        policy,
        normalize=None,
        renditions=build,
        max_width=None,
        max_height=None,
        min_width=None,
        min_height=None,
        min_aspect_ratio=None,
        max_aspect_ratio=None,
    )


# -- the run --------------------------------------------------------------------------------------
class _Reprocessing:
    """The run's plan over one sync connection (its storage calls go through `_io`)."""

    def __init__(
        self,
        connection: Connection,
        targets: list[_Target],
        *,
        owns_connection: bool,
        dry_run: bool,
        batch_size: int,
        concurrency: int,
        chunk_size: int,
        report_limit: int,
        start_after: Mapping[str, Sequence[Any]],
        progress: Callable[[ReprocessProgress], object] | None,
        report: ReprocessReport,
    ) -> None:
        self.conn = connection
        self.targets = targets
        self.owns = owns_connection
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.report_limit = report_limit
        self.start_after = start_after
        self.progress = progress
        self.report = report

    def run(self) -> ReprocessReport:
        tables: dict[Table, list[_Target]] = {}
        for target in self.targets:
            tables.setdefault(target.column.table, []).append(target)
        for table in tables:
            require_primary_key(table)
        for table, targets in tables.items():
            self._table(table, targets)
        return self.report

    def _batches(self, table: Table, targets: list[_Target]) -> Iterator[list[Row[_Target]]]:
        """Batches of rows: primary key, and each target column's raw text and JSON."""
        for batch in row_batches(
            self.conn,
            table,
            [(t, t.column.column) for t in targets],
            where=[t.column.column.is_not(None) for t in targets],
            batch_size=self.batch_size,
            commit=self.owns,
            start_after=self.start_after.get(table.fullname),
        ):
            self.report.rows_scanned += len(batch)
            yield batch

    def _commit(self) -> None:
        if self.owns:
            self.conn.commit()

    def _table(self, table: Table, targets: list[_Target]) -> None:
        for batch in self._batches(table, targets):
            planned: list[tuple[tuple[Any, ...], list[tuple[_Target, str, Any, list[_Work]]]]] = []
            works: list[_Work] = []
            for batch_row in batch:
                row = []
                for target, raw, data in batch_row.values:
                    default = target.column.stored_type.backend
                    items = list(enumerate(data)) if isinstance(data, list) else [(None, data)]
                    found = []
                    for index, item in items:
                        backend = _image_backend(item, default)
                        if backend is None:
                            continue
                        needed = _needs(target, index, item, backend)
                        if needed is None:
                            self.report.images_up_to_date += 1
                        else:
                            found.append(needed)
                    if found:
                        row.append((target, raw, data, found))
                        works.extend(found)
                if row:
                    planned.append((batch_row.key, row))
            if self.dry_run:
                for work in works:
                    self.report.renditions_built += len(work.build)
                    self.report.facts_recorded += work.facts
                self.report.rows_updated += len(planned)
            elif works:
                map_concurrently(self._do, works, concurrency=self.concurrency)
                replaced = self._rewrite_batch(table, planned)
                self._commit()
                self._delete(replaced, after_commit=self.owns)
            if batch:
                self._notify(table.fullname, batch[-1].key)

    # -- one image ------------------------------------------------------------------------------
    def _do(self, work: _Work) -> None:
        """Read, process and store what `work` needs; a failure is recorded on it."""
        backend: Backend | None = None
        try:
            backend = work.target.registry.get_backend(work.backend)
            if work.build and not manages(backend, work.path):
                # Renditions go next to the original: outside the prefix too, where the
                # backend could never delete them. Nothing is read or written.
                work.error = (
                    f"not reprocessed: the original lies outside {prefix_of(backend)}, "
                    "and its renditions would be stored next to it, where the backend "
                    "could neither delete them nor collect them as garbage; give the "
                    "backend a prefix that contains the path (or none)"
                )
                return
            self._make(work, backend)
        except (StorageError, OSError) as exc:
            work.error = str(exc) or type(exc).__name__
            work.image = None
            if work.renditions and backend is not None:  # nothing references them: they go
                stored = [r["path"] for r in work.renditions.values()]
                work.renditions = {}
                try:
                    run(Call(backend.delete, backend.delete_async, stored))
                except Exception:
                    logger.warning("Could not delete %d new rendition(s)", len(stored))

    def _read(self, work: _Work, backend: Backend, limit: int) -> bytes:
        """The original's bytes, refused as soon as they pass `limit`."""
        size = work.entry.get("size")
        if isinstance(size, int) and size > limit:
            raise FileTooLargeError(
                limit=limit, size_seen=size, backend=backend.key, path=work.path
            )
        chunks: list[bytes] = []
        read = 0
        for chunk in iterate(
            backend.iter_chunks, backend.iter_chunks_async, work.path, chunk_size=self.chunk_size
        ):
            read += len(chunk)
            if read > limit:
                raise FileTooLargeError(
                    limit=limit, size_seen=read, backend=backend.key, path=work.path
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _make(self, work: _Work, backend: Backend) -> None:
        policy = work.target.policy
        data = self._read(work, backend, policy.max_bytes)
        processed: Processed = run(
            Call(
                process_image,
                process_image_async,
                data,
                _job_policy(policy, work.build),
                backend=backend.key,
                path=work.path,
                decode=bool(work.build),
            )
        )
        del data
        work.image = processed.facts
        filename = work.entry.get("filename")
        if not isinstance(filename, str) or not filename:
            filename = work.path.rsplit("/", 1)[-1]
        algorithm = backend.checksum_algorithm
        for derived in processed.renditions:
            rendition = derived.rendition
            path = (
                f"{work.path}.renditions/{rendition.name}.{uuid.uuid4().hex[:12]}."
                f"{rendition.extension}"
            )
            name = rendition_filename(filename, rendition)
            attributes = object_attributes(
                filename=name,
                content_type=derived.content_type,
                metadata={},
                cache_control=work.target.column.stored_type.cache_control,
                include_metadata=False,
            )
            result = run(
                Call(
                    backend.put,
                    backend.put_async,
                    path,
                    derived.data,
                    attributes=attributes,
                    create_only=True,
                )
            )
            checksum = None
            if algorithm is not None:
                digest = hashlib.new(algorithm, derived.data).hexdigest()
                checksum = format_checksum(algorithm, digest)
            work.renditions[rendition.name] = {
                "v": COLUMN_FORMAT_VERSION,
                "backend": backend.key,
                "path": path,
                "filename": name,
                "content_type": derived.content_type,
                "size": len(derived.data),
                "etag": result.etag,
                "version": result.version,
                "checksum": checksum,
                "last_modified": datetime.now(timezone.utc).isoformat(),
                "metadata": {},
                "image": derived.facts.to_dict(),
            }
            work.written += len(derived.data)

    # -- rows -----------------------------------------------------------------------------------
    def _rewrite_batch(
        self,
        table: Table,
        planned: list[tuple[tuple[Any, ...], list[tuple[_Target, str, Any, list[_Work]]]]],
    ) -> list[tuple[Backend, str]]:
        """Rewrite each row whose work succeeded; the `(backend, path)`s it replaced."""
        replaced: list[tuple[Backend, str]] = []
        for key, row in planned:
            changes: list[tuple[FileColumn, str, Any]] = []
            old: list[tuple[Backend, str]] = []
            done: list[_Work] = []
            for target, raw, data, works in row:
                new = data
                for work in works:
                    if work.error is not None:
                        self._fail(table, key, work)
                        continue
                    new, gone = _applied(new, work)
                    old.extend((target.registry.get_backend(b), p) for b, p in gone)
                    done.append(work)
                if new is not data:
                    changes.append((target.column, raw, new))
            if not changes:
                continue
            if swap_row(self.conn, table, key, changes):
                self.report.rows_updated += 1
                for work in done:
                    self.report.renditions_built += len(work.renditions)
                    self.report.facts_recorded += work.facts
                    self.report.bytes_written += work.written
                replaced.extend(old)
            else:
                self.report.rows_conflicted += 1
                logger.info(
                    "Row %s of %s changed during reprocessing; run again to pick it up",
                    key,
                    table.fullname,
                )
                made = [
                    (w.target.registry.get_backend(w.backend), r["path"])
                    for w in done
                    for r in w.renditions.values()
                ]
                self._delete(
                    made,
                    after_commit=True,  # never referenced by any row: safe now
                )
        return replaced

    def _delete(self, paths: list[tuple[Backend, str]], *, after_commit: bool) -> None:
        if not paths:
            return
        if not after_commit:
            self.report.objects_left += len(paths)
            return
        by_backend: dict[int, tuple[Backend, list[str]]] = {}
        for backend, path in paths:
            by_backend.setdefault(id(backend), (backend, []))[1].append(path)
        for store, group in by_backend.values():
            name = store.key
            try:
                run(Call(store.delete, store.delete_async, group))
            except Exception:
                # The rows are committed: a failed delete leaves orphans for gc, no error.
                logger.warning("Could not delete %d replaced rendition(s) in %r", len(group), name)
                self.report.objects_left += len(group)
            else:
                self.report.objects_deleted += len(group)

    def _fail(self, table: Table, key: tuple[Any, ...], work: _Work) -> None:
        if len(self.report.failures) >= self.report_limit:
            self.report.failures_omitted += 1
            return
        self.report.failures.append(
            ReprocessFailure(
                table.fullname,
                key,
                work.target.column.column.name,
                work.path,
                work.error or "failed",
            )
        )

    def _notify(self, table: str, last_key: tuple[Any, ...]) -> None:
        if self.progress is None:
            return
        r = self.report
        self.progress(
            ReprocessProgress(
                table=table,
                last_key=last_key,
                rows_scanned=r.rows_scanned,
                rows_updated=r.rows_updated,
                renditions_built=r.renditions_built,
                facts_recorded=r.facts_recorded,
                failures=len(r.failures) + r.failures_omitted,
            )
        )


def _applied(data: Any, work: _Work) -> tuple[Any, list[tuple[str, str]]]:
    """A copy of the raw column value `data` with `work`'s results; the paths it replaced."""
    if work.index is None:
        entry = dict(data)
    else:
        data = list(data)
        entry = dict(data[work.index])
    if work.image is not None and work.facts:
        entry["image"] = work.image.to_dict()
    gone: list[tuple[str, str]] = []
    if work.renditions:
        held = entry.get("renditions")
        renditions = dict(held) if is_renditions(held) else {}
        for name, new in work.renditions.items():
            previous = renditions.get(name)
            if previous is not None and previous.get("path") != new["path"]:
                gone.append((previous.get("backend") or work.backend, previous["path"]))
            renditions[name] = new
        entry["renditions"] = renditions
    if work.index is None:
        return entry, gone
    data[work.index] = entry
    return data, gone


# -- entry points -------------------------------------------------------------------------------
def _columns(target: Any) -> list[FileColumn]:
    """The columns `target` names: `Model.column`s, `Column`s, or what migrate takes."""
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    found: list[FileColumn] = []
    rest: list[Any] = []
    for item in items:
        column = getattr(item, "expression", item)
        if isinstance(column, Column) and isinstance(column.type, StoredObject):
            if not isinstance(column.table, Table):
                raise ConfigurationError(f"Column {column!r} belongs to no table.")
            found.append(FileColumn(column.table, column, column.type))
        else:
            rest.append(item)
    if rest:
        found.extend(target_columns(rest if isinstance(target, (list, tuple)) else target))
    return found


def _targets(
    columns: list[FileColumn],
    policy: ImagePolicy | UploadPolicy | None,
    registry: BackendRegistry,
    report: ReprocessReport,
) -> list[_Target]:
    targets = []
    for column in columns:
        image: ImagePolicy | None
        if isinstance(policy, ImagePolicy):
            image = policy
        elif isinstance(policy, UploadPolicy):
            image = policy.image
        else:
            stored = column.stored_type
            backend_policy = None
            if stored.backend is not None:
                chosen = stored.registry or registry
                backend_policy = getattr(chosen.get_backend(stored.backend), "policy", None)
            merged = effective_policy(backend_policy, stored.policy)
            image = merged.image if merged is not None else None
        if image is None:
            report.columns_skipped.append(column.name)
        else:
            targets.append(_Target(column, image, column.stored_type.registry or registry))
    return targets


def reprocess(
    bind: Engine | Connection,
    target: Any,
    *,
    policy: ImagePolicy | UploadPolicy | None = None,
    registry: BackendRegistry = storages,
    dry_run: bool = False,
    batch_size: int = 100,
    concurrency: int = 4,
    start_after: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[ReprocessProgress], object] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> ReprocessReport:
    """Build missing or changed renditions, and record missing image sizes, of stored files.

    See the module documentation for the whole procedure: images are read and decoded
    one at a time per worker under the image memory budget, new renditions are stored
    under fresh keys before their row is rewritten (compare-and-swap: a row the
    application changes meanwhile is never overwritten), and the renditions they
    replace are deleted only after the commit. Running it again resumes an interrupted
    run; a row already up to date costs no storage call.

    Args:
        bind: The database. With an `Engine` every batch is committed on its own (an
            interrupted run keeps its progress); with a `Connection` the run stays
            inside the caller's transaction and leaves it open.
        target: A mapped column (`Photo.image`), a `StoredObject` `Column`, a list of
            them, or a `MetaData`, a declarative base or a sequence of them (every
            `StoredObject` column in them).
        policy: The image policy to bring the files to (an `ImagePolicy`, or an
            `UploadPolicy` holding one). By default each column's own: its backend's
            policy layered with the column's, as uploads use it. Columns without an
            image policy are skipped (listed in `report.columns_skipped`).
        registry: Where backend keys are resolved (a column's own registry first).
        dry_run: Only count what would be done, from the rows alone: nothing is read
            from storage or written.
        batch_size: Rows read, and rewritten in one transaction, at a time.
        concurrency: Images processed at once by the async version (the sync version
            does one at a time). Each holds its original in memory (at most
            `ImagePolicy.max_bytes`) and reserves its decoding memory from the
            process-wide image budget.
        start_after: Skip, per table (by its full name), the rows up to this primary
            key: `{progress.table: progress.last_key}` resumes after the last batch a
            progress callback saw.
        progress: Called with a
            [`ReprocessProgress`][sqlalchemy_obstore.reprocessing.ReprocessProgress]
            after every batch (a plain function, also for `reprocess_async`). An
            exception it raises stops the run (what was committed stays).
        chunk_size: Streaming read size.
        report_limit: Failures listed in the report (the rest are counted).

    Returns:
        A [`ReprocessReport`][sqlalchemy_obstore.reprocessing.ReprocessReport].

    Raises:
        ConfigurationError: For options below 1, a table without a primary key, or a
            target with no image-policy column.
        BackendNotFoundError: If a backend key is not registered.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages
        >>> from sqlalchemy_obstore.processing import ImagePolicy, Rendition
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (64, 32)).save(buffer, "PNG")
        >>> metadata = MetaData()
        >>> photos = Table("photos", metadata, Column("id", Integer, primary_key=True),
        ...                Column("image", StoredObject("media")))
        >>> engine = create_engine("sqlite://")
        >>> metadata.create_all(engine)
        >>> policy = ImagePolicy(renditions=(Rendition("thumb", 16, 16),))
        >>> with storages.temporary(ObstoreBackend("media", "memory://")):
        ...     f = FileObject(filename="a.png", content=buffer.getvalue(), backend="media")
        ...     with engine.begin() as conn:
        ...         _ = conn.execute(insert(photos), {"id": 1, "image": f.save()})
        ...     report = reprocess(engine, photos.c.image, policy=policy)
        ...     with engine.connect() as conn:
        ...         image = conn.execute(photos.select()).one().image
        >>> report.renditions_built, image.width, image.renditions["thumb"].width
        (1, 64, 16)
        >>> engine.dispose()
    """
    if batch_size < 1 or concurrency < 1 or chunk_size < 1 or report_limit < 0:
        raise ConfigurationError("batch_size, concurrency and chunk_size must be at least 1.")
    if policy is not None and not isinstance(policy, (ImagePolicy, UploadPolicy)):
        raise ConfigurationError(
            f"policy takes an ImagePolicy or an UploadPolicy, not {type(policy).__name__}."
        )
    report = ReprocessReport(dry_run=dry_run)
    targets = _targets(_columns(target), policy, registry, report)
    if not targets:
        raise ConfigurationError(
            "No column of the target has an image policy: pass policy=ImagePolicy(...), or "
            "name columns whose StoredObject (or backend) policy has one."
        )

    def work(connection: Connection, owns: bool) -> ReprocessReport:
        return _Reprocessing(
            connection,
            targets,
            owns_connection=owns,
            dry_run=dry_run,
            batch_size=batch_size,
            concurrency=concurrency,
            chunk_size=chunk_size,
            report_limit=report_limit,
            start_after=start_after or {},
            progress=progress,
            report=report,
        ).run()

    return on_connection(bind, work)


async def reprocess_async(
    bind: AsyncEngine | AsyncConnection,
    target: Any,
    *,
    policy: ImagePolicy | UploadPolicy | None = None,
    registry: BackendRegistry = storages,
    dry_run: bool = False,
    batch_size: int = 100,
    concurrency: int = 4,
    start_after: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[ReprocessProgress], object] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> ReprocessReport:
    """Async version of [`reprocess`][sqlalchemy_obstore.reprocessing.reprocess].

    Takes an `AsyncEngine` or `AsyncConnection`; storage and image work are awaited,
    with up to `concurrency` images processed at once.

    Example:
        >>> async def main(engine):  # doctest: +SKIP
        ...     report = await reprocess_async(engine, Photo.image, concurrency=8)
        ...     assert report.ok, report.as_dict()
    """
    return await bridge_bind(
        bind,
        reprocess,
        target,
        policy=policy,
        registry=registry,
        dry_run=dry_run,
        batch_size=batch_size,
        concurrency=concurrency,
        start_after=start_after,
        progress=progress,
        chunk_size=chunk_size,
        report_limit=report_limit,
    )
