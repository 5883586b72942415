"""In an `AsyncSession`, file columns keep their value through `expire_on_commit`.

A session with `expire_on_commit=True` (SQLAlchemy's default) expires every attribute of
every object when a transaction commits, so the next access reloads it. In an
`AsyncSession` that reload is I/O outside an `await` and fails with `MissingGreenlet`:
`await session.commit()` followed by `await doc.file.get_content_async()` would break the
first program most users write.

A `StoredObject` value is a reference the flush that just committed wrote itself, so in
an `AsyncSession` it is kept: right after a commit, every loaded file column of every
object in the session holds the value it had, instead of being expired (its other
columns expire as usual). Only the expiry *of the commit* is skipped: `session.expire()`,
`refresh()`, `expire_all()` and rollbacks expire file columns like any other, so a value
changed by another transaction is seen after an explicit refresh, as with
`expire_on_commit=False`. A plain `Session` reloads lazily without trouble, so there
nothing changes: SQLAlchemy's semantics stay exactly as documented.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import InstanceState, Mapper, Session, SessionTransaction

from ._file_columns import file_columns
from ._io import in_async_context
from ._listeners import Listener

__all__ = ("LISTENERS",)

_SNAPSHOT_KEY = "sqlalchemy_obstore.committed_files"


def _remember_committed_files(session: Session) -> None:
    """Just before the commit expires the session's objects, note their file values."""
    if not session.expire_on_commit or session.get_nested_transaction() is not None:
        return  # nothing will expire (a SAVEPOINT commit never expires)
    if not in_async_context():
        return  # a plain Session reloads expired files lazily: nothing to work around
    snapshot: dict[InstanceState[Any], dict[str, Any]] = {}
    for state in session.identity_map.all_states():
        keys = file_columns(state.mapper).keys
        if not keys:
            continue
        loaded = state.dict
        values = {key: loaded[key] for key in keys if key in loaded}
        if values:
            snapshot[state] = values
    if snapshot:
        session.info[_SNAPSHOT_KEY] = snapshot


def _keep_committed_files(state: InstanceState[Any], attrs: Any) -> None:
    """Put the committed file values back into an object the commit just expired."""
    if attrs is not None:  # an explicit expire of some attributes: leave it
        return
    session = state.session
    if session is None:
        return
    snapshot: dict[InstanceState[Any], dict[str, Any]] | None = session.info.get(_SNAPSHOT_KEY)
    if not snapshot:
        return
    values = snapshot.pop(state, None)
    if values:
        state.dict.update(values)
        state.expired_attributes.difference_update(values)


def _forget_committed_files(session: Session, transaction: SessionTransaction) -> None:
    """The commit's expiry is over: later expiries are the application's own."""
    session.info.pop(_SNAPSHOT_KEY, None)


LISTENERS = (
    Listener(Session, "after_commit", _remember_committed_files),
    Listener(Mapper, "expire", _keep_committed_files, raw=True),
    Listener(Session, "after_transaction_end", _forget_committed_files),
)
"""This module's listeners, installed with the session's (`lifecycle.install_listeners`)."""
