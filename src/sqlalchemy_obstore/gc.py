"""Operations: find orphaned objects (garbage collection) and broken references (verification).

The session deletes replaced and removed objects after the commit, but some objects are
left behind anyway: a process that crashed between the upload and the commit, a delete
after the commit that failed (it is logged), rows removed by bulk SQL
(`session.execute(delete(...))`, `ON DELETE CASCADE`, a `TRUNCATE`) that the session
never saw. [`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage] finds and deletes
them; [`verify_references`][sqlalchemy_obstore.gc.verify_references] finds the opposite
problem, rows whose object is missing or was changed.

Operators name a module, not columns: the target is a `MetaData`, a declarative base (or
a sequence of them), and every [`StoredObject`][sqlalchemy_obstore.StoredObject] column
in it is found by [`find_file_columns`][sqlalchemy_obstore.gc.find_file_columns].

**How the collector works, with bounded memory.** No set of keys is ever held in memory:

1. Every reference (backend key, path) of every column, renditions included, is put
   into a *temporary table*, in batches of `batch_size` rows, which is indexed on
   `(backend, path)` once filled. On SQLite and PostgreSQL the database copies the key
   and path of a plain stored file itself (`INSERT ... SELECT` with `json_extract`,
   `->>`; the batches are ranges of the first primary key column); only documents with
   renditions, lists and odd values come to Python to be walked. Other databases
   stream every document (with `yield_per`, so a server-side cursor where there is one).
2. Each backend's managed prefix (`backend.prefix`) is listed page by page
   (`batch_size` objects); each page is checked against the temporary table with one
   query: on SQLite and PostgreSQL an index range scan between the page's smallest and
   largest key (the table orders paths by code point, as Python does, so the range
   holds every staged path of the page), elsewhere, and for a range holding more than
   twice the page, `SELECT path ... WHERE backend = :b AND path IN (...)`.
3. Unreferenced objects that are older than the grace period are looked up once more,
   against the live tables (a row committed during the scan is found), and only then
   deleted (unless it is a dry run). That look-up scans the file columns, so the
   candidates of many pages wait in a second temporary table and are checked together,
   the database matching the scanned paths against that table: first 10,000 (or
   `batch_size`, if larger), then groups twice as large each time, up to 1,000,000. A
   run with few orphans re-checks them once, just before deleting them; a store with a
   million orphans costs about seven scans of the file columns, not one per 10,000.

A temporary table was chosen over comparing two sorted streams because object stores do
not all list in key order (and may not sort as the database collates), while the index
lookup is correct for any listing order and any collation.

**Concurrency.** The session uploads content *before* the row that references it is
committed, so an object of an in-flight transaction looks exactly like an orphan. The
grace period (24 hours by default) protects it: only objects last modified before
`scan start - grace_period` are candidates, and objects newer than the scan start are
never touched. A deleting run refuses a grace period shorter than
[`MIN_GRACE_PERIOD`][sqlalchemy_obstore.gc.MIN_GRACE_PERIOD] (8 hours; see there why)
unless `allow_unsafe_grace_period=True` says the caller knows no writer is running.
Right before a batch is deleted, its candidates are looked up again in the live tables
(matching the path of every stored file whatever its backend, and on SQLite a `path`
anywhere in the stored JSON: a false match keeps an orphan, never deletes a referenced
object); when the collector opened the
connection itself it commits before that lookup so that it sees what other transactions
committed meanwhile.

**Incomplete multipart uploads.** A process killed during a multipart upload leaves the
upload open: its parts are billed but appear in no object listing. On S3 the collector
also lists the incomplete uploads under each managed prefix and aborts those started
before the cutoff that received no part since (dry run: only reports them). Other
stores: see [`IncompleteUploads.note`][sqlalchemy_obstore.gc.IncompleteUploads].

All decisions are plain code over a sync `Connection`; the async entry points run the
same code in SQLAlchemy's greenlet bridge (on the `AsyncEngine`'s sync engine, or
through `AsyncConnection.run_sync`), where the storage calls use obstore's async API
(as the session lifecycle does).
"""

# In the implementation's order, which the reference page follows.
from ._gc import (  # noqa: I001
    FileColumn,
    find_file_columns,
    Progress,
    ProgressCallback,
    Finding,
    VerificationReport,
    verify_references,
    verify_references_async,
    DEFAULT_GRACE_PERIOD,
    MIN_GRACE_PERIOD,
    IncompleteUploads,
    BackendGarbage,
    GarbageReport,
    Clock,
    collect_garbage,
    collect_garbage_async,
)
from ._public import adopt as _adopt

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

_adopt(globals())
