"""Orphan listeners: what the session lifecycle leaves in storage reaches the application.

A delete that fails after a commit, after a rollback or after a failed flush leaves an
orphan. Each is logged (a WARNING, as before) and reported to the orphan listeners of
every registry the backend is registered in, as an `OrphanReport` naming the backend,
the paths, the reason and the exception, so that applications can count and alert.
(A commit of unknown outcome reports `commit_outcome_unknown`: see
`test_lifecycle_commit_outcome.py`.) Runs with a `Session` and an `AsyncSession` on
SQLite, against a memory store wrapped for fault injection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    BackendRegistry,
    FileObject,
    ObstoreBackend,
    StorageError,
    StoredObject,
    storages,
)
from sqlalchemy_obstore.registry import OrphanReport, report_orphans
from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault

pytestmark = pytest.mark.integration

BACKEND = "orphans"


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "orphan_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND))
    pages: Mapped[list[FileObject]] = mapped_column(
        StoredObject(BACKEND, multiple=True), default=list
    )


class Db:
    """A `Session` or an `AsyncSession`, driven the same way."""

    def __init__(self, session: Session | AsyncSession) -> None:
        self.session = session

    async def commit(self) -> None:
        if isinstance(self.session, AsyncSession):
            await self.session.commit()
        else:
            self.session.commit()

    async def rollback(self) -> None:
        if isinstance(self.session, AsyncSession):
            await self.session.rollback()
        else:
            self.session.rollback()

    async def flush(self) -> None:
        if isinstance(self.session, AsyncSession):
            await self.session.flush()
        else:
            self.session.flush()


@pytest.fixture
def storage() -> FaultInjectingBackend:
    backend = FaultInjectingBackend(ObstoreBackend(BACKEND, "memory://"))
    storages.register_backend(backend)
    return backend


@pytest.fixture
def reports() -> Iterator[list[OrphanReport]]:
    received: list[OrphanReport] = []
    storages.add_orphan_listener(received.append)
    yield received
    storages.remove_orphan_listener(received.append)


@pytest.fixture(params=["sync", "async"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    path = tmp_path / "orphans.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    if request.param == "sync":
        with Session(engine, expire_on_commit=False) as session:
            yield Db(session)
    else:
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        async with AsyncSession(async_engine, expire_on_commit=False) as async_session:
            yield Db(async_session)
        await async_engine.dispose()
    engine.dispose()


def stored(storage: FaultInjectingBackend) -> set[str]:
    return {info.path for info in storage.inner.list_objects()}


async def test_failed_delete_after_commit_is_reported(
    db: Db,
    storage: FaultInjectingBackend,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
    db.session.add(doc)
    await db.commit()
    assert doc.file is not None
    assert doc.file.path is not None
    old = doc.file.path

    doc.file = FileObject(filename="b.txt", content=b"b")
    storage.fail("delete")
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        await db.commit()  # the commit stands

    [report] = reports
    assert report == OrphanReport(BACKEND, (old,), "after_commit", report.error)
    assert isinstance(report.error, InjectedFault)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # the log line stays
    assert old in stored(storage)


async def test_failed_delete_after_rollback_is_reported(
    db: Db, storage: FaultInjectingBackend, reports: list[OrphanReport]
) -> None:
    db.session.add(Doc(file=FileObject(filename="a.txt", content=b"a")))
    await db.flush()
    [uploaded] = stored(storage)
    storage.fail("delete")
    await db.rollback()

    [report] = reports
    assert (report.backend, report.paths, report.reason) == (BACKEND, (uploaded,), "rollback")
    assert isinstance(report.error, InjectedFault)


async def test_failed_cleanup_of_a_failed_flush_is_reported(
    db: Db, storage: FaultInjectingBackend, reports: list[OrphanReport]
) -> None:
    db.session.add(
        Doc(
            file=FileObject(filename="a.txt", content=b"a"),
            pages=[FileObject(filename="b.txt", content=b"b")],
        )
    )
    storage.fail("put", nth=2)  # the second upload fails: the first must be removed...
    storage.fail("delete")  # ...and that fails too
    with pytest.raises(StorageError):
        await db.flush()

    [report] = reports
    assert report.reason == "failed_flush"
    assert set(report.paths) == stored(storage)
    assert len(report.paths) == 1


async def test_listener_errors_are_logged_and_do_not_break_the_commit(
    db: Db,
    storage: FaultInjectingBackend,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(report: OrphanReport) -> None:
        raise RuntimeError("the metrics server is down")

    storages.add_orphan_listener(broken)
    try:
        doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
        db.session.add(doc)
        await db.commit()
        doc.file = None
        storage.fail("delete")
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
            await db.commit()
    finally:
        storages.remove_orphan_listener(broken)

    assert [r.reason for r in reports] == ["after_commit"]  # the next listener still ran
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "orphan listener" in failure.getMessage()
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], RuntimeError)


def test_reports_go_to_the_registries_that_hold_the_backend() -> None:
    backend = ObstoreBackend(BACKEND, "memory://")
    holder, other = BackendRegistry(), BackendRegistry()
    holder.register_backend(backend)
    other.register_backend(ObstoreBackend(BACKEND, "memory://"))  # same key, another backend
    seen: dict[str, list[OrphanReport]] = {"holder": [], "other": []}
    listener = holder.add_orphan_listener(seen["holder"].append)
    assert listener == seen["holder"].append  # usable as a decorator
    holder.add_orphan_listener(seen["holder"].append)  # twice: still called once
    other.add_orphan_listener(seen["other"].append)

    report = OrphanReport(BACKEND, ("a",), "after_commit")
    report_orphans(backend, report)
    assert seen == {"holder": [report], "other": []}

    holder.remove_orphan_listener(seen["holder"].append)
    holder.remove_orphan_listener(print)  # unknown: ignored
    report_orphans(backend, report)
    assert seen == {"holder": [report], "other": []}
