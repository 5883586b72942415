"""The implementation of `sqlalchemy_obstore.gc`, documented and imported there."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _gc_sql, _multipart
from ._file_columns import FileColumn, find_file_columns, target_columns
from ._io import Call, bridge_bind, iterate, run
from ._logging import library_logger
from ._progress import Progress, ProgressCallback
from ._telemetry import count_collected, run_span
from ._verification import (
    Finding,
    VerificationReport,
    verify_references,
    verify_references_async,
)
from ._verification import Problem as Problem  # (the type of `Finding.problem`)
from .backends import Backend, ObjectInfo
from .errors import (
    BackendNotFoundError,
    ConfigurationError,
    MissingDependencyError,
    StorageError,
    StoragePermissionError,
    UnsupportedOperationError,
)
from .registry import BackendRegistry, storages

__all__ = (
    "DEFAULT_GRACE_PERIOD",
    "MIN_GRACE_PERIOD",
    "BackendGarbage",
    "Clock",
    "FileColumn",
    "Finding",
    "GarbageReport",
    "IncompleteUploads",
    "Progress",
    "ProgressCallback",
    "VerificationReport",
    "collect_garbage",
    "collect_garbage_async",
    "find_file_columns",
    "verify_references",
    "verify_references_async",
)

logger = library_logger("sqlalchemy_obstore.gc")

DEFAULT_GRACE_PERIOD = timedelta(hours=24)
"""Objects younger than this are never collected (they may belong to an open transaction)."""

MIN_GRACE_PERIOD = timedelta(hours=8)
"""The shortest grace period a deleting run accepts without `allow_unsafe_grace_period`.

An object is unreferenced for a while in normal operation, and the collector must not
take it for an orphan then. The floor adds up the longest such windows of a default
setup:

- **upload tickets, 7 hours**: a browser may upload until its grant expires and the
  server may redeem the ticket until `redeem_grace` (1 hour by default) after that; the
  uploaded object (under `_incoming/`, or at its final key for a multipart upload) is
  unreferenced until the redeeming transaction commits. The longest grant is a
  multipart upload's (`multipart_expires_in`, 6 hours by default), and S3 dates a
  multipart object by the *start* of its upload, so such an object can look 7 hours old
  the moment it is complete;
- **clock skew, 15 minutes**: the cutoff is computed on the collector's clock and
  compared with the store's `Last-Modified`; S3 refuses SigV4 requests from a clock
  more than 15 minutes off, so that is the most two clocks that both talk to the store
  can differ;
- **flush to commit, 15 minutes**: a transaction that uploaded at its flush commits
  later; for a web request that is seconds, for a batch job it can be minutes (a long
  multipart upload from the server also makes its object look older by its duration).

That is 7.5 hours, rounded up to 8. The floor guards against a slip (`0`, `5m` meant as
`5h`) rather than tuning anything: the default grace period is a day; raise
`grace_period` above the floor when your tickets or transactions live longer. Pass
`allow_unsafe_grace_period=True` only when no writer is running (a test, a maintenance
window).
"""

_RECHECK_SIZE = 10_000
"""Candidates in the first group re-checked against the live tables (at least `batch_size`).

