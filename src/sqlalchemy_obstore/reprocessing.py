"""Operations: bring stored images up to their column's image policy.

[`reprocess`][sqlalchemy_obstore.reprocessing.reprocess] walks the rows of
[`StoredObject`][sqlalchemy_obstore.StoredObject] columns that have an
[`ImagePolicy`][sqlalchemy_obstore.processing.ImagePolicy] and, for every stored image:

- builds each rendition the policy asks for that the row does not hold, or holds made
  to another spec (its recorded
  [`Rendition.spec`][sqlalchemy_obstore.processing.Rendition.spec] differs, or none is
  recorded: renditions stored before specs were recorded are rebuilt once);
- records the image's width and height (`file.width`, `file.height`) when the row
  lacks them.

Renditions the row holds that the policy no longer names are kept. The original is
never rewritten (`normalize` applies to new uploads only).

**How one run works.** Each table is read in primary-key order, `batch_size` rows at a
time (keyset pagination, each batch in its own short transaction). For each batch:

1. each image that needs work is read (refused beyond `ImagePolicy.max_bytes`),
   decoded once under the policy's memory limits and the process-wide image budget
   (see [`ProcessingLimits`][sqlalchemy_obstore.processing.ProcessingLimits]); when
   only its size is missing, only its header is read;
2. the new renditions are uploaded under **fresh keys**
   (`<original key>.renditions/<name>.<token>.<ext>`): nothing is overwritten, so a
   reader of the old rendition is never raced. They go next to the original, so an
   original whose key lies outside its backend's `prefix` (stored before the backend
   got it) is reported as a failure and nothing is built for it: the backend deletes,
   and garbage collection lists, only under its prefix;
3. each row is rewritten with **compare-and-swap** (`UPDATE ... WHERE <primary key>
   AND CAST(<column> AS TEXT) = <the value read>`): a row the application changed
   meanwhile is left alone, its new renditions deleted, and it is counted in
   `rows_conflicted` (run again to pick it up);
4. the batch is committed, then the renditions it replaced are deleted, and the
   `progress` callback is called.

Every batch is committed on its own, and a row already up to date costs no storage
call, so an interrupted run is resumed by running it again; `start_after` (fed from
`ReprocessProgress.last_key`) skips the rows already walked. A crash between an upload
and its commit leaves orphans that [garbage collection](../how-to/operations.md) removes.
Given a `Connection` instead of an `Engine`, everything runs inside the caller's
transaction, which is left open; the replaced renditions are then not deleted (the
caller's commit is not known here): garbage collection removes them.

One implementation serves both entry points: `reprocess_async` runs the same code in
SQLAlchemy's greenlet bridge, where storage and image work are awaited and up to
`concurrency` images are processed at once.
"""

# In the implementation's order, which the reference page follows.
from ._reprocessing import (  # noqa: I001
    ReprocessFailure,
    ReprocessProgress,
    ReprocessReport,
    reprocess,
    reprocess_async,
)
from ._public import adopt as _adopt

__all__ = (
    "ReprocessFailure",
    "ReprocessProgress",
    "ReprocessReport",
    "reprocess",
    "reprocess_async",
)

_adopt(globals(), parts=("_reprocess_report",))
