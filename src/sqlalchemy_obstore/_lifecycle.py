"""The implementation of `sqlalchemy_obstore.lifecycle`, documented and imported there.

This module wires the session, mapper and engine listeners together, and holds what the
flush (`before_flush`, `before_delete`, `after_flush_postexec`) and the end of each
transaction (`after_transaction_end`) decide. What they call lives in a module each:

* `_session_state`: whether a session tracks files, and what each transaction did;
* `_held_files`: the files an attribute holds, and held since the last flush;
* `_session_io`: a flush's uploads, their undo, and the deletes;
* `_untrusted_references`: outside data names only objects its row already held;
* `_commit_outcome`: a COMMIT that got no answer deletes no file;
* `_commit_expiry`: file columns outlive a commit's expiry in an `AsyncSession`.

`_held_files`, `_commit_outcome` and `_commit_expiry` bring listeners of their own,
installed here with the others. The `session.info` keys of `lifecycle` are defined next
to the code that reads them (`_session_state`, `_session_io`) and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import InstanceState, Mapper, Session, SessionTransaction, object_session
from sqlalchemy.orm.attributes import instance_state

from ._column_defaults import apply_column_defaults
from ._commit_expiry import LISTENERS as commit_expiry_listeners
from ._commit_outcome import LISTENERS as commit_outcome_listeners
from ._commit_outcome import commit_in_doubt, keep_in_doubt
from ._errors import NoContentError
from ._file_columns import file_columns
from ._file_columns import forget as forget_file_columns
from ._file_object import FileObject, SaveOptions
from ._held_files import LISTENERS as held_files_listeners
from ._held_files import (
    NOT_LOADED,
    REPLACED_KEY,
    files_ever_in,
    files_in,
    forget_replaced,
    no_longer_held,
    previous_values,
    ref_of,
    tracked_columns,
)
from ._listeners import Listener
from ._session_io import (
    CONCURRENCY_KEY,
    DEFAULT_UPLOAD_CONCURRENCY,
    Ref,
    delete_quietly,
    forget_undo,
    revert,
    upload_all,
)
from ._session_state import STATE_KEY, TRACKING_KEY, Record, SessionState, state_of, tracks_files
from ._types import StoredObject
from ._untrusted_references import vet_references
from .backends import Backend

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


def disable_tracking(session: Any) -> None:
    """Turn automatic uploads and deletes off for `session` (a `Session` or `AsyncSession`)."""
    session.info[TRACKING_KEY] = False


def enable_tracking(session: Any) -> None:
    """Turn automatic uploads and deletes back on for `session`."""
    session.info[TRACKING_KEY] = True


def is_tracking(session: Any) -> bool:
    """Whether `session` handles files automatically (the default)."""
    return tracks_files(session)  # (where the modules this one wires together ask it)


# -- the flush ------------------------------------------------------------------------------------
def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    vet_references(session)
    if not is_tracking(session):
        return
    tracker = state_of(session)
    tracker.flush_doomed = {}
    plan = _FlushPlan()
    processed: list[tuple[InstanceState[Any], tuple[tuple[str, StoredObject], ...]]] = []
    for obj in (*session.new, *session.dirty):
        if obj in session.deleted:
            continue
        state = instance_state(obj)
        columns = file_columns(state.mapper)
        if not columns.all:
            continue  # no StoredObject column: nothing to upload, remember or forget
        processed.append((state, columns.tracked))
        for key, column in columns.tracked:
            value = state.dict.get(key, NOT_LOADED)
            if value is NOT_LOADED:
                continue  # not loaded, so not changed
            apply_column_defaults(column, value)
            plan.take(value, column, obj, key)
            if state.persistent and not column.keep_replaced:
                plan.replaced.update(no_longer_held(previous_values(obj, key), value))
    if plan.uploads:
        # If this raises, what was replaced stays remembered for the retry.
        uploads = upload_all(session, plan.uploads)
        tracker.record_for(session).uploads.extend(uploads)
    holders: dict[Ref, list[InstanceState[Any]]] = {}
    for state, tracked in processed:
        forget_replaced(state, tracker)
        for key, _column in tracked:
            for file in files_in(state.dict.get(key)):
                if (ref := ref_of(file)) is not None:
                    holders.setdefault(ref, []).append(state)
    tracker.flush_holders = holders
    record = tracker.record_for(session)
    tracker.unschedule(plan.kept, record)
    record.deletes.update(plan.deletes())


@dataclass(slots=True)
class _FlushPlan:
    """What a flush does to storage, decided from the values of the rows it writes."""

    uploads: list[tuple[FileObject, SaveOptions]] = field(default_factory=list)
    kept: set[Ref] = field(default_factory=set)  # stored files rows hold: never deleted
    replaced: dict[Ref, Backend] = field(default_factory=dict)  # stored files rows let go
    _seen: set[int] = field(default_factory=set)  # one FileObject may sit in several places

    def take(self, value: Any, column: StoredObject, obj: object, key: str) -> None:
        """Note the files `obj.key` holds: upload those with content (once), keep the others.

        The column's save options are worked out once per row, and only for a row with
        something to upload (a key prefix derived from the row is read from it then).

        Raises:
            NoContentError: For a file with neither content nor a stored object.
            InvalidKeySegmentError: For a row a key prefix cannot be derived from.
        """
        options: SaveOptions | None = None
        for file in files_in(value):
            if file.has_pending_content:
                if id(file) not in self._seen:
                    if options is None:
                        options = column.save_options_for(obj, key)
                    self._seen.add(id(file))
                    self.uploads.append((file, options))
            elif (ref := ref_of(file)) is not None:
                self.kept.add(ref)
            elif file.path is None:
                raise NoContentError(
                    f"{type(obj).__name__}.{key} holds {file!r}, which has neither "
                    "content to upload nor a stored object (no path), so there is "
                    "nothing to write. Give it content (FileObject(content=...)), or "
                    "assign a stored file.",
                    backend=file.backend,
                )

    def deletes(self) -> dict[Ref, Backend]:
        """What to delete once the transaction commits: let go of, and held nowhere."""
        return {ref: backend for ref, backend in self.replaced.items() if ref not in self.kept}


def _before_delete(mapper: Mapper[Any], connection: Any, target: Any) -> None:
    session = object_session(target)
    if session is None or not is_tracking(session):
        return
    tracker = state_of(session)
    for key, column in tracked_columns(mapper):
        if column.keep_replaced:
            continue
        value = getattr(target, key)
        for previous in (*previous_values(target, key), value):
            for file in files_ever_in(previous):
                if (ref := ref_of(file)) is not None and not file.has_pending_content:
                    tracker.flush_doomed[ref] = file._backend()
    forget_replaced(instance_state(target), tracker)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    """Schedule the files of deleted rows, except those rows written by the flush hold."""
    tracker: SessionState | None = session.info.get(STATE_KEY)
    if tracker is None:
        return
    doomed, tracker.flush_doomed = tracker.flush_doomed, {}
    holders, tracker.flush_holders = tracker.flush_holders, {}
    for ref in list(doomed):
        # A deleted row handed its file to a row this flush wrote (and did not delete
        # in the end: an orphan removed by a cascade was written, then deleted).
        if any(not state.was_deleted for state in holders.get(ref, ())):
            del doomed[ref]
    if doomed:
        tracker.record_for(session).deletes.update(doomed)


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    state = session.info.get(STATE_KEY)
    if state is None or transaction.parent is not None:
        return
    unattached: Record = state.unattached
    if unattached.uploads or unattached.deletes:
        state.records.setdefault(transaction, Record()).merge(unattached)
        state.unattached = Record()


# -- the end of a transaction ----------------------------------------------------------------------
def _after_commit(session: Session) -> None:
    state = session.info.get(STATE_KEY)
    if state is None:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        state.committed.add(transaction)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    state: SessionState | None = session.info.get(STATE_KEY)
    if state is None:
        return
    record = state.records.pop(transaction, None)
    committed = transaction in state.committed
    state.committed.discard(transaction)
    parent = transaction.parent
    in_doubt: str | None = None
    commits = state.commits
    if parent is None:
        in_doubt = None if committed else commit_in_doubt(commits)
        state.commits = []
    if not committed and (parent is None or transaction.nested) and state.remembered:
        # The changes are discarded, and with them the values they replaced.
        for instance in state.remembered:
            instance.info.pop(REPLACED_KEY, None)
        state.remembered.clear()
    if parent is None and not committed and state.unattached.uploads:
        # A flush failed before it could even begin the transaction.
        record = record or Record()
        record.merge(state.unattached)
        state.unattached = Record()
    if record is None:
        return
    if in_doubt is not None:
        keep_in_doubt(record, in_doubt, commits[-1].error)
        return
    ending = _ending(committed=committed, root=parent is None, nested=transaction.nested)
    if ending == "hand_up":
        assert parent is not None
        state.records.setdefault(parent, Record()).merge(record)
    elif ending == "finish":
        forget_undo(record.uploads)
        if record.deletes:
            delete_quietly(record.deletes, "after_commit")
    else:
        uploaded = record.undo()
        if uploaded:
            delete_quietly(uploaded, "rollback")
            for upload in record.uploads:
                revert(upload)


def _ending(*, committed: bool, root: bool, nested: bool) -> Literal["hand_up", "finish", "undo"]:
    """What the end of a transaction (or SAVEPOINT) means for its files.

    A committed SAVEPOINT, and a flush's sub-transaction whatever its outcome, hand their
    work to the enclosing transaction (`"hand_up"`); a committed root transaction
    deletes what it replaced (`"finish"`); a root or SAVEPOINT that rolled back (or was
    closed without commit) undoes its uploads (`"undo"`).
    """
    if committed or not (root or nested):
        return "finish" if root else "hand_up"
    return "undo"


# -- installing the listeners ----------------------------------------------------------------------
_LISTENERS = (
    Listener(Mapper, "mapper_configured", forget_file_columns),
    *commit_expiry_listeners,
    *held_files_listeners,
    Listener(Session, "before_flush", _before_flush),
    Listener(Mapper, "before_delete", _before_delete),
    Listener(Session, "after_flush_postexec", _after_flush_postexec),
    Listener(Session, "after_transaction_create", _after_transaction_create),
    *commit_outcome_listeners,
    Listener(Session, "after_commit", _after_commit),
    Listener(Session, "after_transaction_end", _after_transaction_end),
)


def install_listeners() -> None:
    """Install the session, mapper and engine listeners of the consistency model.

    `import sqlalchemy_obstore` calls it: an application never needs to. Calling it
    again installs nothing twice (a listener removed with `sqlalchemy.event.remove` is
    installed again).
    """
    for listener in _LISTENERS:
        listener.install()


def installed_listeners() -> list[str]:
    """The package's global listeners SQLAlchemy calls now, as `Target.event -> function`.

    Example:
        >>> "Session.before_flush -> sqlalchemy_obstore._lifecycle._before_flush" in (
        ...     installed_listeners()
        ... )
        True
    """
    return [str(listener) for listener in _LISTENERS if listener.installed]
