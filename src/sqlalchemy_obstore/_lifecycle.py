"""The implementation of `sqlalchemy_obstore.lifecycle`, documented and imported there."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import event, select
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import InstanceState, Mapper, Session, SessionTransaction, object_session
from sqlalchemy.orm.attributes import flag_modified, get_history, instance_state
from sqlalchemy.orm.base import NO_VALUE

from ._column import UPLOAD_FACTS
from ._column_defaults import apply_column_defaults
from ._commit_expiry import LISTENERS as commit_expiry_listeners
from ._content import CONSUMED, ContentCheckpoint
from ._errors import (
    NoContentError,
    StorageErrorGroup,
    UntrustedReferenceError,
    redact,
)
from ._fields import UNDO_KEY
from ._file_columns import file_columns
from ._file_columns import forget as forget_file_columns
from ._file_object import FileObject, FileObjectList, SaveOptions
from ._io import NOT_RUN, Call, Gather, run
from ._listeners import Listener
from ._logging import library_logger
from ._mutable import set_quietly
from ._registry import OrphanReason, OrphanReport, report_orphans
from ._types import (
    UNKNOWN_OLD_VALUE_KEY,
    StoredObject,
    stored_object_columns,
)
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

logger = library_logger("sqlalchemy_obstore")

TRACKING_KEY = "sqlalchemy_obstore.track"
"""`session.info` key: set to `False` to turn automatic file handling off for a session."""
CONCURRENCY_KEY = "sqlalchemy_obstore.upload_concurrency"
"""`session.info` key: how many uploads a flush runs at once in an `AsyncSession`."""
DEFAULT_UPLOAD_CONCURRENCY = 8
_STATE_KEY = "sqlalchemy_obstore.state"
_REPLACED_KEY = "sqlalchemy_obstore.replaced"
_NOT_LOADED = object()


def disable_tracking(session: Any) -> None:
    """Turn automatic uploads and deletes off for `session` (a `Session` or `AsyncSession`)."""
    session.info[TRACKING_KEY] = False


def enable_tracking(session: Any) -> None:
    """Turn automatic uploads and deletes back on for `session`."""
    session.info[TRACKING_KEY] = True


def is_tracking(session: Any) -> bool:
    """Whether `session` handles files automatically (the default)."""
    return bool(session.info.get(TRACKING_KEY, True))


# -- bookkeeping ------------------------------------------------------------------------------
_Ref = tuple[str, str]  # (backend key, path)


@dataclass(slots=True)
class _Upload:
    """An upload done in a transaction, with what is needed to undo it.

    The file is held weakly and what a revert restores lives in the file itself (see
    `_remember_undo`): a transaction of many rows does not keep every file, and the
    content it uploaded, alive until it ends, and a row the application dropped needs
    no revert.
    """

    file: weakref.ref[FileObject]
    backend: Backend
    path: str
    renditions: tuple[str, ...] = ()  # paths of the renditions stored with it

    def objects(self) -> Iterator[tuple[_Ref, Backend]]:
        """Every object this upload stored: the file and its renditions."""
        for path in (self.path, *self.renditions):
            yield (self.backend.key, path), self.backend

    def take_undo(self) -> tuple[FileObject, dict[str, Any]] | None:
        """The file and what this upload replaced in it, forgotten there; `None` when the
        file is gone or its undo data was taken already."""
        file = self.file()
        if file is None:
            return None
        undo = file.__dict__.get(UNDO_KEY)
        snapshot = undo.pop(self.path, None) if undo else None
        if undo is not None and not undo:
            del file.__dict__[UNDO_KEY]
        return None if snapshot is None else (file, snapshot)


def _forget_undo(uploads: Iterable[_Upload]) -> None:
    """The uploads are committed for good: release what undoing them would have needed."""
    for upload in uploads:
        upload.take_undo()


def _uploaded_objects(uploads: Sequence[_Upload]) -> dict[_Ref, Backend]:
    return {ref: backend for upload in uploads for ref, backend in upload.objects()}


@dataclass(slots=True)
class _Record:
    """What one transaction (root or SAVEPOINT) did to storage."""

    uploads: list[_Upload] = field(default_factory=list)
    deletes: dict[_Ref, Backend] = field(default_factory=dict)
    # deletes this transaction cancelled in enclosing ones (a file taken out of a row
    # there was put into a row here): scheduled again if this transaction rolls back
    unscheduled: list[tuple[_Record, _Ref, Backend]] = field(default_factory=list)

    def merge(self, other: _Record) -> None:
        self.uploads.extend(other.uploads)
        self.deletes.update(other.deletes)
        self.unscheduled.extend(other.unscheduled)

    def undo(self) -> dict[_Ref, Backend]:
        """The transaction rolled back: schedule again the deletes it cancelled in
        enclosing transactions, and return the objects it uploaded (to delete)."""
        for origin, ref, backend in self.unscheduled:
            origin.deletes[ref] = backend
        return _uploaded_objects(self.uploads)


@dataclass(slots=True)
class _SessionState:
    records: dict[SessionTransaction, _Record] = field(default_factory=dict)
    unattached: _Record = field(default_factory=_Record)
    committed: set[SessionTransaction] = field(default_factory=set)
    # instances holding values remembered by `_remember_replaced` (see there)
    remembered: set[InstanceState[Any]] = field(default_factory=set)
    # during a flush: the stored files of the rows it writes (by row), and the files of
    # the rows it deletes
    flush_holders: dict[_Ref, list[InstanceState[Any]]] = field(default_factory=dict)
    flush_doomed: dict[_Ref, Backend] = field(default_factory=dict)
    # the COMMITs of the root transaction, one per connection, in the order sent
    commits: list[_CommitAttempt] = field(default_factory=list)

    def record_for(self, session: Session) -> _Record:
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:
            # before_flush runs before the flush begins the transaction; the record is
            # attached to that transaction as soon as it exists.
            return self.unattached
        return self.records.setdefault(transaction, _Record())

    def unschedule(self, refs: set[_Ref], current: _Record) -> None:
        """Files that rows reference again are not to be deleted after all."""
        for record in (self.unattached, *self.records.values()):
            for ref in refs & record.deletes.keys():
                backend = record.deletes.pop(ref)
                if record is not current:
                    current.unscheduled.append((record, ref, backend))


def _state(session: Session) -> _SessionState:
    state = session.info.get(_STATE_KEY)
    if state is None:
        state = session.info[_STATE_KEY] = _SessionState()
    return state


def _tracked_columns(mapper: Mapper[Any]) -> tuple[tuple[str, StoredObject], ...]:
    return file_columns(mapper).tracked


def _files(value: Any) -> Iterator[FileObject]:
    """The files a value holds, each followed by its renditions (they share its fate)."""
    if isinstance(value, FileObject):
        yield value
        if renditions := value.renditions:  # (an empty one is not asked: once per row)
            yield from renditions.values()
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, FileObject):
                yield item
                if renditions := item.renditions:
                    yield from renditions.values()


def _ref(file: FileObject) -> _Ref | None:
    if file.backend is None or file.path is None:
        return None
    return (file.backend, file.path)


def _files_ever_in(value: Any) -> Iterator[FileObject]:
    """The files of a value and, for a list, the files removed from it since the last flush."""
    yield from _files(value)
    if isinstance(value, FileObjectList):
        yield from _files(value.removed)


# -- remembering replaced values ------------------------------------------------------------------
# SQLAlchemy keeps the value an attribute had before it changed (its history) until the
# flush, except that `flag_modified` - which every in-place change of a `FileObject` or
# `FileObjectList` calls, and so does an upload - overwrites it with "unknown". Without
# help, `doc.file = new; new.metadata["k"] = "v"` (or `doc.file.filename = "x"; doc.file
# = new`, or `doc.pages = [...]; doc.pages.append(...)`) would forget the old object and
# leave it behind. So, just before `flag_modified` drops it, the stored value is
# remembered in the instance's `info`, until the next flush used it or a rollback
# discarded the change.
def _remember_replaced(key: str) -> Callable[[Any, Any], None]:
    def remember(target: Any, initiator: Any) -> None:
        state = instance_state(target)
        session = state.session
        if session is not None and not is_tracking(session):
            return
        previous = state.committed_state.get(key, _NOT_LOADED)
        if previous is _NOT_LOADED:
            previous = state.dict.get(key)  # not changed since the flush: the stored value
        if previous is None or previous is NO_VALUE:
            return  # nothing stored before, or remembered when it first changed
        state.info.setdefault(_REPLACED_KEY, {}).setdefault(key, []).append(previous)
        if session is not None:
            _state(session).remembered.add(state)

    return remember


def _watch_flag_modified(mapper: Mapper[Any], class_: type) -> None:
    for key, column in stored_object_columns(mapper):
        if column.track and not column.keep_replaced:
            event.listen(getattr(class_, key), "modified", _remember_replaced(key))


def _replaced_values(state: InstanceState[Any], key: str) -> list[Any]:
    remembered = state.info.get(_REPLACED_KEY)
    return list(remembered.get(key, ())) if remembered else []


def _forget_replaced(state: InstanceState[Any], tracker: _SessionState) -> None:
    """The flush accounted for the old values of `state`: start afresh."""
    state.info.pop(_REPLACED_KEY, None)
    state.info.pop(UNKNOWN_OLD_VALUE_KEY, None)
    tracker.remembered.discard(state)
    for key, _column in _tracked_columns(state.mapper):
        value = state.dict.get(key)
        if isinstance(value, FileObjectList):
            value._removed.clear()


_REASONS: dict[OrphanReason, str] = {
    "after_commit": "replaced or removed, after commit",
    "rollback": "transaction rolled back",
    "failed_flush": "failed flush",
    "commit_outcome_unknown": "commit outcome unknown",
}


def _by_backend(objects: dict[_Ref, Backend]) -> list[tuple[Backend, list[str]]]:
    groups: dict[int, tuple[Backend, list[str]]] = {}
    for (_key, path), backend in objects.items():
        groups.setdefault(id(backend), (backend, []))[1].append(path)
    return list(groups.values())


def _concurrency(backends: Iterable[Backend], configured: int) -> int:
    """`configured`, or 1 when no backend waits for I/O: no task per call then."""
    return 1 if all(backend.never_waits for backend in backends) else configured


def _report(backend: Backend, paths: list[str], reason: OrphanReason, error: Any) -> None:
    report = OrphanReport(
        backend.key, tuple(paths), reason, error if isinstance(error, BaseException) else None
    )
    report_orphans(backend, report)


def _delete_quietly(pending: dict[_Ref, Backend], reason: OrphanReason) -> None:
    """Delete objects grouped by backend; failures are logged and reported, never raised."""
    groups = _by_backend(pending)
    if not groups:
        return
    calls = [Call(b.delete, b.delete_async, p) for b, p in groups]
    concurrency = _concurrency((b for b, _ in groups), DEFAULT_UPLOAD_CONCURRENCY)
    outcomes = run(Gather(calls, concurrency=concurrency))
    for (backend, paths), outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            error = None if outcome is NOT_RUN else outcome
            logger.warning(
                "Could not delete %d object(s) %s from backend %r (%s); they are orphans "
                "now and the garbage collector will find them: %s",
                len(paths),
                paths[:10],
                backend.key,
                _REASONS[reason],
                error if error is not None else "not attempted",
                exc_info=error,
            )
            _report(backend, paths, reason, error)
            if error is not None and not isinstance(error, Exception):
                raise error
        else:
            logger.debug(
                "Deleted %d object(s) from backend %r (%s)",
                len(paths),
                backend.key,
                _REASONS[reason],
            )


# -- uploads ------------------------------------------------------------------------------------
def _snapshot(file: FileObject) -> dict[str, Any]:
    snapshot: dict[str, Any] = {name: file.__dict__.get(name) for name in UPLOAD_FACTS}
    snapshot["_checkpoint"] = ContentCheckpoint(file.__dict__["_content"])
    snapshot["_renditions"] = file.__dict__["_renditions"]
    snapshot["_image"] = file.__dict__.get("_image")  # the image facts an upload records
    return snapshot


def _remember_undo(file: FileObject, path: str, snapshot: dict[str, Any]) -> None:
    """Keep in `file` what its upload to `path` replaced, until the transaction ends."""
    d = file.__dict__
    undo = d.get(UNDO_KEY)
    if undo is None:
        d[UNDO_KEY] = {path: snapshot}
    else:
        undo[path] = snapshot


def _revert(upload: _Upload) -> None:
    """Give the file its content back after its upload was undone."""
    taken = upload.take_undo()
    if taken is None:
        return  # the file is gone, or was reverted already
    file, snapshot = taken
    if file.path != upload.path:
        return  # the application changed the file since; leave it alone
    # Undoing the upload is no edit of the file: its holders are not told again.
    set_quietly(
        file,
        **{name: snapshot[name] for name in UPLOAD_FACTS},
        _content=snapshot["_checkpoint"].restore(),
        _renditions=snapshot["_renditions"],
        _image=snapshot["_image"],
    )


def _upload_all(session: Session, jobs: list[tuple[FileObject, SaveOptions]]) -> list[_Upload]:
    for file, _options in jobs:
        if file.__dict__["_content"] is CONSUMED:
            raise NoContentError(
                f"{file!r} was read by an upload that failed or was rolled back, and its "
                "content was a stream that cannot be read twice: assign the content again.",
                backend=file.backend,
            )
    snapshots = [_snapshot(file) for file, _ in jobs]
    configured = int(session.info.get(CONCURRENCY_KEY, DEFAULT_UPLOAD_CONCURRENCY))
    concurrency = _concurrency((f._backend() for f, _ in jobs), configured)
    calls = [Call(f.save, f.save_async, options=o) for f, o in jobs]
    results = run(Gather(calls, concurrency=concurrency))
    done: list[_Upload] = []
    for (file, _), snapshot, result in zip(jobs, snapshots, results, strict=True):
        if isinstance(result, BaseException):
            continue
        path: str = file.path  # type: ignore[assignment]
        _remember_undo(file, path, snapshot)
        renditions = file.__dict__["_renditions"]
        done.append(
            _Upload(
                weakref.ref(file),
                file._backend(),
                path,
                tuple(r.path for r in renditions.values() if r.path is not None)
                if renditions
                else (),
            )
        )
    failures = [r for r in results if isinstance(r, BaseException) and r is not NOT_RUN]
    if failures:
        # Nothing of this flush may stay behind: remove what did get uploaded.
        _delete_quietly(_uploaded_objects(done), "failed_flush")
        for upload in done:
            _revert(upload)
        fatal = [f for f in failures if not isinstance(f, Exception)]
        if fatal:
            raise fatal[0]
        if len(failures) == 1:
            raise failures[0]
        raise StorageErrorGroup(f"{len(failures)} uploads failed during flush", failures)
    return done


# -- references from outside data ----------------------------------------------------------------
def _vet_references(session: Session) -> None:
    """Refuse untrusted references that the rows being written do not already hold.

    A file decoded from outside data (`FileObject.from_dict` without `trusted=True`,
    Pydantic, msgspec, a dict assigned to a column) may be written into a row only as the
    echo of an object that same row and column held: an edit form sending the value
    back. It then takes the stored facts of the object the row held, keeping only its
    filename. Anything else raises `UntrustedReferenceError` before anything is uploaded
    or written. Runs for every session and column, tracked or not: it is not about
    tracking files, it is about who may name them.
    """
    for obj in (*session.new, *session.dirty):
        state = instance_state(obj)
        for key, column in file_columns(state.mapper).all:
            value = state.dict.get(key)
            if value is None:
                continue
            items = value if isinstance(value, list) else (value,)
            untrusted = [f for f in items if isinstance(f, FileObject) and f.__dict__["_untrusted"]]
            if untrusted:
                apply_column_defaults(column, value)
                _accept_echoes(obj, key, value, untrusted)


def _accept_echoes(obj: Any, key: str, value: Any, untrusted: list[FileObject]) -> None:
    held: dict[_Ref, FileObject] = {}
    state = instance_state(obj)
    previous = _previous_values(obj, key) if state.persistent else []
    # (a value equal to the old one - same backend and path - is no change to the
    # attribute history, but the old value is still in committed_state)
    original = state.committed_state.get(key) if state.persistent else None
    for old in (original, *previous, value):
        for file in _files_ever_in(old):
            if not file.__dict__["_untrusted"] and (ref := _ref(file)) is not None:
                held.setdefault(ref, file)
    for file in untrusted:
        ref = _ref(file)
        match = held.get(ref) if ref is not None else None
        if match is None:
            raise UntrustedReferenceError(
                f"{type(obj).__name__}.{key} cannot take {file!r}: it was decoded from "
                "outside data (a request body) and names an object this row does not hold, "
                "so it could point at another user's file. Upload new content instead (or "
                "redeem an upload ticket); send back only the value the row already has; "
                "build references on purpose in server code with the FileObject "
                "constructor or FileObject.from_dict(..., trusted=True).",
                backend=file.backend,
                path=file.path,
            )
        file._take_stored_facts(match)
    flag_modified(obj, key)  # (an echo equal to the old value would not be written)


# -- listeners ------------------------------------------------------------------------------------
def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _vet_references(session)
    if not is_tracking(session):
        return
    tracker = _state(session)
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
            value = state.dict.get(key, _NOT_LOADED)
            if value is _NOT_LOADED:
                continue  # not loaded, so not changed
            apply_column_defaults(column, value)
            plan.take(value, column, obj, key)
            if state.persistent and not column.keep_replaced:
                plan.replaced.update(_no_longer_held(_previous_values(obj, key), value))
    if plan.uploads:
        # If this raises, what was replaced stays remembered for the retry.
        uploads = _upload_all(session, plan.uploads)
        tracker.record_for(session).uploads.extend(uploads)
    holders: dict[_Ref, list[InstanceState[Any]]] = {}
    for state, tracked in processed:
        _forget_replaced(state, tracker)
        for key, _column in tracked:
            for file in _files(state.dict.get(key)):
                if (ref := _ref(file)) is not None:
                    holders.setdefault(ref, []).append(state)
    tracker.flush_holders = holders
    record = tracker.record_for(session)
    tracker.unschedule(plan.kept, record)
    record.deletes.update(plan.deletes())


@dataclass(slots=True)
class _FlushPlan:
    """What a flush does to storage, decided from the values of the rows it writes."""

    uploads: list[tuple[FileObject, SaveOptions]] = field(default_factory=list)
    kept: set[_Ref] = field(default_factory=set)  # stored files rows hold: never deleted
    replaced: dict[_Ref, Backend] = field(default_factory=dict)  # stored files rows let go
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
        for file in _files(value):
            if file.has_pending_content:
                if id(file) not in self._seen:
                    if options is None:
                        options = column.save_options_for(obj, key)
                    self._seen.add(id(file))
                    self.uploads.append((file, options))
            elif (ref := _ref(file)) is not None:
                self.kept.add(ref)
            elif file.path is None:
                raise NoContentError(
                    f"{type(obj).__name__}.{key} holds {file!r}, which has neither "
                    "content to upload nor a stored object (no path), so there is "
                    "nothing to write. Give it content (FileObject(content=...)), or "
                    "assign a stored file.",
                    backend=file.backend,
                )

    def deletes(self) -> dict[_Ref, Backend]:
        """What to delete once the transaction commits: let go of, and held nowhere."""
        return {ref: backend for ref, backend in self.replaced.items() if ref not in self.kept}


def _previous_values(obj: Any, key: str) -> list[Any]:
    """The values `obj.key` held since the last flush: its history and what was remembered."""
    history = get_history(obj, key)
    state = instance_state(obj)
    values = [*(history.deleted or ()), *_replaced_values(state, key)]
    if key in state.info.get(UNKNOWN_OLD_VALUE_KEY, ()):
        values.append(_committed_value(state, key))
    return values


def _committed_value(state: InstanceState[Any], key: str) -> Any:
    """Read the stored value of `key` for a row whose attribute was replaced unloaded.

    Runs inside the flush (so inside the greenlet bridge for an `AsyncSession`), before
    the flush writes anything.
    """
    session, mapper, identity = state.session, state.mapper, state.identity
    if session is None or identity is None:
        return None
    entity = mapper.class_
    criteria = [
        getattr(entity, mapper.get_property_by_column(column).key) == value
        for column, value in zip(mapper.primary_key, identity, strict=True)
    ]
    statement = select(getattr(entity, key)).where(*criteria)
    return session.execute(statement, execution_options={"autoflush": False}).scalar()


def _no_longer_held(previous: Iterable[Any], value: Any) -> dict[_Ref, Backend]:
    """Stored files that the `previous` values of an attribute held and `value` does not.

    A list's files include those removed from it since the last flush; every file
    includes its renditions.
    """
    keep = {ref for f in _files(value) if (ref := _ref(f)) is not None}
    result: dict[_Ref, Backend] = {}
    for old in (*previous, value):
        for file in _files_ever_in(old):
            ref = _ref(file)
            if ref is not None and ref not in keep:
                result[ref] = file._backend()
    return result


def _before_delete(mapper: Mapper[Any], connection: Any, target: Any) -> None:
    session = object_session(target)
    if session is None or not is_tracking(session):
        return
    tracker = _state(session)
    for key, column in _tracked_columns(mapper):
        if column.keep_replaced:
            continue
        value = getattr(target, key)
        for previous in (*_previous_values(target, key), value):
            for file in _files_ever_in(previous):
                if (ref := _ref(file)) is not None and not file.has_pending_content:
                    tracker.flush_doomed[ref] = file._backend()
    _forget_replaced(instance_state(target), tracker)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    """Schedule the files of deleted rows, except those rows written by the flush hold."""
    tracker: _SessionState | None = session.info.get(_STATE_KEY)
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
    state = session.info.get(_STATE_KEY)
    if state is None or transaction.parent is not None:
        return
    unattached: _Record = state.unattached
    if unattached.uploads or unattached.deletes:
        state.records.setdefault(transaction, _Record()).merge(unattached)
        state.unattached = _Record()


# -- commits whose outcome is unknown -----------------------------------------------------------
# A commit can fail in two ways that look alike to the session and not at all to storage.
# Before COMMIT reached the database (the flush failed, a `before_commit` or `commit`
# listener raised) or refused by it (a deferred constraint, a serialization failure), the
# transaction rolled back and its uploads must go. After the DBAPI sent COMMIT and before
# the answer came (the connection died), the database may have committed: deleting the
# uploads then would leave committed rows pointing at nothing. SQLAlchemy reports a
# failure of the DBAPI's `commit()` itself, and only that, through `handle_error` between
# the connection's `commit` event and the next `rollback`; these listeners note it.
@dataclass(slots=True)
class _CommitAttempt:
    """One connection's COMMIT, from its `commit` event on."""

    connection: Connection
    settled: bool = False  # the DBAPI commit failed (and was judged), or a rollback followed
    unknown: bool = False  # it failed without an answer from the database
    error: BaseException | None = None


