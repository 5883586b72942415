"""What the session integration keeps about a session: whether it tracks files, and what
each of its transactions did to storage.

A session tracks its files unless `TRACKING_KEY` in its `info` says otherwise
(`tracks_files`). A tracking session keeps one `SessionState` in its `info`, made on
first use (`state_of`), that outlives its transactions:

* a `Record` for each open transaction, root or SAVEPOINT: the uploads done in it (to
  undo if it rolls back) and the deletes it scheduled (to run once the root transaction
  commits). A released SAVEPOINT hands its record to the enclosing transaction; a file
  that rows hold again is unscheduled in every transaction, and put back if the one
  that unscheduled it rolls back. What `before_flush` does before the flush has begun
  a transaction waits in `unattached` until it has;
* what the listeners of one flush hand each other: the rows that hold each stored file
  it writes, and the files of the rows it deletes;
* the instances whose replaced values are remembered (`_held_files`);
* the COMMITs sent for the root transaction, one `CommitAttempt` per connection, which
  `_commit_outcome` notes and judges when a commit fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstanceState, Session, SessionTransaction

from ._session_io import Ref, Upload, uploaded_objects
from .backends import Backend

__all__ = (
    "STATE_KEY",
    "TRACKING_KEY",
    "CommitAttempt",
    "Record",
    "SessionState",
    "state_of",
    "tracks_files",
)

TRACKING_KEY = "sqlalchemy_obstore.track"
"""`session.info` key: set to `False` to turn automatic file handling off for a session."""
STATE_KEY = "sqlalchemy_obstore.state"


def tracks_files(session: Any) -> bool:
    """Whether `session` handles files automatically (`lifecycle.is_tracking`)."""
    return bool(session.info.get(TRACKING_KEY, True))


@dataclass(slots=True)
class Record:
    """What one transaction (root or SAVEPOINT) did to storage."""

    uploads: list[Upload] = field(default_factory=list)
    deletes: dict[Ref, Backend] = field(default_factory=dict)
    # deletes this transaction cancelled in enclosing ones (a file taken out of a row
    # there was put into a row here): scheduled again if this transaction rolls back
    unscheduled: list[tuple[Record, Ref, Backend]] = field(default_factory=list)

    def merge(self, other: Record) -> None:
        self.uploads.extend(other.uploads)
        self.deletes.update(other.deletes)
        self.unscheduled.extend(other.unscheduled)

    def undo(self) -> dict[Ref, Backend]:
        """The transaction rolled back: schedule again the deletes it cancelled in
        enclosing transactions, and return the objects it uploaded (to delete)."""
        for origin, ref, backend in self.unscheduled:
            origin.deletes[ref] = backend
        return uploaded_objects(self.uploads)


@dataclass(slots=True)
class SessionState:
    records: dict[SessionTransaction, Record] = field(default_factory=dict)
    unattached: Record = field(default_factory=Record)
    committed: set[SessionTransaction] = field(default_factory=set)
    # instances holding values remembered by `_held_files` (see there)
    remembered: set[InstanceState[Any]] = field(default_factory=set)
    # during a flush: the stored files of the rows it writes (by row), and the files of
    # the rows it deletes
    flush_holders: dict[Ref, list[InstanceState[Any]]] = field(default_factory=dict)
    flush_doomed: dict[Ref, Backend] = field(default_factory=dict)
    # the COMMITs of the root transaction, one per connection, in the order sent
    commits: list[CommitAttempt] = field(default_factory=list)

    def record_for(self, session: Session) -> Record:
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:
            # before_flush runs before the flush begins the transaction; the record is
            # attached to that transaction as soon as it exists.
            return self.unattached
        return self.records.setdefault(transaction, Record())

    def unschedule(self, refs: set[Ref], current: Record) -> None:
        """Files that rows reference again are not to be deleted after all."""
        for record in (self.unattached, *self.records.values()):
            for ref in refs & record.deletes.keys():
                backend = record.deletes.pop(ref)
                if record is not current:
                    current.unscheduled.append((record, ref, backend))


def state_of(session: Session) -> SessionState:
    state = session.info.get(STATE_KEY)
    if state is None:
        state = session.info[STATE_KEY] = SessionState()
    return state


@dataclass(slots=True)
class CommitAttempt:
    """One connection's COMMIT, from its `commit` event on."""

    connection: Connection
    settled: bool = False  # the DBAPI commit failed (and was judged), or a rollback followed
    unknown: bool = False  # it failed without an answer from the database
    error: BaseException | None = None
