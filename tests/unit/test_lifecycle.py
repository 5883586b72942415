"""The session lifecycle's decisions, without a database: what a flush uploads, what it
schedules for deletion after the commit, and what the end of a transaction does.

The listeners themselves (and every path through a real session) are proven by the
integration suites (`tests/integration/test_lifecycle*.py`); these tests pin the plain
functions those listeners are made of.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    FileObjectList,
    NoContentError,
    ObstoreBackend,
    StoredObject,
)
from sqlalchemy_obstore import _lifecycle as lc
from sqlalchemy_obstore._commit_outcome import commit_in_doubt
from sqlalchemy_obstore._fields import UNDO_KEY
from sqlalchemy_obstore._held_files import no_longer_held
from sqlalchemy_obstore._session_io import Upload
from sqlalchemy_obstore._session_state import CommitAttempt, Record, SessionState
from sqlalchemy_obstore.lifecycle import install_listeners, installed_listeners
from sqlalchemy_obstore.testing import memory_backends

COLUMN = StoredObject("mem")
OPTIONS = COLUMN.save_options


@pytest.fixture
def backend() -> Iterator[ObstoreBackend]:
    with memory_backends("mem") as backends:
        yield backends["mem"]


def stored(path: str, **renditions: str) -> FileObject:
    data: dict[str, Any] = {"backend": "mem", "path": path, "filename": "a.png"}
    if renditions:
        data["renditions"] = {
            name: {"backend": "mem", "path": p, "filename": "a.png"}
            for name, p in renditions.items()
        }
    return FileObject.from_dict(data, trusted=True)


def pending(name: str = "a.txt") -> FileObject:
    return FileObject(filename=name, content=b"data", backend="mem")


class Row:
    """Stands for a mapped object in error messages."""


# -- what a flush uploads ---------------------------------------------------------------------
def test_a_flush_uploads_each_pending_file_once_and_keeps_the_stored_ones(
    backend: ObstoreBackend,
) -> None:
    new, kept = pending(), stored("k/kept.png", thumb="k/kept.thumb.png")
    plan = lc._FlushPlan()
    plan.take([new, kept, new], COLUMN, Row(), "pages")
    plan.take(new, COLUMN, Row(), "file")  # the same file in another column
    assert plan.uploads == [(new, OPTIONS)]
    assert plan.kept == {("mem", "k/kept.png"), ("mem", "k/kept.thumb.png")}


def test_a_file_with_neither_content_nor_an_object_is_refused(backend: ObstoreBackend) -> None:
    with pytest.raises(NoContentError, match=r"Row\.file holds"):
        lc._FlushPlan().take(FileObject(filename="x.txt", backend="mem"), COLUMN, Row(), "file")


# -- what is scheduled for deletion ---------------------------------------------------------------
def test_replaced_files_and_their_renditions_are_scheduled(backend: ObstoreBackend) -> None:
    old = stored("k/old.png", thumb="k/old.thumb.png")
    replaced = no_longer_held([old], pending())
    assert set(replaced) == {("mem", "k/old.png"), ("mem", "k/old.thumb.png")}
    assert all(b is backend for b in replaced.values())


def test_a_file_still_held_is_not_scheduled(backend: ObstoreBackend) -> None:
    a, b = stored("k/a.png"), stored("k/b.png")
    assert no_longer_held([[a, b]], [b]) == {("mem", "k/a.png"): backend}
    assert no_longer_held([a], a) == {}  # unchanged


def test_items_removed_from_a_list_are_scheduled(backend: ObstoreBackend) -> None:
    a, b = stored("k/a.png"), stored("k/b.png")
    pages = FileObjectList([a, b])
    pages.remove(a)
    assert set(no_longer_held([], pages)) == {("mem", "k/a.png")}


def test_a_file_kept_anywhere_in_the_flush_is_not_deleted(backend: ObstoreBackend) -> None:
    """Moved from one row to another in the same flush: replaced in one, held in the other."""
    moved = stored("k/moved.png")
    plan = lc._FlushPlan()
    plan.replaced.update(no_longer_held([moved], None))
    plan.take(moved, COLUMN, Row(), "file")
    assert plan.replaced
    assert plan.deletes() == {}


def test_a_file_held_again_is_unscheduled_in_every_transaction(backend: ObstoreBackend) -> None:
    tracker = SessionState()
    outer, inner = Record(), Record()
    ref = ("mem", "k/a.png")
    outer.deletes[ref] = backend
    tracker.records = {object(): outer, object(): inner}  # type: ignore[dict-item]
    tracker.unschedule({ref}, inner)
    assert outer.deletes == {}
    assert inner.unscheduled == [(outer, ref, backend)]  # restored if `inner` rolls back


# -- what the end of a transaction does ---------------------------------------------------------
@pytest.mark.parametrize(
    ("committed", "root", "nested", "ending"),
    [
        (True, True, False, "finish"),  # a commit: delete what was replaced
        (True, False, True, "hand_up"),  # a released SAVEPOINT: the enclosing one decides
        (False, False, False, "hand_up"),  # a flush's sub-transaction
        (False, True, False, "undo"),  # a rollback
        (False, False, True, "undo"),  # a SAVEPOINT rolled back
    ],
)
def test_the_end_of_a_transaction(committed: bool, root: bool, nested: bool, ending: str) -> None:
    assert lc._ending(committed=committed, root=root, nested=nested) == ending


def test_a_rollback_undoes_the_uploads_and_what_it_unscheduled(backend: ObstoreBackend) -> None:
    outer, inner = Record(), Record()
    file = stored("k/new.png", thumb="k/new.thumb.png")
    inner.uploads.append(Upload(weakref.ref(file), backend, "k/new.png", ("k/new.thumb.png",)))
    inner.unscheduled.append((outer, ("mem", "k/old.png"), backend))
    assert inner.undo() == {("mem", "k/new.png"): backend, ("mem", "k/new.thumb.png"): backend}
    assert outer.deletes == {("mem", "k/old.png"): backend}  # deleted again after commit


def test_a_savepoint_hands_its_work_to_the_enclosing_transaction(
    backend: ObstoreBackend,
) -> None:
    outer, inner = Record(), Record()
    inner.deletes[("mem", "k/a.png")] = backend
    file = stored("k/b.png")
    inner.uploads.append(Upload(weakref.ref(file), backend, "k/b.png"))
    outer.merge(inner)
    assert outer.deletes == inner.deletes
    assert outer.uploads == inner.uploads


def test_a_commit_whose_answer_was_lost_is_in_doubt() -> None:
    assert commit_in_doubt([]) is None
    refused = CommitAttempt(connection=None, settled=True)  # type: ignore[arg-type]
    assert commit_in_doubt([refused]) is None  # the database answered: rolled back
    lost = CommitAttempt(None, True, True, ConnectionResetError("gone"))  # type: ignore[arg-type]
    assert "no answer came back (ConnectionResetError: gone)" in (commit_in_doubt([lost]) or "")
    ok = CommitAttempt(connection=None)  # type: ignore[arg-type]
    assert "1 of the session's 2 connections committed" in (commit_in_doubt([ok, refused]) or "")


# -- the listeners --------------------------------------------------------------------------------
def test_the_listeners_are_installed_once() -> None:
    before = installed_listeners()
    assert "Session.before_flush -> sqlalchemy_obstore._lifecycle._before_flush" in before
    install_listeners()
    install_listeners()
    assert installed_listeners() == before
    assert event.contains(Session, "before_flush", lc._before_flush)


def test_a_removed_listener_is_installed_again() -> None:
    event.remove(Session, "after_flush_postexec", lc._after_flush_postexec)
    try:
        assert not any("after_flush_postexec" in name for name in installed_listeners())
    finally:
        install_listeners()
    assert any("after_flush_postexec" in name for name in installed_listeners())


def test_models_defined_in_a_loop_are_not_kept_alive(backend: ObstoreBackend) -> None:
    """Per-test declarative bases: what the session learns about a mapper goes with it."""
    classes = []
    for _ in range(5):

        class Base(DeclarativeBase):
            pass

        class Doc(Base):
            __tablename__ = "docs"
            id: Mapped[int] = mapped_column(primary_key=True)
            file: Mapped[FileObject | None] = mapped_column(StoredObject("mem"))

        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Doc(file=pending()))
            session.commit()
            session.delete(session.get(Doc, 1))
            session.commit()
        engine.dispose()
        classes.append(weakref.ref(Doc))
        del Doc, Base, session, engine
    gc.collect()
    assert [ref() for ref in classes] == [None] * 5


def test_the_undo_data_of_a_flush_is_never_pickled_or_copied(backend: ObstoreBackend) -> None:
    """What a session keeps in a file to undo its upload belongs to that live object."""
    import copy
    import pickle

    engine = create_engine("sqlite://")

    class UndoBase(DeclarativeBase):
        pass

    class UndoDoc(UndoBase):
        __tablename__ = "undo_docs"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject | None] = mapped_column(StoredObject("mem"))

    UndoBase.metadata.create_all(engine)
    file = pending()
    with Session(engine) as session:
        session.add(UndoDoc(file=file))
        session.flush()
        assert UNDO_KEY in file.__dict__  # until the transaction ends
        for twin in (pickle.loads(pickle.dumps(file)), copy.copy(file), copy.deepcopy(file)):
            assert UNDO_KEY not in twin.__dict__
            assert twin == file
        session.commit()
    assert UNDO_KEY not in file.__dict__
    engine.dispose()