# The session state of each connection a tracking session is using (`after_begin`).
_COMMITTERS: weakref.WeakKeyDictionary[Connection, _SessionState] = weakref.WeakKeyDictionary()


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if is_tracking(session):
        _COMMITTERS[connection] = _state(session)


def _on_commit(connection: Connection) -> None:
    tracker = _COMMITTERS.get(connection)
    if tracker is not None:
        tracker.commits.append(_CommitAttempt(connection))


def _open_attempt(connection: Connection | None) -> _CommitAttempt | None:
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


def _commit_in_doubt(attempts: list[_CommitAttempt]) -> str | None:
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


def _keep_in_doubt(record: _Record, why: str, error: BaseException | None) -> None:
    """Leave everything of a transaction whose commit may have happened, and say so."""
    uploaded = _uploaded_objects(record.uploads)
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
    for backend, paths in _by_backend({**uploaded, **replaced}):
        _report(backend, paths, "commit_outcome_unknown", error)
    for upload in record.uploads:
        _revert(upload)  # the session rolled back: a retry uploads again, under a new key


def _after_commit(session: Session) -> None:
    state = session.info.get(_STATE_KEY)
    if state is None:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        state.committed.add(transaction)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    state: _SessionState | None = session.info.get(_STATE_KEY)
    if state is None:
        return
    record = state.records.pop(transaction, None)
    committed = transaction in state.committed
    state.committed.discard(transaction)
    parent = transaction.parent
    in_doubt: str | None = None
    commits = state.commits
    if parent is None:
        in_doubt = None if committed else _commit_in_doubt(commits)
        state.commits = []
    if not committed and (parent is None or transaction.nested) and state.remembered:
        # The changes are discarded, and with them the values they replaced.
        for instance in state.remembered:
            instance.info.pop(_REPLACED_KEY, None)
        state.remembered.clear()
    if parent is None and not committed and state.unattached.uploads:
        # A flush failed before it could even begin the transaction.
        record = record or _Record()
        record.merge(state.unattached)
        state.unattached = _Record()
    if record is None:
        return
    if in_doubt is not None:
        _keep_in_doubt(record, in_doubt, commits[-1].error)
        return
    ending = _ending(committed=committed, root=parent is None, nested=transaction.nested)
    if ending == "hand_up":
        assert parent is not None
        state.records.setdefault(parent, _Record()).merge(record)
    elif ending == "finish":
        _forget_undo(record.uploads)
        if record.deletes:
            _delete_quietly(record.deletes, "after_commit")
    else:
        uploaded = record.undo()
        if uploaded:
            _delete_quietly(uploaded, "rollback")
            for upload in record.uploads:
                _revert(upload)


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
    Listener(Mapper, "mapper_configured", _watch_flag_modified),
    Listener(Session, "before_flush", _before_flush),
    Listener(Mapper, "before_delete", _before_delete),
    Listener(Session, "after_flush_postexec", _after_flush_postexec),
    Listener(Session, "after_transaction_create", _after_transaction_create),
    Listener(Session, "after_begin", _after_begin),
    Listener(Engine, "commit", _on_commit),
    Listener(Engine, "rollback", _on_rollback),
    Listener(Engine, "handle_error", _on_error),
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