Each re-check scans the file columns, so the groups double (up to `_RECHECK_MAX`): a
store with many orphans costs a few scans, not one per 10,000 orphans, while a run with
few re-checks them just before deleting them, as ever.
"""
_RECHECK_MAX = 1_000_000
"""The largest group of candidates re-checked at once."""


# -- garbage collection -----------------------------------------------------------------------
@dataclass(slots=True)
class IncompleteUploads:
    """Incomplete multipart uploads the collector found under one backend's prefix.

    An upload is *stale* when it started before the cutoff and received no part since;
    stale uploads are aborted (reported only, in a dry run). Younger ones may belong to
    an upload in progress and are kept.

    Attributes:
        checked: Whether the store was asked (S3 with usable credentials).
        note: Why it was not asked, or what applies to this store instead (Azure
            discards uncommitted blocks after 7 days; elsewhere a bucket lifecycle rule
            `AbortIncompleteMultipartUpload` does the job).
        found: Incomplete uploads listed.
        too_young: Kept: started or last written after the cutoff.
        stale: Older than the grace period and idle since.
        aborted: Stale uploads aborted (always 0 in a dry run).
        stale_paths: The keys of the stale uploads (up to the report limit).
        too_young_paths: The keys of the uploads kept (up to the report limit).
    """

    checked: bool = False
    note: str | None = None
    found: int = 0
    too_young: int = 0
    stale: int = 0
    aborted: int = 0
    stale_paths: list[str] = field(default_factory=list)
    too_young_paths: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BackendGarbage:
    """What the collector found in one backend.

    Attributes:
        backend: The backend key.
        prefix: The prefix that was listed (the backend's managed prefix).
        scanned: Objects listed.
        referenced: Objects some row references.
        too_young: Unreferenced objects kept because they are within the grace period.
        orphaned: Unreferenced objects older than the grace period.
        deleted: Orphans deleted (always 0 in a dry run).
        bytes_freed: Total size of the deleted orphans.
        orphan_paths: In a dry run, the orphans' paths (up to the report limit).
        orphan_paths_truncated: Whether `orphan_paths` was cut at the report limit.
        too_young_paths: The unreferenced objects kept by the grace period ("too young,
            kept"), up to the report limit: in-flight uploads look like this.
        too_young_paths_truncated: Whether `too_young_paths` was cut at the limit.
        incomplete_uploads: Incomplete multipart uploads under the prefix.
        errors: Listing and deletion failures (the run goes on after a failed delete).
    """

    backend: str
    prefix: str | None
    scanned: int = 0
    referenced: int = 0
    too_young: int = 0
    orphaned: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    orphan_paths: list[str] = field(default_factory=list)
    orphan_paths_truncated: bool = False
    too_young_paths: list[str] = field(default_factory=list)
    too_young_paths_truncated: bool = False
    incomplete_uploads: IncompleteUploads = field(default_factory=IncompleteUploads)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class GarbageReport:
    """The outcome of [`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage].

    Attributes:
        dry_run: Whether this was a dry run (nothing deleted).
        started_at: When the scan started (UTC).
        cutoff: Only objects last modified before this were candidates.
        grace_period: The grace period of the run.
        unsafe_grace_period: Whether the grace period was below
            [`MIN_GRACE_PERIOD`][sqlalchemy_obstore.gc.MIN_GRACE_PERIOD] (a dry run, or
            a deleting run with `allow_unsafe_grace_period=True`).
        references: References staged from the database (duplicates included).
        backends: Per-backend results, by key.
        errors: Failures not tied to one backend (e.g. a backend that is not registered).
    """

    dry_run: bool
    started_at: datetime
    cutoff: datetime
    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    unsafe_grace_period: bool = False
    references: int = 0
    backends: dict[str, BackendGarbage] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def _total(self, name: str) -> int:
        return sum(getattr(b, name) for b in self.backends.values())

    @property
    def scanned(self) -> int:
        """Objects listed, over all backends."""
        return self._total("scanned")

    @property
    def referenced(self) -> int:
        """Listed objects that some row references, over all backends."""
        return self._total("referenced")

    @property
    def too_young(self) -> int:
        """Unreferenced objects kept by the grace period, over all backends."""
        return self._total("too_young")

    @property
    def orphaned(self) -> int:
        """Orphans older than the grace period, over all backends."""
        return self._total("orphaned")

    @property
    def deleted(self) -> int:
        """Orphans deleted, over all backends."""
        return self._total("deleted")

    @property
    def bytes_freed(self) -> int:
        """Bytes freed, over all backends."""
        return self._total("bytes_freed")

    @property
    def incomplete_uploads(self) -> int:
        """Incomplete multipart uploads found, over all backends."""
        return sum(b.incomplete_uploads.found for b in self.backends.values())

    @property
    def incomplete_uploads_stale(self) -> int:
        """Stale incomplete multipart uploads, over all backends."""
        return sum(b.incomplete_uploads.stale for b in self.backends.values())

    @property
    def incomplete_uploads_aborted(self) -> int:
        """Incomplete multipart uploads aborted, over all backends."""
        return sum(b.incomplete_uploads.aborted for b in self.backends.values())

    @property
    def all_errors(self) -> list[str]:
        """Every error: the report's and each backend's (prefixed with its key)."""
        return [*self.errors, *(f"{k}: {e}" for k, b in self.backends.items() for e in b.errors)]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


Clock: TypeAlias = Callable[[], datetime]
"""Returns the current time (timezone-aware); the collector's `clock` argument."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Collector:
    """The collector's plan over one sync connection (sync, or async through run_sync)."""

    def __init__(
        self,
        connection: Connection,
        columns: list[FileColumn],
        *,
        backends: Sequence[str | Backend] | None,
        registry: BackendRegistry | None,
        grace_period: timedelta,
        dry_run: bool,
        batch_size: int,
        report_limit: int,
        owns_connection: bool,
        progress: ProgressCallback | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.conn = connection
        self.progress = progress
        self.columns = columns
        self.requested = backends
        self.registry = registry
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.report_limit = report_limit
        self.owns = owns_connection
        started = _aware((clock or _utcnow)())
        self.report = GarbageReport(
            dry_run=dry_run,
            started_at=started,
            cutoff=started - grace_period,
            grace_period=grace_period,
            unsafe_grace_period=grace_period < MIN_GRACE_PERIOD,
        )
        name = f"sqlo_gc_{uuid.uuid4().hex[:12]}"
        self.refs = _gc_sql.ReferenceTable(connection, f"{name}_refs")
        self.candidates = _gc_sql.CandidateTable(connection, f"{name}_candidates")

    def _commit(self) -> None:
        # Only a connection the collector opened itself: a fresh transaction sees rows
        # other transactions committed meanwhile (and SQLite writers are not blocked).
        if self.owns:
            self.conn.commit()

    def run(self) -> GarbageReport:
        self.refs.create()
        self.candidates.create()
        try:
            self._stage()
            self._commit()
            for backend in self._backends():
                self._sweep(backend)
                self._sweep_uploads(backend, self.report.backends[backend.key])
        except BaseException:
            self._clean_up_after_failure()
            raise
        self.refs.drop()
        self.candidates.drop()
        self._commit()
        return self.report

    def _clean_up_after_failure(self) -> None:
        # The transaction may be aborted (PostgreSQL): roll back our own, then drop the
        # temporary table if it survived; never hide the original error.
        try:
            if self.owns:
                self.conn.rollback()
            self.refs.drop()
            self.candidates.drop()
            self._commit()
        except Exception:  # pragma: no cover - best effort; it dies with the connection
            logger.debug("Could not drop the collector's temporary tables", exc_info=True)

    def _stage(self) -> None:
        for column in self.columns:
            for staged in self.refs.stage(column, self.batch_size):
                self.report.references += staged
                if self.progress is not None:
                    self.progress(Progress("staging", self.report.references))
        self.refs.index()

    def _resolve(self, key: str) -> Backend:
        if self.registry is not None:
            return self.registry.get_backend(key)
        for column in self.columns:
            registry = column.stored_type.registry
            if registry is not None and key in registry:
                return registry.get_backend(key)
        return storages.get_backend(key)

    def _backends(self) -> list[Backend]:
        if self.requested is not None:
            keys: list[str | Backend] = list(self.requested)
        else:
            used = {c.stored_type.backend for c in self.columns}
            used.update(self.refs.backends())
            keys = [*sorted(used)]
        resolved: dict[str, Backend] = {}
        for item in keys:
            if isinstance(item, Backend):
                resolved[item.key] = item
                continue
            try:
                resolved[item] = self._resolve(item)
            except BackendNotFoundError as exc:
                self.report.errors.append(f"backend {item!r} skipped: {exc}")
        return list(resolved.values())

    def _sweep(self, backend: Backend) -> None:
        result = self.report.backends[backend.key] = BackendGarbage(backend.key, backend.prefix)
        page: list[ObjectInfo] = []
        # Candidates of many pages wait in the candidate table and are re-checked
        # together: the live re-check scans the file columns, so once per page would
        # cost (pages x rows), and the groups double so that many orphans cost a few scans.
        group = max(self.batch_size, _RECHECK_SIZE)
        largest = max(self.batch_size, _RECHECK_MAX)
        objects = iterate(backend.list_objects, backend.list_objects_async, backend.prefix)
        try:
            for info in objects:
                page.append(info)
                if len(page) >= self.batch_size:
                    self._page(backend, result, page)
                    page = []
                    if self.candidates.count >= group:
                        self._collect(backend, result)
                        group = min(2 * group, largest)
            if page:
                self._page(backend, result, page)
        except StorageError as exc:
            result.errors.append(f"listing {backend.prefix or '(root)'!r} failed: {exc}")
        finally:
            objects.close()  # (closes an async listing here, inside the greenlet)
        if self.candidates.count:
            self._collect(backend, result)

    def _page(self, backend: Backend, result: BackendGarbage, page: list[ObjectInfo]) -> None:
        """Count a listing page; hold its candidates (unreferenced and old enough)."""
        result.scanned += len(page)
        staged = self.refs.staged(backend.key, [info.path for info in page])
        unreferenced = [info for info in page if info.path not in staged]
        result.referenced += len(page) - len(unreferenced)
        cutoff = self.report.cutoff
        old = [info for info in unreferenced if _aware(info.last_modified) < cutoff]
        result.too_young += len(unreferenced) - len(old)
        if len(old) < len(unreferenced):
            young = [i.path for i in unreferenced if _aware(i.last_modified) >= cutoff]
            room = self.report_limit - len(result.too_young_paths)
            result.too_young_paths.extend(young[: max(room, 0)])
            result.too_young_paths_truncated |= room < len(young)
        self.candidates.add([(info.path, info.size) for info in old])
        if self.progress is not None:
            self.progress(Progress("scanning", result.scanned, backend=backend.key))

    def _collect(self, backend: Backend, result: BackendGarbage) -> None:
        """Re-check the waiting candidates against the live tables; report or delete the orphans."""
        self.candidates.ready()
        self._commit()
        live = _live_references(self.conn, self.columns, self.candidates)
        self._commit()
        for candidates in self.candidates.pages(self.batch_size):
            orphans = [(path, size) for path, size in candidates if path not in live]
            result.referenced += len(candidates) - len(orphans)
            result.orphaned += len(orphans)
            if not orphans:
                continue
            if self.dry_run:
                room = self.report_limit - len(result.orphan_paths)
                result.orphan_paths.extend(path for path, _ in orphans[: max(room, 0)])
                result.orphan_paths_truncated |= room < len(orphans)
            else:
                self._delete(backend, result, orphans)
        self.candidates.clear()

    def _sweep_uploads(self, backend: Backend, result: BackendGarbage) -> None:
        """Find incomplete multipart uploads under the prefix; abort the stale ones."""
        uploads = result.incomplete_uploads
        if not _multipart.may_hold_uploads(backend):
            return
        uploads.note = _multipart.support(backend)
        if uploads.note is not None:
            return
        try:
            found = _multipart.list_incomplete_uploads(backend, backend.prefix)
        except (MissingDependencyError, StoragePermissionError, UnsupportedOperationError) as exc:
            # Not a failure of the collection: the objects were collected; say why the
            # uploads were not (a missing extra, a right not granted, a server without
            # the call), and let the lifecycle rule do that job.
            uploads.note = f"not checked: {exc}"
            return
        except StorageError as exc:
            result.errors.append(f"listing incomplete multipart uploads failed: {exc}")
            return
        uploads.checked = True
        uploads.found = len(found)
        cutoff = self.report.cutoff
        for upload in found:
            try:
                # Started before the cutoff is not enough: a large upload on a slow link
                # may still be sending parts. Idle since the cutoff is.
                last = upload.initiated if upload.initiated >= cutoff else None
                if last is None:
                    last = _multipart.last_activity(backend, upload)
                    if last is None:  # completed or aborted meanwhile
                        uploads.found -= 1
                        continue
                if last >= cutoff:
                    uploads.too_young += 1
                    if len(uploads.too_young_paths) < self.report_limit:
                        uploads.too_young_paths.append(upload.path)
                    continue
                uploads.stale += 1
                if len(uploads.stale_paths) < self.report_limit:
                    uploads.stale_paths.append(upload.path)
                if not self.dry_run:
                    _multipart.abort_upload(backend, upload)
                    uploads.aborted += 1
            except StorageError as exc:
                result.errors.append(
                    f"incomplete multipart upload of {upload.path!r} ({upload.upload_id[:12]}...): "
                    f"{exc}"
                )
        if uploads.aborted:
            logger.info(
                "Aborted %d incomplete multipart upload(s) in backend %r",
                uploads.aborted,
                backend.key,
            )

    def _delete(
        self, backend: Backend, result: BackendGarbage, orphans: list[tuple[str, int]]
    ) -> None:
        paths = [path for path, _ in orphans]
        try:
            run(Call(backend.delete, backend.delete_async, paths))
        except StorageError as exc:
            result.errors.append(f"deleting {len(paths)} orphan(s) failed: {exc}")
            logger.warning(
                "Could not delete %d orphan(s) from %r: %s", len(paths), backend.key, exc
            )
            return
        freed = sum(size for _, size in orphans)
        result.deleted += len(paths)
        result.bytes_freed += freed
        count_collected(backend.key, len(paths), freed)
        logger.info("Deleted %d orphan(s) from backend %r", len(paths), backend.key)


def _live_references(
    connection: Connection, columns: Iterable[FileColumn], candidates: _gc_sql.CandidateTable
) -> set[str]:
    """Which of the waiting `candidates` some row references right now, in any backend.

    Matches the path of every stored file, renditions and list items included, whatever
    its backend, and errs on the side of keeping objects: SQLite matches a `path` key
    anywhere in the stored JSON, PostgreSQL the `path` of a plain stored file and a
    `path` anywhere in the other documents; other databases rescan the column.
    """
    found: set[str] = set()
    for column in columns if candidates.count else ():
        found.update(_gc_sql.live_paths(connection, column, candidates))
    return found


def _check_options(
    grace_period: timedelta, batch_size: int, dry_run: bool, allow_unsafe_grace_period: bool
) -> None:
    if not isinstance(grace_period, timedelta) or grace_period < timedelta(0):
        raise ConfigurationError("grace_period must be a non-negative timedelta.")
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1.")
    if not dry_run and grace_period < MIN_GRACE_PERIOD and not allow_unsafe_grace_period:
        raise ConfigurationError(
            f"Refusing to delete with a grace period of {grace_period}: below "
            f"{MIN_GRACE_PERIOD}, objects uploaded by transactions that have not committed "
            "yet (and unredeemed upload tickets) would be deleted, and their rows would "
            f"point at nothing once they commit. Use a grace period of at least "
            f"{MIN_GRACE_PERIOD} (the default is {DEFAULT_GRACE_PERIOD}), or pass "
            "allow_unsafe_grace_period=True (CLI: --unsafe-grace-period) only when no "
            "application is writing."
        )


def collect_garbage(
    engine_or_connection: Engine | Connection,
    target: Any,
    *,
    backends: Sequence[str | Backend] | None = None,
    registry: BackendRegistry | None = None,
    grace_period: timedelta = DEFAULT_GRACE_PERIOD,
    dry_run: bool = True,
    batch_size: int = 1000,
    report_limit: int = 1000,
    progress: ProgressCallback | None = None,
    allow_unsafe_grace_period: bool = False,
    clock: Clock | None = None,
) -> GarbageReport:
    """Find (and, with `dry_run=False`, delete) objects that no row references.

    Lists each backend's managed prefix and deletes the objects that no `StoredObject`
    column of `target` references and that are older than `grace_period`. Memory stays
    bounded whatever the number of rows and objects (see the module documentation). On
    S3 it also aborts incomplete multipart uploads under the prefix that started before
    the cutoff and received no part since (reported only, in a dry run).

    Args:
        engine_or_connection: The database. With an `Engine` the collector opens its own
            connection and commits between phases (so the last check before a delete
            sees rows committed meanwhile); with a `Connection` it runs inside the
            caller's transaction and leaves it open.
        target: A `MetaData`, a declarative base, or a sequence of them (every
            `StoredObject` column in them is scanned).
        backends: Backend keys (or backends) to collect in. Default: every backend the
            columns and the stored values name, resolved in `registry`, the columns'
            registries or `storages`.
        registry: Resolve backend keys here instead.
        grace_period: Keep unreferenced objects younger than this: they may belong to a
            transaction that has uploaded but not yet committed. A deleting run refuses
            less than [`MIN_GRACE_PERIOD`][sqlalchemy_obstore.gc.MIN_GRACE_PERIOD].
        dry_run: Only report (the default); pass `False` to delete.
        batch_size: Rows per fetch, references per insert, objects per listing page and
            per delete.
        report_limit: How many paths each backend reports per list (orphans in a dry
            run, objects and uploads kept as too young, stale uploads).
        progress: Called with a [`Progress`][sqlalchemy_obstore.gc.Progress] after every
            batch of references staged and every page of objects scanned.
        allow_unsafe_grace_period: Let a deleting run use a grace period below
            `MIN_GRACE_PERIOD`. Objects of transactions in flight are then deleted and
            their rows, once committed, reference nothing: only when no application
            writes (tests, a maintenance window).
        clock: Returns the current time (timezone-aware); for tests. The cutoff is
            `clock() - grace_period`.

    Returns:
        A [`GarbageReport`][sqlalchemy_obstore.gc.GarbageReport].

    Raises:
        ConfigurationError: For a negative grace period, a batch size below 1, or a
            deleting run with a grace period below `MIN_GRACE_PERIOD` without
            `allow_unsafe_grace_period`.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine
        >>> from sqlalchemy_obstore import FileObject, StoredObject
        >>> from sqlalchemy_obstore.testing import memory_backends
        >>> metadata = MetaData()  # or a declarative base: collect_garbage(engine, Base)
        >>> _ = Table("docs", metadata, Column("id", Integer, primary_key=True),
        ...           Column("file", StoredObject("uploads")))
        >>> engine = create_engine("sqlite://")
        >>> metadata.create_all(engine)
        >>> with memory_backends("uploads"):
        ...     _ = FileObject(filename="lost.txt", content=b"x", backend="uploads").save()
        ...     report = collect_garbage(engine, metadata, grace_period=timedelta(0))
        ...     report.orphaned, report.deleted, report.dry_run
        (1, 0, True)
        >>> engine.dispose()
    """
    _check_options(grace_period, batch_size, dry_run, allow_unsafe_grace_period)
    options: dict[str, Any] = {
        "backends": backends,
        "registry": registry,
        "grace_period": grace_period,
        "dry_run": dry_run,
        "batch_size": batch_size,
        "report_limit": report_limit,
        "progress": progress,
        "clock": clock,
    }
    columns = target_columns(target)
    with run_span("gc", {"sqlalchemy_obstore.gc.dry_run": dry_run}) as span:
        if isinstance(engine_or_connection, Connection):
            report = _Collector(
                engine_or_connection, columns, owns_connection=False, **options
            ).run()
        else:
            with engine_or_connection.connect() as connection:
                report = _Collector(connection, columns, owns_connection=True, **options).run()
        span.record(_gc_facts(report), complete=not report.all_errors)
    return report


def _gc_facts(report: GarbageReport) -> dict[str, Any]:
    """The attributes of a garbage collection's span."""
    facts: dict[str, Any] = {
        f"sqlalchemy_obstore.gc.{name}": getattr(report, name)
        for name in ("references", "scanned", "orphaned", "deleted", "bytes_freed")
    }
    facts["sqlalchemy_obstore.gc.incomplete_uploads_aborted"] = report.incomplete_uploads_aborted
    facts["sqlalchemy_obstore.gc.errors"] = len(report.all_errors)
    facts["sqlalchemy_obstore.gc.backends"] = sorted(report.backends)
    return facts


async def collect_garbage_async(
    engine_or_connection: AsyncEngine | AsyncConnection,
    target: Any,
    *,
    backends: Sequence[str | Backend] | None = None,
    registry: BackendRegistry | None = None,
    grace_period: timedelta = DEFAULT_GRACE_PERIOD,
    dry_run: bool = True,
    batch_size: int = 1000,
    report_limit: int = 1000,
    progress: ProgressCallback | None = None,
    allow_unsafe_grace_period: bool = False,
    clock: Clock | None = None,
) -> GarbageReport:
    """Async version of [`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage].

    Takes an `AsyncEngine` or `AsyncConnection`; storage is called through obstore's
    async API.

    Example:
        >>> import asyncio
        >>> from sqlalchemy.ext.asyncio import create_async_engine
        >>> async def main(Base):  # doctest: +SKIP
        ...     engine = create_async_engine("sqlite+aiosqlite:///app.db")
        ...     return await collect_garbage_async(engine, Base, dry_run=False)
    """
    return await bridge_bind(
        engine_or_connection,
        collect_garbage,
        target,
        backends=backends,
        registry=registry,
        grace_period=grace_period,
        dry_run=dry_run,
        batch_size=batch_size,
        report_limit=report_limit,
        progress=progress,
        allow_unsafe_grace_period=allow_unsafe_grace_period,
        clock=clock,
    )
