"""Files follow the transaction: the session integration.

Importing `sqlalchemy_obstore` installs a handful of listeners on SQLAlchemy's `Session`,
`Mapper` and `Engine` classes (and so on every `Session`, `sessionmaker`, `AsyncSession`
and `async_sessionmaker` session), once, in one place:
[`install_listeners`][sqlalchemy_obstore.lifecycle.install_listeners];
[`installed_listeners`][sqlalchemy_obstore.lifecycle.installed_listeners] lists those in
place. They implement the consistency model:

1. **Upload before the row.** In `before_flush`, pending content of new and changed rows
   is uploaded under fresh keys, concurrently and with bounded concurrency (obstore's
   async calls, awaited through SQLAlchemy's greenlet bridge, inside an `AsyncSession`;
   obstore's sync calls in a `Session`). If one upload fails, the uploads that succeeded
   in that flush are deleted again and the error is raised from `flush()`/`commit()`;
   the files keep their content (a seekable stream rewound), so the flush can be
   retried, while a one-shot stream that a failed upload read raises `NoContentError`
   on the retry instead of storing what was left of it.
2. **Delete after the commit.** Objects of replaced values, values set to `None`, items
   removed from lists and rows deleted (including cascades) are deleted only after the
   outermost transaction committed. A failure there is logged and leaves an orphan.
   Files handed from one row to another (moved between lists, or taken over from a row
   being deleted) are kept, and a replaced value is remembered even when later in-place
   changes make SQLAlchemy's attribute history forget it.
3. **Undo on rollback.** Objects uploaded inside a transaction or SAVEPOINT that rolls
   back (or is closed without commit) are deleted, and the `FileObject`s go back to
   holding their content so that a retry uploads again; deletes that it cancelled in
   an enclosing transaction (a file put back into a row) are scheduled again.
4. **An unknown outcome deletes nothing.** When the DBAPI sent COMMIT and got no answer
   (the connection died: the database may well have committed), the session still
   rolls back, but no file is deleted: neither the transaction's uploads (committed
   rows may reference them) nor the files it replaced (rows may still reference them
   if it did not commit). One WARNING says so; `sqlalchemy-obstore verify` and `gc`
   settle it. A commit that failed before COMMIT reached the database (a flush error, a
   `before_commit` listener) or that the database refused is an ordinary rollback.

Whatever is left behind this way (including deletes that failed) is logged and reported
to the orphan listeners of the registries the backends are in
([`BackendRegistry.add_orphan_listener`][sqlalchemy_obstore.registry.BackendRegistry.add_orphan_listener]).

Tracking can be turned off per session (`disable_tracking(session)`, or
`info={TRACKING_KEY: False}` on a sessionmaker) and per column
(`StoredObject(..., track=False)`).

All decisions are made by plain code over the session's state; the storage calls they
decide on go through one private module (`_io`), which awaits obstore's async calls
(concurrently) inside an `AsyncSession` and makes the sync calls elsewhere.
"""

# In the implementation's order, which the reference page follows.
from ._lifecycle import (  # noqa: I001
    TRACKING_KEY,
    CONCURRENCY_KEY,
    DEFAULT_UPLOAD_CONCURRENCY,
    disable_tracking,
    enable_tracking,
    is_tracking,
    install_listeners,
    installed_listeners,
)
from ._public import adopt as _adopt

__all__ = (
    "CONCURRENCY_KEY",
    "DEFAULT_UPLOAD_CONCURRENCY",
    "TRACKING_KEY",
    "disable_tracking",
    "enable_tracking",
    "install_listeners",
    "installed_listeners",
    "is_tracking",
)

_adopt(globals())
