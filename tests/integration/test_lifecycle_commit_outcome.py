"""A commit whose outcome is unknown deletes no file; one that failed undoes its uploads.

Real PostgreSQL behind a protocol-aware TCP proxy (`tests/pg_proxy.py`) and a real S3
server (SeaweedFS, which checks signatures). The proxy makes the faults exact:

- *lost reply*: COMMIT reaches the server, the server commits, and the connection is cut
  before the answer gets back. The database has committed; the client sees
  "connection was closed in the middle of operation" (asyncpg) or "server closed the
  connection unexpectedly" (psycopg). Deleting the transaction's uploads then would
  leave committed rows pointing at nothing - the bug these tests pin down.
- *lost request*: the connection is cut instead of forwarding COMMIT. Nothing was
  committed, but the client cannot know: the files the transaction replaced are still
  referenced and must stay too.
- *interrupted wait*: the server commits and its reply is held back while the client
  waits, until the wait ends another way - the task is cancelled, `asyncio.timeout`
  fires, asyncpg's `command_timeout` expires, Ctrl-C (`KeyboardInterrupt`) reaches a
  sync `Session` - and the reply arrives late, or never.

Each runs with every driver the library supports on PostgreSQL: a sync `Session` on
psycopg, an `AsyncSession` on asyncpg and an `AsyncSession` on psycopg's async mode.
The checks are the consistency model's: I1 (every committed reference resolves to an
object of the recorded size), no delete issued after COMMIT was sent, exactly one
WARNING that says what to run, and a report to the registry's orphan listeners.

Failures before COMMIT was sent (a `commit` listener that raises) and failures the
database answered (a deferred foreign key checked at COMMIT) are ordinary rollbacks:
their uploads are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages
from sqlalchemy_obstore.backends import UploadBody, WriteResult
from sqlalchemy_obstore.registry import OrphanReport
from sqlalchemy_obstore.testing import FaultInjectingBackend
from tests.integration.backends import s3_backend
from tests.pg_proxy import PgProxy
from tests.servers import SeaweedServer

pytestmark = pytest.mark.integration

BACKEND = "outcome"
UNKNOWN = "The outcome of a COMMIT is unknown"


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "outcome_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND))
    pages: Mapped[list[FileObject]] = mapped_column(
        StoredObject(BACKEND, multiple=True), default=list
    )


class Note(Base):
    """A row whose foreign key PostgreSQL checks only at COMMIT."""

    __tablename__ = "outcome_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc_id: Mapped[int] = mapped_column(
        ForeignKey("outcome_docs.id", deferrable=True, initially="DEFERRED")
    )
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND))


# -- storage that records what the session does ------------------------------------------------
class Recording(FaultInjectingBackend):
    """A real S3 backend that logs every put and delete the session issues."""

    def __init__(self, inner: ObstoreBackend) -> None:
        super().__init__(inner)
        self.puts: list[str] = []
        self.deletes: list[str] = []

    def put(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        result = super().put(path, body, **kwargs)
        self.puts.append(path)
        return result

    async def put_async(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        result = await super().put_async(path, body, **kwargs)
        self.puts.append(path)
        return result

    def delete(self, paths: str | Any) -> None:
        self.deletes.extend([paths] if isinstance(paths, str) else paths)
        super().delete(paths)

    async def delete_async(self, paths: str | Any) -> None:
        self.deletes.extend([paths] if isinstance(paths, str) else paths)
        await super().delete_async(paths)

    def stored(self) -> dict[str, int]:
        inner = self.inner
        assert isinstance(inner, ObstoreBackend)
        return {info.path: info.size for info in inner.list_objects(inner.prefix)}


@pytest.fixture
def storage(seaweed_server: SeaweedServer) -> Recording:
    inner = s3_backend(seaweed_server, key=BACKEND, prefix=f"outcome-{uuid.uuid4().hex[:8]}")
    backend = Recording(inner)
    storages.register_backend(backend)
    return backend


@pytest.fixture
def reports(storage: Recording) -> Iterator[list[OrphanReport]]:
    received: list[OrphanReport] = []
    storages.add_orphan_listener(received.append)
    yield received
    storages.remove_orphan_listener(received.append)


@pytest.fixture
def proxy(pg_engine: Engine) -> Iterator[PgProxy]:
    url = pg_engine.url
    with PgProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


@pytest.fixture
def check(pg_engine: Engine) -> Iterator[Engine]:
    """A direct engine (no proxy) to read what is committed."""
    Base.metadata.drop_all(pg_engine)
    Base.metadata.create_all(pg_engine)
    yield pg_engine
    Base.metadata.drop_all(pg_engine)


# -- one scenario, three drivers -----------------------------------------------------------------
class Driver(ABC):
    @abstractmethod
    def add(self, *rows: Base) -> None: ...

    @abstractmethod
    async def flush(self) -> None: ...

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class SyncDriver(Driver):
    def __init__(self, url: str, **engine_options: Any) -> None:
        self.engine = create_engine(url, **engine_options)
        self.session = Session(self.engine, expire_on_commit=False)

    def add(self, *rows: Base) -> None:
        self.session.add_all(rows)

    async def flush(self) -> None:
        self.session.flush()

    async def commit(self) -> None:
        self.session.commit()

    async def rollback(self) -> None:
        self.session.rollback()

    async def close(self) -> None:
        self.session.close()
        self.engine.dispose()


class AsyncDriver(Driver):
    def __init__(self, url: str, **engine_options: Any) -> None:
        self.engine = create_async_engine(url, **engine_options)
        self.session = AsyncSession(self.engine, expire_on_commit=False)

    def add(self, *rows: Base) -> None:
        self.session.add_all(rows)

    async def flush(self) -> None:
        await self.session.flush()

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()

    async def close(self) -> None:
        await self.session.close()
        await self.engine.dispose()


DRIVERS = ["psycopg-sync", "asyncpg-async", "psycopg-async"]
ASYNC_DRIVERS = ["asyncpg-async", "psycopg-async"]


def make_driver(name: str, check: Engine, proxy: PgProxy, **engine_options: Any) -> Driver:
    url = check.url
    if name == "asyncpg-async":
        url = url.set(drivername="postgresql+asyncpg")
    proxied = proxy.url(url.render_as_string(hide_password=False))
    if name == "psycopg-sync":
        return SyncDriver(proxied, **engine_options)
    return AsyncDriver(proxied, **engine_options)


@pytest.fixture(params=DRIVERS)
async def db(
    request: pytest.FixtureRequest, check: Engine, proxy: PgProxy
) -> AsyncIterator[Driver]:
    driver = make_driver(request.param, check, proxy)
    try:
        yield driver
    finally:
        await driver.close()


def committed_refs(check: Engine) -> dict[str, int | None]:
    """Every file a committed row references: path -> recorded size."""
    refs: dict[str, int | None] = {}
    with check.connect() as conn:
        for file, pages in conn.execute(select(Doc.__table__.c.file, Doc.__table__.c.pages)):
            for stored in [file, *(pages or [])]:
                if stored is not None:
                    refs[stored.path] = stored.size
        for (file,) in conn.execute(select(Note.__table__.c.file)):
            if file is not None:
                refs[file.path] = file.size
    return refs


def assert_no_dangling(check: Engine, storage: Recording) -> dict[str, int | None]:
    """I1: every committed reference resolves to an object of the recorded size."""
    refs = committed_refs(check)
    stored = storage.stored()
    dangling = {path for path in refs if path not in stored}
    assert not dangling, f"dangling references: {sorted(dangling)}"
    for path, size in refs.items():
        assert stored[path] == size, path
    return refs


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "sqlalchemy_obstore"
    ]


async def committed_doc(db: Driver, name: str) -> Doc:
    doc = Doc(name=name, file=FileObject(filename="old.txt", content=b"old" * 10))
    db.add(doc)
    await db.commit()
    return doc


# -- the tests -------------------------------------------------------------------------------------
async def test_lost_commit_reply_deletes_nothing(
    db: Driver,
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = await committed_doc(db, "existing")
    old = doc.file.path if doc.file else None
    assert old is not None

    page = FileObject(filename="page.txt", content=b"page" * 5)
    doc.file = FileObject(filename="new.txt", content=b"new" * 20)
    doc.pages.append(page)
    db.add(Doc(name="added", file=FileObject(filename="added.txt", content=b"added")))
    proxy.lose_commit_replies(1)
    deletes_before = len(storage.deletes)
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        with pytest.raises(DBAPIError) as raised:
            await db.commit()
        assert raised.value.connection_invalidated
        await db.rollback()

    assert proxy.replies_lost == 1
    refs = assert_no_dangling(check, storage)  # I1: the server did commit
    uploads = set(storage.puts[-3:])
    assert uploads <= set(refs), "the committed rows reference this transaction's uploads"
    assert storage.deletes[deletes_before:] == [], "a commit of unknown outcome deleted files"
    assert storage.stored().keys() - refs.keys() == {old}  # the replaced file: an orphan for gc

    [message] = warnings_of(caplog)
    assert UNKNOWN in message
    assert "sqlalchemy-obstore verify" in message
    assert "sqlalchemy-obstore gc" in message
    assert "3 uploaded object(s)" in message
    assert "1 replaced or removed object(s)" in message
    [report] = reports
    assert report.reason == "commit_outcome_unknown"
    assert report.backend == BACKEND
    assert set(report.paths) == uploads | {old}
    assert report.error is not None

    # the session rolled back: the files hold their content again, and a retry (here: a
    # new row with the same file) uploads it under a new key
    assert page.has_pending_content
    db.add(Doc(name="retried", pages=[page]))
    await db.commit()
    assert page.path not in uploads
    assert_no_dangling(check, storage)


async def test_lost_commit_request_keeps_the_replaced_files(
    db: Driver,
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = await committed_doc(db, "existing")
    old = doc.file.path if doc.file else None

    doc.file = FileObject(filename="new.txt", content=b"new" * 20)
    proxy.lose_commits(1)
    deletes_before = len(storage.deletes)
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        with pytest.raises(DBAPIError):
            await db.commit()
        await db.rollback()

    assert proxy.requests_lost == 1
    refs = assert_no_dangling(check, storage)  # the old row, still referencing `old`
    assert old in refs
    assert storage.deletes[deletes_before:] == []
    new = storage.puts[-1]
    assert storage.stored().keys() - refs.keys() == {new}  # the upload: an orphan for gc
    [message] = warnings_of(caplog)
    assert UNKNOWN in message
    assert [set(r.paths) for r in reports] == [{new, old}]


async def test_commit_stopped_before_it_was_sent_undoes_the_uploads(
    db: Driver,
    check: Engine,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = await committed_doc(db, "existing")
    engine: Any = db.engine  # type: ignore[attr-defined]
    sync_engine: Engine = getattr(engine, "sync_engine", engine)

    class Refused(Exception):
        pass

    def refuse(connection: Any) -> None:
        raise Refused("a commit listener said no")

    doc.file = FileObject(filename="new.txt", content=b"new" * 20)
    event.listen(sync_engine, "commit", refuse)
    try:
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
            with pytest.raises(Refused):
                await db.commit()
            await db.rollback()
    finally:
        event.remove(sync_engine, "commit", refuse)

    new = storage.puts[-1]
    assert new in storage.deletes, "the upload of a transaction that never committed stays"
    assert storage.stored().keys() == assert_no_dangling(check, storage).keys()
    assert warnings_of(caplog) == []
    assert reports == []


async def test_commit_refused_by_the_database_undoes_the_uploads(
    db: Driver,
    check: Engine,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await committed_doc(db, "existing")
    db.add(Note(doc_id=999_999, file=FileObject(filename="note.txt", content=b"note")))
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        with pytest.raises(DBAPIError) as raised:
            await db.commit()  # the deferred foreign key fails at COMMIT: a clear answer
        assert not raised.value.connection_invalidated
        await db.rollback()

    note = storage.puts[-1]
    assert note in storage.deletes
    assert storage.stored().keys() == assert_no_dangling(check, storage).keys()
    assert warnings_of(caplog) == []
    assert reports == []


async def test_lost_commit_reply_without_files_says_nothing(
    db: Driver,
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = await committed_doc(db, "existing")
    doc.name = "renamed"  # no file changes hands
    proxy.lose_commit_replies(1)
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        with pytest.raises(DBAPIError):
            await db.commit()
        await db.rollback()
    assert proxy.replies_lost == 1
    assert warnings_of(caplog) == []
    assert reports == []
    assert_no_dangling(check, storage)


# -- the wait for COMMIT's answer ends another way --------------------------------------------
# The server commits; its answer is held back by the proxy while the client waits, and the
# wait ends without it: the task is cancelled, a timeout fires, Ctrl-C. The answer then
# arrives late (or, for a connection the driver dropped, never). As for a lost reply, the
# transaction did commit, and not a file may be deleted.
async def replace_and_add(db: Driver) -> str:
    """A committed row whose file is then replaced, and a new row: flushed, not committed.

    Returns the path of the replaced file. The two uploads are the last two puts.
    """
    doc = await committed_doc(db, "existing")
    assert doc.file is not None
    assert doc.file.path is not None
    old = doc.file.path
    doc.file = FileObject(filename="new.txt", content=b"new" * 20)
    db.add(Doc(name="added", file=FileObject(filename="added.txt", content=b"added")))
    await db.flush()  # the uploads are done: commit() only sends COMMIT
    return old


def release_after_the_hold(proxy: PgProxy, seconds: float) -> threading.Thread:
    """Let the held answer through `seconds` after the server finished the COMMIT."""

    def late() -> None:
        proxy.wait_for_held_reply()
        time.sleep(seconds)
        proxy.release()

    thread = threading.Thread(target=late, daemon=True)
    thread.start()
    return thread


def assert_kept_in_doubt(
    check: Engine,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
    *,
    old: str,
    deletes_before: int,
    error: str,
) -> None:
    """The server committed, the session was told nothing: everything stays, said once."""
    refs = assert_no_dangling(check, storage)  # I1
    uploads = set(storage.puts[-2:])
    assert uploads <= set(refs), "the committed rows reference this transaction's uploads"
    assert storage.deletes[deletes_before:] == [], "a commit of unknown outcome deleted files"
    assert storage.stored().keys() - refs.keys() == {old}  # the replaced file: an orphan for gc
    [message] = warnings_of(caplog)
    assert UNKNOWN in message
    assert f"({error}:" in message
    assert "sqlalchemy-obstore verify" in message
    assert "sqlalchemy-obstore gc" in message
    [report] = reports
    assert report.reason == "commit_outcome_unknown"
    assert set(report.paths) == uploads | {old}
    assert type(report.error).__name__ == error


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
@pytest.mark.parametrize("interruption", ["task cancelled", "wait_for timeout"])
async def test_a_commit_interrupted_while_awaiting_its_answer_deletes_nothing(
    driver: str,
    interruption: str,
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`AsyncSession.commit()` cancelled (a request handler cancelled, a client gone) or
    timed out by the application while the COMMIT's answer is on its way."""
    db = make_driver(driver, check, proxy)
    try:
        old = await replace_and_add(db)
        proxy.hold_commit_replies(1)
        deletes_before = len(storage.deletes)
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
            if interruption == "task cancelled":
                task = asyncio.ensure_future(db.commit())
                await asyncio.to_thread(proxy.wait_for_held_reply)
                task.cancel()
                threading.Timer(0.3, proxy.release).start()  # the answer comes, too late
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                release_after_the_hold(proxy, 3.5)  # after the timeout, whatever the load
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(db.commit(), timeout=2.0)
            await db.rollback()
        assert proxy.replies_held == 1
        assert_kept_in_doubt(
            check, storage, reports, caplog,
            old=old, deletes_before=deletes_before, error="CancelledError",
        )  # fmt: skip
    finally:
        proxy.release()
        await db.close()


