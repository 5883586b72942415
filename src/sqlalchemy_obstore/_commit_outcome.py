"""A COMMIT that got no answer deletes no file.

A commit can fail in two ways that look alike to the session and not at all to storage.
Before COMMIT reached the database (the flush failed, a `before_commit` or `commit`
listener raised) or refused by it (a deferred constraint, a serialization failure), the
transaction rolled back and its uploads must go. After the DBAPI sent COMMIT and before
the answer came (the connection died), the database may have committed: deleting the
uploads then would leave committed rows pointing at nothing. SQLAlchemy reports a
failure of the DBAPI's `commit()` itself, and only that, through `handle_error` between
the connection's `commit` event and the next `rollback`; these listeners note it.

When the root transaction ends without a commit, `commit_in_doubt` says whether it may
have committed anyway, and `keep_in_doubt` then deletes nothing: neither the uploads
(committed rows may reference them) nor the files it replaced (rows still reference them
if it did not commit). One WARNING says so, and the objects are reported as orphans;
`sqlalchemy-obstore verify` and `gc` settle the rest.
"""

from __future__ import annotations

import weakref

from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import Session, SessionTransaction

from ._errors import redact
from ._listeners import Listener
from ._logging import library_logger
from ._session_io import by_backend, report_orphaned, revert, uploaded_objects
from ._session_state import CommitAttempt, Record, SessionState, state_of, tracks_files

__all__ = ("LISTENERS", "commit_in_doubt", "keep_in_doubt")

logger = library_logger("sqlalchemy_obstore")


# The session state of each connection a tracking session is using (`after_begin`).
_COMMITTERS: weakref.WeakKeyDictionary[Connection, SessionState] = weakref.WeakKeyDictionary()


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if tracks_files(session):
        _COMMITTERS[connection] = state_of(session)


def _on_commit(connection: Connection) -> None:
    tracker = _COMMITTERS.get(connection)
    if tracker is not None:
        tracker.commits.append(CommitAttempt(connection))


def _open_attempt(connection: Connection | None) -> CommitAttempt | None:
    tracker = _COMMITTERS.get(connection) if connection is not None else None
    if tracker is None or not tracker.commits:
        return None
    attempt = tracker.commits[-1]
    return attempt if attempt.connection is connection and not attempt.settled else None


def _on_rollback(connection: Connection) -> None:
    if (attempt := _open_attempt(connection)) is not None:
        attempt.settled = True  # whatever fails from here on is not the COMMIT


def _on_error(context: ExceptionContext) -> None:
    if (attempt := _open_attempt(context.connection)) is not None:
        attempt.settled = True
        attempt.unknown = _outcome_unknown(context)
        attempt.error = context.original_exception


def _outcome_unknown(context: ExceptionContext) -> bool:
    """Whether a failed DBAPI `commit()` leaves the transaction's outcome unknown.

    It does unless the database itself answered with an error: a lost connection, a
    timeout, a cancellation or a driver-side failure never tells whether the server
    committed.
    """
    error = context.original_exception
    if context.is_disconnect or not isinstance(error, Exception):
        return True
    dbapi = context.dialect.loaded_dbapi
    if not isinstance(error, dbapi.Error):
        return True
    # PostgreSQL drivers (psycopg, asyncpg) carry the server's SQLSTATE; an error raised
    # by the driver itself has none.
    return hasattr(error, "sqlstate") and error.sqlstate is None


def commit_in_doubt(attempts: list[CommitAttempt]) -> str | None:
    """Why the root transaction may have committed although its commit failed, if it may.

    Every COMMIT but the last one went through (a session with several binds commits
    them one after another and stops at the first failure); the last one counts if its
    DBAPI call failed without an answer. A last one that never failed inside the DBAPI
    call was stopped before it (a `commit` listener raised): nothing was committed.
    """
    if not attempts:
        return None
    last = attempts[-1]
    if last.unknown:
        error = last.error
        detail = redact(str(error).strip().splitlines()[0]) if str(error).strip() else "no message"
        return f"COMMIT was sent and no answer came back ({type(error).__name__}: {detail})"
    if len(attempts) > 1:
        return (
            f"{len(attempts) - 1} of the session's {len(attempts)} connections committed "
            "before the next one failed"
        )
    return None


def keep_in_doubt(record: Record, why: str, error: BaseException | None) -> None:
    """Leave everything of a transaction whose commit may have happened, and say so."""
    uploaded = uploaded_objects(record.uploads)
    replaced = {ref: b for ref, b in record.deletes.items() if ref not in uploaded}
    if not uploaded and not replaced:
        return  # no file involved: nothing to keep, nothing to say
    logger.warning(
        "The outcome of a COMMIT is unknown: %s. The transaction may have committed, so "
        "no file was deleted: %d uploaded object(s) (referenced if it committed) and %d "
        "replaced or removed object(s) (still referenced if it did not) stay in storage. "
        "Check the references with `sqlalchemy-obstore verify`; `sqlalchemy-obstore gc` "
        "removes whatever no row references. First objects: %s",
        why,
        len(uploaded),
        len(replaced),
        sorted(path for _key, path in [*uploaded, *replaced])[:10],
    )
    for backend, paths in by_backend({**uploaded, **replaced}):
        report_orphaned(backend, paths, "commit_outcome_unknown", error)
    for upload in record.uploads:
        revert(upload)  # the session rolled back: a retry uploads again, under a new key


LISTENERS = (
    Listener(Session, "after_begin", _after_begin),
    Listener(Engine, "commit", _on_commit),
    Listener(Engine, "rollback", _on_rollback),
    Listener(Engine, "handle_error", _on_error),
)
"""This module's listeners, installed with the session's (`lifecycle.install_listeners`)."""
