"""What a reprocessing run reports: its failures, its progress, its outcome.

The public data of `sqlalchemy_obstore.reprocessing` (documented there, where
`adopt` makes it at home): the run (`_reprocess_run`) fills a
[`ReprocessReport`][sqlalchemy_obstore.reprocessing.ReprocessReport] as it goes, lists
each image it could not reprocess as a
[`ReprocessFailure`][sqlalchemy_obstore.reprocessing.ReprocessFailure], and hands a
[`ReprocessProgress`][sqlalchemy_obstore.reprocessing.ReprocessProgress] to the
`progress` callback after each batch. Plain data, apart so that the run and the entry
points can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._report_data import report_data

__all__ = ("ReprocessFailure", "ReprocessProgress", "ReprocessReport")


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
        return report_data(self)