async def test_a_driver_timeout_on_commit_deletes_nothing(
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncpg's `command_timeout` expires while the COMMIT's answer is on its way."""
    db = make_driver("asyncpg-async", check, proxy, connect_args={"command_timeout": 1})
    try:
        old = await replace_and_add(db)
        proxy.hold_commit_replies(1)
        release_after_the_hold(proxy, 2.5)
        deletes_before = len(storage.deletes)
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
            with pytest.raises(asyncio.TimeoutError):
                await db.commit()
            await db.rollback()
        assert_kept_in_doubt(
            check, storage, reports, caplog,
            old=old, deletes_before=deletes_before, error="TimeoutError",
        )  # fmt: skip
    finally:
        proxy.release()
        await db.close()


def test_ctrl_c_during_a_sync_commit_deletes_nothing(
    check: Engine,
    proxy: PgProxy,
    storage: Recording,
    reports: list[OrphanReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C reaches a sync `Session` (psycopg) while the COMMIT's answer is on its way.

    psycopg asks the server to cancel and waits for the answer, then raises
    `KeyboardInterrupt`: the COMMIT had finished, the session cannot tell.
    """
    assert threading.current_thread() is threading.main_thread()  # signals go there
    armed = threading.Event()

    def interrupt(signum: int, frame: Any) -> None:
        if armed.is_set():  # never outside the commit: the test run would stop
            raise KeyboardInterrupt

    def ctrl_c() -> None:
        proxy.wait_for_held_reply()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        proxy.release()

    engine = create_engine(proxy.url(check.url.render_as_string(hide_password=False)))
    session = Session(engine, expire_on_commit=False)
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        doc = Doc(name="existing", file=FileObject(filename="old.txt", content=b"old" * 10))
        session.add(doc)
        session.commit()
        assert doc.file is not None
        assert doc.file.path is not None
        old = doc.file.path
        doc.file = FileObject(filename="new.txt", content=b"new" * 20)
        session.add(Doc(name="added", file=FileObject(filename="added.txt", content=b"added")))
        session.flush()
        proxy.hold_commit_replies(1)
        threading.Thread(target=ctrl_c, daemon=True).start()
        deletes_before = len(storage.deletes)
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
            armed.set()
            try:
                with pytest.raises(KeyboardInterrupt):
                    session.commit()
            finally:
                armed.clear()
            session.rollback()
    finally:
        signal.signal(signal.SIGINT, previous)
        proxy.release()
        session.close()
        engine.dispose()
    assert_kept_in_doubt(
        check, storage, reports, caplog,
        old=old, deletes_before=deletes_before, error="KeyboardInterrupt",
    )  # fmt: skip
