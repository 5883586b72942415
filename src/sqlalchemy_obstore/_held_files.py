"""Which stored files a row's file attribute holds, and which it held since the last flush.

A flush schedules for deletion the stored files a row let go of: those its attributes
held since the last flush and hold no more (`no_longer_held`). A file counts with its
renditions (`files_in`: they share its fate), a list with the items removed from it
(`files_ever_in`). What an attribute held (`previous_values`) is its SQLAlchemy history,
plus what that history cannot tell:

* SQLAlchemy keeps the value an attribute had before it changed (its history) until the
  flush, except that `flag_modified` - which every in-place change of a `FileObject` or
  `FileObjectList` calls, and so does an upload - overwrites it with "unknown". Without
  help, `doc.file = new; new.metadata["k"] = "v"` (or `doc.file.filename = "x"; doc.file
  = new`, or `doc.pages = [...]; doc.pages.append(...)`) would forget the old object and
  leave it behind. So, just before `flag_modified` drops it, the stored value is
  remembered in the instance's `info`, until the next flush used it (`forget_replaced`)
  or a rollback discarded the change.
* A stored row whose attribute was replaced while it was not loaded (`_types` notes
  which) never had its old value loaded: the flush reads it from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import InstanceState, Mapper
from sqlalchemy.orm.attributes import get_history, instance_state
from sqlalchemy.orm.base import NO_VALUE

from ._file_columns import file_columns
from ._file_object import FileObject, FileObjectList
from ._listeners import Listener
from ._session_io import Ref
from ._session_state import SessionState, state_of, tracks_files
from ._types import UNKNOWN_OLD_VALUE_KEY, StoredObject, stored_object_columns
from .backends import Backend

__all__ = (
    "LISTENERS",
    "NOT_LOADED",
    "REPLACED_KEY",
    "files_ever_in",
    "files_in",
    "forget_replaced",
    "no_longer_held",
    "previous_values",
    "ref_of",
    "tracked_columns",
)

REPLACED_KEY = "sqlalchemy_obstore.replaced"
NOT_LOADED = object()


# -- what a value holds -----------------------------------------------------------------------
def tracked_columns(mapper: Mapper[Any]) -> tuple[tuple[str, StoredObject], ...]:
    return file_columns(mapper).tracked


def files_in(value: Any) -> Iterator[FileObject]:
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


def ref_of(file: FileObject) -> Ref | None:
    if file.backend is None or file.path is None:
        return None
    return (file.backend, file.path)


def files_ever_in(value: Any) -> Iterator[FileObject]:
    """The files of a value and, for a list, the files removed from it since the last flush."""
    yield from files_in(value)
    if isinstance(value, FileObjectList):
        yield from files_in(value.removed)


# -- remembering replaced values ------------------------------------------------------------------
def _remember_replaced(key: str) -> Callable[[Any, Any], None]:
    def remember(target: Any, initiator: Any) -> None:
        state = instance_state(target)
        session = state.session
        if session is not None and not tracks_files(session):
            return
        previous = state.committed_state.get(key, NOT_LOADED)
        if previous is NOT_LOADED:
            previous = state.dict.get(key)  # not changed since the flush: the stored value
        if previous is None or previous is NO_VALUE:
            return  # nothing stored before, or remembered when it first changed
        state.info.setdefault(REPLACED_KEY, {}).setdefault(key, []).append(previous)
        if session is not None:
            state_of(session).remembered.add(state)

    return remember


def _watch_flag_modified(mapper: Mapper[Any], class_: type) -> None:
    for key, column in stored_object_columns(mapper):
        if column.track and not column.keep_replaced:
            event.listen(getattr(class_, key), "modified", _remember_replaced(key))


def _replaced_values(state: InstanceState[Any], key: str) -> list[Any]:
    remembered = state.info.get(REPLACED_KEY)
    return list(remembered.get(key, ())) if remembered else []


def forget_replaced(state: InstanceState[Any], tracker: SessionState) -> None:
    """The flush accounted for the old values of `state`: start afresh."""
    state.info.pop(REPLACED_KEY, None)
    state.info.pop(UNKNOWN_OLD_VALUE_KEY, None)
    tracker.remembered.discard(state)
    for key, _column in tracked_columns(state.mapper):
        value = state.dict.get(key)
        if isinstance(value, FileObjectList):
            value._removed.clear()


# -- what an attribute held ----------------------------------------------------------------------
def previous_values(obj: Any, key: str) -> list[Any]:
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


def no_longer_held(previous: Iterable[Any], value: Any) -> dict[Ref, Backend]:
    """Stored files that the `previous` values of an attribute held and `value` does not.

    A list's files include those removed from it since the last flush; every file
    includes its renditions.
    """
    keep = {ref for f in files_in(value) if (ref := ref_of(f)) is not None}
    result: dict[Ref, Backend] = {}
    for old in (*previous, value):
        for file in files_ever_in(old):
            ref = ref_of(file)
            if ref is not None and ref not in keep:
                result[ref] = file._backend()
    return result


LISTENERS = (Listener(Mapper, "mapper_configured", _watch_flag_modified),)
"""This module's listener, installed with the session's (`lifecycle.install_listeners`)."""
