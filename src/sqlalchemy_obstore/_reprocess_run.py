"""The reprocessing run: walk the rows in batches, rewrite them, delete what they replaced.

`Reprocessing` goes over one sync connection (inside SQLAlchemy's greenlet bridge for
`reprocess_async`): for each table, batches of rows in primary-key order
(`_row_batches`), each stored image in them planned by `_reprocess_plan`; the images
that need work are done by `_reprocess_image`, up to `concurrency` at once; each row
whose work succeeded is rewritten with compare-and-swap, so a row the application
changed meanwhile is left alone and the renditions made for it are deleted; then the
batch is committed (when the run owns the connection), the renditions it replaced are
deleted, and the `progress` callback is called. Everything it does is counted in the
`ReprocessReport`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table

from ._file_columns import FileColumn
from ._io import Call, map_concurrently, run
from ._logging import library_logger
from ._reprocess_image import reprocess_image
from ._reprocess_plan import Target, Work, applied, image_backend, needs
from ._reprocess_report import ReprocessFailure, ReprocessProgress, ReprocessReport
from ._row_batches import Row, require_primary_key, row_batches, swap_row
from .backends import Backend

__all__ = ("Reprocessing",)

logger = library_logger("sqlalchemy_obstore.reprocessing")


class Reprocessing:
    """The run's plan over one sync connection (its storage calls go through `_io`)."""

    def __init__(
        self,
        connection: Connection,
        targets: list[Target],
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
        tables: dict[Table, list[Target]] = {}
        for target in self.targets:
            tables.setdefault(target.column.table, []).append(target)
        for table in tables:
            require_primary_key(table)
        for table, targets in tables.items():
            self._table(table, targets)
        return self.report

    def _batches(self, table: Table, targets: list[Target]) -> Iterator[list[Row[Target]]]:
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

    def _table(self, table: Table, targets: list[Target]) -> None:
        for batch in self._batches(table, targets):
            planned: list[tuple[tuple[Any, ...], list[tuple[Target, str, Any, list[Work]]]]] = []
            works: list[Work] = []
            for batch_row in batch:
                row = []
                for target, raw, data in batch_row.values:
                    default = target.column.stored_type.backend
                    items = list(enumerate(data)) if isinstance(data, list) else [(None, data)]
                    found = []
                    for index, item in items:
                        backend = image_backend(item, default)
                        if backend is None:
                            continue
                        needed = needs(target, index, item, backend)
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
                do = functools.partial(reprocess_image, chunk_size=self.chunk_size)
                map_concurrently(do, works, concurrency=self.concurrency)
                replaced = self._rewrite_batch(table, planned)
                self._commit()
                self._delete(replaced, after_commit=self.owns)
            if batch:
                self._notify(table.fullname, batch[-1].key)

    # -- rows -----------------------------------------------------------------------------------
    def _rewrite_batch(
        self,
        table: Table,
        planned: list[tuple[tuple[Any, ...], list[tuple[Target, str, Any, list[Work]]]]],
    ) -> list[tuple[Backend, str]]:
        """Rewrite each row whose work succeeded; the `(backend, path)`s it replaced."""
        replaced: list[tuple[Backend, str]] = []
        for key, row in planned:
            changes: list[tuple[FileColumn, str, Any]] = []
            old: list[tuple[Backend, str]] = []
            done: list[Work] = []
            for target, raw, data, works in row:
                new = data
                for work in works:
                    if work.error is not None:
                        self._fail(table, key, work)
                        continue
                    new, gone = applied(new, work)
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

    def _fail(self, table: Table, key: tuple[Any, ...], work: Work) -> None:
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
