"""Operations: move every referenced object from one backend to another, rows included.

[`migrate`][sqlalchemy_obstore.migration.migrate] copies each object that a
[`StoredObject`][sqlalchemy_obstore.StoredObject] column references in backend `source`
(renditions and `multiple=True` columns included) to backend `destination` under the
**same path**, then rewrites the row so that it names `destination`. Object keys are
immutable (a save always writes a fresh key), so "the same path in the other store" is a
complete description of the copy: running the migration again, or resuming it after a
crash, finds the copies already there and only rewrites what is left. The same path means
the destination's `prefix` must contain the source's (the same prefix, a shorter one, or
none): a backend deletes, and garbage collection lists, only under its prefix, so a copy
outside it could never be removed. `migrate` refuses any other destination with a
`ConfigurationError` before it copies anything, and a reference whose path lies outside
the destination's prefix all the same (written before the source got its prefix) fails
on its own, without a copy, and its row keeps naming the source.

**How one pass works, with bounded memory.** Each table is read in primary-key order,
`batch_size` rows at a time (keyset pagination: no cursor is held open while objects are
copied, and no transaction stays open on a database the application is writing to). For
each batch:

1. every object of the batch that lives in `source` is checked at the destination: one
   that is already there with the recorded size (and, when the row recorded a checksum,
   the same bytes) is *skipped*; any other is streamed across (`iter_chunks` into a
   multipart `put`, so memory stays at about one chunk per copy in flight), hashed on
   the way, and verified: size, and checksum when one was recorded. Content type,
   disposition, cache control and user metadata travel with it where the stores keep
   them (from a store that keeps none, such as local files, they are rebuilt from the
   row, as the session would have written them);
2. each row whose objects all arrived is rewritten with **compare-and-swap**:
   `UPDATE ... WHERE <primary key> AND CAST(<column> AS TEXT) = <the value read>`. A row
   the application changed in between is left alone (the update matches nothing) and
   picked up by the next pass, so the application's writes are never overwritten;
3. the batch is committed (when the migration opened the connection itself) and the
   `progress` callback is called.

Passes repeat until no row references `source` (at most `max_passes`); what remains is
counted in the report. Only when every row points at the destination and nothing failed
are the source objects deleted (`delete_source=True`): each is the copy of an object a
row references in `destination`, is verified there once more (size, checksum when
recorded) and is looked up once more in the live tables right before the delete, so an
object some row still references in `source` is never deleted.

All decisions are plain code over a sync `Connection`; the async entry point runs the
same code in SQLAlchemy's greenlet bridge (on the `AsyncEngine`'s sync engine, or through
`AsyncConnection.run_sync`), where storage calls use obstore's async API and up to
`concurrency` copies run at once. The sync
entry point copies one object at a time (a large object is still uploaded in parallel
parts by obstore).
"""

# In the implementation's order, which the reference page follows.
from ._migration import (
    DEFAULT_MAX_PASSES,
    MigrationFailure,
    MigrationProgress,
    MigrationReport,
    migrate,
    migrate_async,
)
from ._public import adopt as _adopt

__all__ = (
    "DEFAULT_MAX_PASSES",
    "MigrationFailure",
    "MigrationProgress",
    "MigrationReport",
    "migrate",
    "migrate_async",
)

_adopt(globals())
