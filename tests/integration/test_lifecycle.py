"""The transactional file lifecycle, scenario by scenario.

Every scenario is written once, against a small `Driver`, and runs four times: on SQLite
and on PostgreSQL, each with a sync `Session` and with an `AsyncSession`. The async
drivers really await `AsyncSession.commit()` & co., so the session hooks run in
SQLAlchemy's greenlet bridge and must use obstore's async calls: the `storage` backend
counts the sync and async twins separately and every async run asserts that no sync
obstore call was made (and every sync run that no async one was).

What is checked, in the words of the consistency model (DESIGN.md §3): content is
uploaded before the row that references it, replaced and removed objects are deleted
only after the commit, a rollback (of the transaction or of a SAVEPOINT) deletes exactly
the objects it uploaded, and nothing is ever overwritten in place.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import logging
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, TypeVar

import pytest
from sqlalchemy import ForeignKey, String, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from sqlalchemy_obstore import (
    FileObject,
    FileObjectList,
    InvalidFileObjectError,
    NoContentError,
    ObjectExistsError,
    ObstoreBackend,
    StorageError,
    StorageErrorGroup,
    StoredObject,
    disable_tracking,
    storages,
)
from sqlalchemy_obstore.backends import UploadBody, WriteResult
from sqlalchemy_obstore.lifecycle import CONCURRENCY_KEY
from sqlalchemy_obstore.testing import FaultInjectingBackend, make_file
from tests.integration.sessions import AsyncSavepoint, Savepoint, SyncSavepoint

pytestmark = pytest.mark.integration

BACKEND = "files"
MiB = 1024 * 1024
_M = TypeVar("_M", bound="Base")


# -- models ---------------------------------------------------------------------------------------
class Base(DeclarativeBase):
    pass


def _name() -> str:
    return uuid.uuid4().hex


class Doc(Base):
    __tablename__ = "lc_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, default=_name)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND))
    pages: Mapped[list[FileObject]] = mapped_column(
        StoredObject(BACKEND, multiple=True), default=list
    )


class KeptDoc(Base):
    __tablename__ = "lc_kept_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, keep_replaced=True))
    pages: Mapped[list[FileObject]] = mapped_column(
        StoredObject(BACKEND, multiple=True, keep_replaced=True), default=list
    )


class ManualDoc(Base):
    __tablename__ = "lc_manual_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, track=False))


class Folder(Base):
    __tablename__ = "lc_folders"
    id: Mapped[int] = mapped_column(primary_key=True)
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="folder", cascade="all, delete-orphan", lazy="selectin"
    )


class Attachment(Base):
    __tablename__ = "lc_attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("lc_folders.id"))
    folder: Mapped[Folder] = relationship(back_populates="attachments", lazy="selectin")
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND))


def _fixed_key(name: str) -> str:
    return f"fixed/{name}"


class FixedKeyDoc(Base):
    __tablename__ = "lc_fixed_key_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, key_function=_fixed_key))


ALL_MODELS: tuple[type[Base], ...] = (Doc, KeptDoc, ManualDoc, Folder, Attachment, FixedKeyDoc)


# -- storage ---------------------------------------------------------------------------------------
class TracingBackend(FaultInjectingBackend):
    """A fault-injecting backend that also tells sync and async calls apart.

    `twins` counts `put`, `put_async`, `delete` and `delete_async` separately, so a test
    can prove which obstore API the session hooks used. With `delay`, `put_async`
    sleeps (cooperatively) and `max_in_flight` records how many ran at once.
    """

    def __init__(self, inner: ObstoreBackend, *, delay: float = 0.0) -> None:
        super().__init__(inner)
        self.twins: Counter[str] = Counter()
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def never_waits(self) -> bool:
        """With a `delay`, `put_async` waits (the uploads of a flush then overlap)."""
        return not self.delay and super().never_waits

    def put(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        self.twins["put"] += 1
        return super().put(path, body, **kwargs)

    async def put_async(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        self.twins["put_async"] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await super().put_async(path, body, **kwargs)
        finally:
            self.in_flight -= 1

    def delete(self, paths: str | Any) -> None:
        self.twins["delete"] += 1
        super().delete(paths)

    async def delete_async(self, paths: str | Any) -> None:
        self.twins["delete_async"] += 1
        await super().delete_async(paths)

    # what is really in the store, bypassing faults and counters
    def paths(self) -> set[str]:
        return {info.path for info in self.inner.list_objects()}

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def content(self, path: str) -> bytes:
        return self.inner.get_bytes(path)


@pytest.fixture
def storage() -> TracingBackend:
    """A memory backend registered as `files`, wrapped for fault injection and tracing."""
    backend = TracingBackend(ObstoreBackend(BACKEND, "memory://"))
    storages.register_backend(backend)
    return backend


# -- drivers: one scenario, sync or async ----------------------------------------------------------
class Driver(ABC):
    """The session operations a scenario needs, for a `Session` or an `AsyncSession`.

    `check` is a separate sync engine on the same database, used to read what is
    committed independently of the session under test.
    """

    is_async: ClassVar[bool]

    def __init__(self, name: str, check: Engine) -> None:
        self.name = name
        self.check = check

    @property
    @abstractmethod
    def sync_session(self) -> Session: ...

    @property
    @abstractmethod
    def session(self) -> Session | AsyncSession: ...

    def add(self, *objects: Base) -> None:
        self.session.add_all(objects)

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def flush(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def delete(self, obj: Base) -> None: ...

    @abstractmethod
    async def refresh(self, obj: Base) -> None: ...

    @abstractmethod
    async def get(self, model: type[_M], ident: int) -> _M | None: ...

    @abstractmethod
    async def begin_nested(self) -> Savepoint: ...

    @abstractmethod
    async def save(self, file: FileObject) -> None:
        """Upload explicitly, the way the application would in this mode."""

    # -- reading committed state through the separate engine --------------------------------
    def committed(self, model: type[_M]) -> list[dict[str, Any]]:
        table = model.__table__
        with self.check.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.id)).mappings().all()  # type: ignore[attr-defined]
        return [dict(row) for row in rows]

    def committed_files(self, *models: type[Base]) -> dict[str, FileObject]:
        """Every file referenced by a committed row of `models`, by path."""
        found: dict[str, FileObject] = {}
        for model in models or ALL_MODELS:
            for row in self.committed(model):
                for value in row.values():
                    files = value if isinstance(value, list) else [value]
                    found.update({f.path: f for f in files if isinstance(f, FileObject)})
        return found


class SyncDriver(Driver):
    is_async = False

    def __init__(self, name: str, check: Engine, engine: Engine) -> None:
        super().__init__(name, check)
        self._session = Session(engine, expire_on_commit=False)

    @property
    def sync_session(self) -> Session:
        return self._session

    @property
    def session(self) -> Session:
        return self._session

    async def commit(self) -> None:
        self._session.commit()

    async def flush(self) -> None:
        self._session.flush()

    async def rollback(self) -> None:
        self._session.rollback()

    async def close(self) -> None:
        self._session.close()

    async def delete(self, obj: Base) -> None:
        self._session.delete(obj)

    async def refresh(self, obj: Base) -> None:
        self._session.refresh(obj)

    async def get(self, model: type[_M], ident: int) -> _M | None:
        return self._session.get(model, ident)

    async def begin_nested(self) -> Savepoint:
        return SyncSavepoint(self._session.begin_nested())

    async def save(self, file: FileObject) -> None:
        file.save()


class AsyncDriver(Driver):
    is_async = True

    def __init__(self, name: str, check: Engine, engine: AsyncEngine) -> None:
        super().__init__(name, check)
        self._session = AsyncSession(engine, expire_on_commit=False)

    @property
    def sync_session(self) -> Session:
        return self._session.sync_session

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def commit(self) -> None:
        await self._session.commit()

    async def flush(self) -> None:
        await self._session.flush()

    async def rollback(self) -> None:
        await self._session.rollback()

    async def close(self) -> None:
        await self._session.close()

    async def delete(self, obj: Base) -> None:
        await self._session.delete(obj)

    async def refresh(self, obj: Base) -> None:
        await self._session.refresh(obj)

    async def get(self, model: type[_M], ident: int) -> _M | None:
        return await self._session.get(model, ident)

    async def begin_nested(self) -> Savepoint:
        return AsyncSavepoint(await self._session.begin_nested())

    async def save(self, file: FileObject) -> None:
        await file.save_async()


COMBINATIONS = ["sqlite-sync", "sqlite-async", "postgresql-sync", "postgresql-async"]


@pytest.fixture(params=COMBINATIONS)
def engines(request: pytest.FixtureRequest) -> tuple[str, Engine, AsyncEngine | None]:
    """(combination, sync engine, async engine or None) on one fresh database."""
    database, mode = request.param.split("-")
    sync_engine: Engine = request.getfixturevalue(
        "sqlite_engine" if database == "sqlite" else "pg_engine"
    )
    async_engine: AsyncEngine | None = None
    if mode == "async":
        async_engine = request.getfixturevalue(
            "sqlite_async_engine" if database == "sqlite" else "pg_async_engine"
        )
    return request.param, sync_engine, async_engine


@pytest.fixture
async def db(
    engines: tuple[str, Engine, AsyncEngine | None], storage: TracingBackend
) -> AsyncIterator[Driver]:
    name, sync_engine, async_engine = engines
    Base.metadata.drop_all(sync_engine)
    Base.metadata.create_all(sync_engine)
    driver: Driver = (
        SyncDriver(name, sync_engine, sync_engine)
        if async_engine is None
        else AsyncDriver(name, sync_engine, async_engine)
    )
    try:
        yield driver
    finally:
        await driver.close()
        Base.metadata.drop_all(sync_engine)
    # The session hooks used the obstore API matching the session: sync calls in a
    # Session, async calls (awaited through the greenlet bridge) in an AsyncSession.
    if driver.is_async:
        assert storage.twins["put"] == storage.twins["delete"] == 0, storage.twins
    else:
        assert storage.twins["put_async"] == storage.twins["delete_async"] == 0, storage.twins


# -- helpers ---------------------------------------------------------------------------------------
def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_of(file: FileObject) -> bytes:
    data = file.__dict__["_content"]
    assert isinstance(data, (bytes, bytearray)), data
    return bytes(data)


def assert_consistent(db: Driver, storage: TracingBackend) -> dict[str, FileObject]:
    """Storage holds exactly the committed references, each of the recorded size (I1, I3)."""
    committed = db.committed_files()
    assert storage.paths() == set(committed), "storage and committed references differ"
    for path, file in committed.items():
        assert storage.inner.head(path).size == file.size, path
    return committed


def chunks(total: int, size: int = MiB, seed: int = 0) -> Iterator[bytes]:
    """A one-shot stream of `total` bytes (deterministic for a seed)."""
    data = make_file(size=total, seed=seed).__dict__["_content"]
    for start in range(0, total, size):
        yield data[start : start + size]


# -- add, replace, None ----------------------------------------------------------------------------
async def test_add_uploads_before_the_insert(db: Driver, storage: TracingBackend) -> None:
    file, page = make_file("a.txt", size=300, seed=1), make_file("p.bin", size=20, seed=2)
    data, page_data = content_of(file), content_of(page)
    seen_at_insert: list[bool] = []

    def before_insert(mapper: Any, connection: Any, target: Doc) -> None:
        assert target.file is not None
        seen_at_insert.append(target.file.is_saved and storage.exists(target.file.path or ""))

    event.listen(Doc, "before_insert", before_insert)
    try:
        doc = Doc(file=file, pages=[page])
        db.add(doc)
        await db.commit()
    finally:
        event.remove(Doc, "before_insert", before_insert)

    assert seen_at_insert == [True]
    assert file.path is not None
    assert file.is_saved
    assert not file.has_pending_content
    assert (file.size, file.checksum) == (300, checksum(data))
    assert file.etag
    assert file.backend == BACKEND
    assert storage.content(file.path) == data
    assert page.path is not None
    assert storage.content(page.path) == page_data
    committed = assert_consistent(db, storage)
    assert set(committed) == {file.path, page.path}
    assert committed[file.path].checksum == checksum(data)
    assert committed[file.path].etag == file.etag


async def test_replace_deletes_old_object_only_after_commit(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("report.pdf", seed=1))
    db.add(doc)
    await db.commit()
    assert doc.file is not None
    assert doc.file.path is not None
    old = doc.file.path
    old_data = storage.content(old)

    doc.file = make_file("report.pdf", seed=2)  # same name: still a fresh key
    await db.flush()
    new = doc.file.path
    assert new is not None
    assert new != old
    assert storage.exists(old)
    assert storage.exists(new)
    assert storage.content(old) == old_data  # not overwritten in place
    assert set(db.committed_files()) == {old}  # the replacement is not committed yet

    await db.commit()
    assert not storage.exists(old)
    assert set(assert_consistent(db, storage)) == {new}


async def test_replace_then_change_new_file_still_deletes_old(
    db: Driver, storage: TracingBackend
) -> None:
    # In-place changes of the new value (metadata, filename, an explicit save) call
    # flag_modified, which drops SQLAlchemy's attribute history; the old object must
    # still be found and deleted.
    doc = Doc(file=make_file("a.txt", seed=1), pages=[make_file("p.txt", seed=1)])
    db.add(doc)
    await db.commit()
    assert doc.file is not None
    old_file, old_pages = doc.file.path, {p.path for p in doc.pages}

    doc.file = make_file("b.txt", seed=2)
    doc.file.metadata["reviewed"] = "yes"
    doc.file.filename = "b-final.txt"
    doc.pages = [make_file("q.txt", seed=2)]
    doc.pages.append(make_file("r.txt", seed=3))
    await db.commit()

    assert not storage.exists(old_file or "")
    assert not any(storage.exists(p or "") for p in old_pages)
    committed = assert_consistent(db, storage)
    assert {f.filename for f in committed.values()} == {"b-final.txt", "q.txt", "r.txt"}
    assert committed[doc.file.path or ""].metadata == {"reviewed": "yes"}


async def test_in_place_change_then_replace_deletes_old(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("a.txt", seed=1), pages=[make_file("p.txt", seed=1)])
    db.add(doc)
    await db.commit()
    assert doc.file is not None
    old = {doc.file.path, doc.pages[0].path}

    doc.file.metadata["seen"] = "1"  # flags the attribute modified first...
    doc.pages.append(make_file("q.txt", seed=2))
    doc.file = make_file("b.txt", seed=2)  # ...then replaces it
    doc.pages = [make_file("r.txt", seed=3)]
    await db.commit()
    assert not any(storage.exists(p or "") for p in old)
    committed = assert_consistent(db, storage)
    assert {f.filename for f in committed.values()} == {"b.txt", "r.txt"}


async def test_failed_upload_keeps_what_was_replaced_for_the_retry(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("a.txt", seed=1), pages=[make_file(f"p{i}", seed=i) for i in range(2)])
    db.add(doc)
    await db.commit()
    assert doc.file is not None
    replaced = {doc.file.path, doc.pages[0].path}

    doc.file = make_file("b.txt", seed=5)
    doc.pages.remove(doc.pages[0])
    doc.pages.append(make_file("c.txt", seed=6))
    storage.fail("put", nth=2)  # b.txt uploads, c.txt fails
    with pytest.raises(StorageError):
        await db.commit()
    assert set(db.committed_files()) == storage.paths()
    await db.commit()
    assert not any(storage.exists(p or "") for p in replaced)
    committed = assert_consistent(db, storage)
    assert {f.filename for f in committed.values()} == {"b.txt", "p1", "c.txt"}


async def test_files_handed_to_another_row_are_kept(db: Driver, storage: TracingBackend) -> None:
    source = Doc(
        file=make_file("a.txt", seed=1), pages=[make_file(f"p{i}", seed=i) for i in range(2)]
    )
    target = Doc()
    db.add(source, target)
    await db.commit()
    assert source.file is not None
    moved = {source.file.path, source.pages[0].path, source.pages[1].path}

    # merge: the target takes the source's files, the source row is deleted
    target.file = source.file
    target.pages = [source.pages[0]]
    target.pages.append(source.pages[1])
    await db.delete(source)
    await db.commit()
    assert set(assert_consistent(db, storage)) == moved

    # move across flushes: taken out in one flush, put into a new row in the next
    page = target.pages.pop()
    await db.flush()
    db.add(Doc(pages=[page]))
    await db.commit()
    assert set(assert_consistent(db, storage)) == moved


async def test_pending_file_taken_from_a_deleted_row_is_uploaded_and_kept(
    db: Driver, storage: TracingBackend
) -> None:
    source = Doc()
    db.add(source)
    await db.commit()
    source.file = make_file("new.txt")  # pending: uploaded by the flush for the new row
    db.add(Doc(file=source.file))
    await db.delete(source)
    await db.commit()
    committed = assert_consistent(db, storage)
    assert [f.filename for f in committed.values()] == ["new.txt"]


async def test_same_pending_file_in_two_places_is_uploaded_once(
    db: Driver, storage: TracingBackend
) -> None:
    file = make_file("twice.txt", size=100)
    doc = Doc(pages=[file, file])
    db.add(doc)
    await db.commit()
    assert storage.calls["put"] == 1
    assert doc.pages[0].path == doc.pages[1].path
    assert len(assert_consistent(db, storage)) == 1


async def test_set_none_deletes_after_commit(db: Driver, storage: TracingBackend) -> None:
    doc = Doc(file=make_file("a.txt"))
    db.add(doc)
    await db.commit()
    assert doc.file is not None
    old = doc.file.path or ""

    doc.file = None
    await db.flush()
    assert storage.exists(old)
    await db.commit()
    assert not storage.exists(old)
    assert db.committed(Doc)[0]["file"] is None
    assert assert_consistent(db, storage) == {}


# -- lists -----------------------------------------------------------------------------------------
async def test_list_operations_delete_exactly_the_removed_items(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(pages=[make_file(f"p{i}.txt", seed=i) for i in range(6)])
    db.add(doc)
    await db.commit()
    assert isinstance(doc.pages, FileObjectList)
    paths = [p.path or "" for p in doc.pages]
    assert set(assert_consistent(db, storage)) == set(paths)

    async def step() -> set[str]:
        await db.commit()
        return set(assert_consistent(db, storage))

    doc.pages.append(make_file("new.txt", seed=10))
    appended = doc.pages[-1]
    assert await step() == {*paths, appended.path}

    doc.pages.remove(doc.pages[0])
    await db.flush()
    assert storage.exists(paths[0])  # removed, but not committed yet
    assert await step() == {*paths[1:], appended.path}

    doc.pages[0] = make_file("replacement.txt", seed=11)  # replaces paths[1]
    replacement = doc.pages[0]
    assert await step() == {replacement.path, *paths[2:], appended.path}

    popped = doc.pages.pop()
    assert popped is appended
    assert await step() == {replacement.path, *paths[2:]}

    del doc.pages[1]  # paths[2]
    doc.pages += [make_file("extra.txt", seed=12)]
    extra = doc.pages[-1]
    assert await step() == {replacement.path, *paths[3:], extra.path}

    doc.pages.clear()
    assert await step() == set()
    assert storage.paths() == set()


async def test_default_list_is_tracked(db: Driver, storage: TracingBackend) -> None:
    doc = Doc()
    db.add(doc)
    await db.commit()
    await db.refresh(doc)
    assert isinstance(doc.pages, FileObjectList)
    doc.pages.append(make_file("p.txt"))
    await db.commit()
    assert len(assert_consistent(db, storage)) == 1


# -- deleting rows ---------------------------------------------------------------------------------
async def test_row_delete_deletes_files_after_commit(db: Driver, storage: TracingBackend) -> None:
    keep = Doc(file=make_file("keep.txt", seed=1))
    doc = Doc(file=make_file("a.txt", seed=2), pages=[make_file("p.txt", seed=3)])
    db.add(keep, doc)
    await db.commit()
    doomed = {doc.file.path if doc.file else None, doc.pages[0].path}

    await db.delete(doc)
    await db.flush()
    assert all(storage.exists(p or "") for p in doomed)
    await db.commit()
    assert not any(storage.exists(p or "") for p in doomed)
    assert set(assert_consistent(db, storage)) == {keep.file.path if keep.file else None}


async def test_row_delete_after_replace_deletes_the_committed_file(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("a.txt"))
    db.add(doc)
    await db.commit()
    doc.file = make_file("b.txt", seed=5)  # pending, never uploaded
    await db.delete(doc)
    await db.commit()
    assert storage.twins["put"] + storage.twins["put_async"] == 1
    assert assert_consistent(db, storage) == {}


async def test_cascade_delete_of_parent_deletes_children_files(
    db: Driver, storage: TracingBackend
) -> None:
    folder = Folder(attachments=[Attachment(file=make_file(f"a{i}.txt", seed=i)) for i in range(3)])
    other = Folder(attachments=[Attachment(file=make_file("other.txt", seed=9))])
    db.add(folder, other)
    await db.commit()
    assert len(assert_consistent(db, storage)) == 4

    await db.delete(folder)
    await db.commit()
    assert db.committed(Attachment)
    assert len(db.committed(Attachment)) == 1
    assert set(assert_consistent(db, storage)) == {other.attachments[0].file.path}  # type: ignore[union-attr]


async def test_delete_orphan_deletes_removed_childs_file(
    db: Driver, storage: TracingBackend
) -> None:
    folder = Folder(attachments=[Attachment(file=make_file(f"a{i}.txt", seed=i)) for i in range(3)])
    db.add(folder)
    await db.commit()
    removed = folder.attachments[1]
    removed_path = removed.file.path if removed.file else None
    kept = {a.file.path for a in folder.attachments if a is not removed and a.file}

    folder.attachments.remove(removed)
    await db.flush()
    assert storage.exists(removed_path or "")
    await db.commit()
    assert not storage.exists(removed_path or "")
    assert set(assert_consistent(db, storage)) == kept


# -- rollback --------------------------------------------------------------------------------------
async def test_rollback_deletes_uploads_and_gives_content_back(
    db: Driver, storage: TracingBackend
) -> None:
    file = make_file("a.txt", size=200, seed=3)
    page = make_file("p.txt", size=20, seed=4)
    data = content_of(file)
    db.add(Doc(file=file, pages=[page]))
    await db.flush()
    uploaded = {file.path, page.path}
    assert None not in uploaded
    assert all(storage.exists(p or "") for p in uploaded)

    await db.rollback()
    assert storage.paths() == set()
    assert file.has_pending_content
    assert file.path is None
    assert file.size is None
    assert page.has_pending_content
    assert page.path is None

    doc = Doc(file=file, pages=[page])  # the same FileObjects, uploaded again
    db.add(doc)
    await db.commit()
    assert file.path is not None
    assert file.path not in uploaded
    assert storage.content(file.path) == data
    assert file.checksum == checksum(data)
    assert file.size == 200
    assert len(assert_consistent(db, storage)) == 2


async def test_a_transaction_does_not_keep_the_files_it_uploaded_alive(
    db: Driver, storage: TracingBackend
) -> None:
    """A row the application dropped after the flush takes its file and content with it
    (a large import does not hold every file until the commit); its upload is still
    undone by the rollback."""
    payload = io.BytesIO(b"x" * 300)  # (a memory store may keep a buffer it was given)
    content_alive = weakref.ref(payload)
    file = FileObject(filename="a.txt", content=payload)
    file_alive = weakref.ref(file)
    db.add(Doc(file=file))
    del payload, file
    await db.flush()
    assert len(storage.paths()) == 1
    gc.collect()
    assert file_alive() is None
    assert content_alive() is None

    await db.rollback()
    assert storage.paths() == set()


async def test_what_undoing_an_upload_needs_is_released_by_the_commit(
    db: Driver, storage: TracingBackend
) -> None:
    """A file the application keeps does not keep the content it uploaded once the
    transaction (here through a released SAVEPOINT) has committed."""
    payload = io.BytesIO(b"y" * 300)
    content_alive = weakref.ref(payload)
    doc = Doc(file=FileObject(filename="a.txt", content=payload))
    del payload
    savepoint = await db.begin_nested()
    db.add(doc)
    await db.flush()
    await savepoint.commit()
    gc.collect()
    assert content_alive() is not None  # the outer transaction may still roll back

    await db.commit()
    gc.collect()
    assert content_alive() is None
    assert doc.file is not None
    assert storage.content(doc.file.path or "") == b"y" * 300


async def test_rollback_of_a_replace_keeps_the_old_object(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("a.txt", seed=1), pages=[make_file("p.txt", seed=1)])
    db.add(doc)
    await db.commit()
    before = set(assert_consistent(db, storage))

    doc.file = make_file("b.txt", seed=2)
    doc.pages.pop()
    doc.pages.append(make_file("q.txt", seed=2))
    await db.flush()
    assert len(storage.paths()) == 4
    await db.rollback()
    assert set(assert_consistent(db, storage)) == before
    await db.refresh(doc)
    assert {doc.file.path if doc.file else None, doc.pages[0].path} == before

    # a later, unrelated commit must not delete what the rolled-back change replaced
    db.add(Doc(file=make_file("c.txt", seed=3)))
    await db.commit()
    assert before < set(assert_consistent(db, storage))


async def test_savepoint_rollback_deletes_exactly_its_uploads(
    db: Driver, storage: TracingBackend
) -> None:
    committed = Doc(file=make_file("committed.txt", seed=1))
    db.add(committed)
    await db.commit()
    committed_path = committed.file.path if committed.file else None

    outer = Doc(file=make_file("outer.txt", seed=2))
    db.add(outer)
    await db.flush()
    outer_path = outer.file.path if outer.file else None

    savepoint = await db.begin_nested()
    inner = Doc(file=make_file("inner.txt", seed=3), pages=[make_file("ip.txt", seed=4)])
    db.add(inner)
    committed.file = make_file("replacement.txt", seed=5)  # replaces a committed file
    outer.pages.append(make_file("outer-page.txt", seed=6))
    await db.flush()
    in_savepoint = {
        inner.file.path if inner.file else None,
        inner.pages[0].path,
        committed.file.path,
        outer.pages[0].path,
    }
    assert None not in in_savepoint
    assert storage.paths() == {committed_path, outer_path, *in_savepoint}

    await savepoint.rollback()
    assert storage.paths() == {committed_path, outer_path}

    await db.commit()
    assert set(assert_consistent(db, storage)) == {committed_path, outer_path}
    assert len(db.committed(Doc)) == 2


async def test_savepoint_commit_then_outer_rollback_deletes_everything(
    db: Driver, storage: TracingBackend
) -> None:
    kept = Doc(file=make_file("kept.txt"))
    db.add(kept)
    await db.commit()
    kept_path = kept.file.path if kept.file else None

    db.add(Doc(file=make_file("outer.txt", seed=1)))
    await db.flush()
    savepoint = await db.begin_nested()
    db.add(Doc(file=make_file("inner.txt", seed=2), pages=[make_file("p.txt", seed=3)]))
    kept.file = None
    await savepoint.commit()
    assert len(storage.paths()) == 4

    await db.rollback()
    assert set(assert_consistent(db, storage)) == {kept_path}


async def test_savepoint_rollback_restores_the_deletes_it_cancelled(
    db: Driver, storage: TracingBackend
) -> None:
    source = Doc(pages=[make_file("x.txt")])
    target = Doc()
    db.add(source, target)
    await db.commit()
    page = source.pages.pop()
    await db.flush()  # the page is to be deleted after the commit...
    savepoint = await db.begin_nested()
    target.pages.append(page)
    await db.flush()  # ...not any more: the target references it...
    await savepoint.rollback()  # ...until that is rolled back
    await db.commit()
    assert assert_consistent(db, storage) == {}


async def test_nested_savepoints(db: Driver, storage: TracingBackend) -> None:
    db.add(Doc(file=make_file("root.txt", seed=1)))
    first = await db.begin_nested()
    db.add(Doc(file=make_file("first.txt", seed=2)))
    second = await db.begin_nested()
    db.add(Doc(file=make_file("second.txt", seed=3)))
    await db.flush()
    assert len(storage.paths()) == 3
    await second.rollback()
    assert len(storage.paths()) == 2
    await first.commit()
    await db.commit()
    committed = assert_consistent(db, storage)
    assert {f.filename for f in committed.values()} == {"root.txt", "first.txt"}


# -- failures --------------------------------------------------------------------------------------
async def test_failing_flush_then_rollback_leaves_nothing(
    db: Driver, storage: TracingBackend
) -> None:
    db.add(Doc(name="taken", file=make_file("first.txt", seed=1)))
    await db.commit()
    before = set(assert_consistent(db, storage))

    db.add(Doc(name="taken", file=make_file("dup.txt", seed=2), pages=[make_file("p.txt")]))
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()
    assert set(assert_consistent(db, storage)) == before


async def test_failing_flush_in_savepoint_rolls_back_only_the_savepoint(
    db: Driver, storage: TracingBackend
) -> None:
    db.add(Doc(name="taken", file=make_file("first.txt", seed=1)))
    await db.flush()
    savepoint = await db.begin_nested()
    db.add(Doc(name="taken", file=make_file("dup.txt", seed=2)))
    with pytest.raises(IntegrityError):
        await db.flush()
    assert len(storage.paths()) == 2
    await savepoint.rollback()
    assert len(storage.paths()) == 1
    await db.commit()
    committed = assert_consistent(db, storage)
    assert [f.filename for f in committed.values()] == ["first.txt"]


async def test_failed_upload_raises_and_leaves_nothing(db: Driver, storage: TracingBackend) -> None:
    files = [make_file(f"f{i}.txt", size=100, seed=i) for i in range(3)]
    data = [content_of(f) for f in files]
    db.add(*(Doc(file=f) for f in files))
    storage.fail("put", nth=2)
    with pytest.raises(StorageError) as raised:
        await db.commit()
    assert "put #2" in str(raised.value)
    assert raised.value.backend == BACKEND
    # A memory store never waits: async uploads run one after another, as sync ones do,
    # and stop at the first failure (concurrent ones: test_failed_concurrent_upload_...).
    assert storage.calls["put"] == 2
    assert len(storage.injected) == 1
    assert db.committed(Doc) == []
    assert storage.paths() == set()  # the successful uploads of that flush were removed
    assert all(f.has_pending_content and f.path is None for f in files)

    # The transaction is still usable: the same files upload completely on retry.
    await db.commit()
    committed = assert_consistent(db, storage)
    assert len(committed) == 3
    for file, expected in zip(files, data, strict=True):
        assert file.path is not None
        assert storage.content(file.path) == expected


async def test_failed_upload_then_rollback_leaves_nothing(
    db: Driver, storage: TracingBackend
) -> None:
    db.add(Doc(file=make_file("early.txt", seed=1)))
    await db.flush()  # an earlier, successful flush of the same transaction
    db.add(*(Doc(file=make_file(f"f{i}.txt", seed=i + 2)) for i in range(3)))
    storage.fail("put", nth=2)
    with pytest.raises(StorageError):
        await db.flush()
    assert len(storage.paths()) == 1  # only the earlier flush's upload is left
    await db.rollback()
    assert assert_consistent(db, storage) == {}


async def test_failed_multipart_part_raises_and_retry_uploads_everything(
    db: Driver, storage: TracingBackend
) -> None:
    big = bytes(make_file(size=6 * MiB, seed=7).__dict__["_content"])
    small = make_file("small.txt", seed=8)
    streamed = FileObject(filename="big.bin", content=io.BytesIO(big))
    db.add(Doc(file=small), Doc(file=streamed))
    storage.fail("part", nth=2)
    with pytest.raises(StorageError):
        await db.commit()
    assert storage.injected
    assert storage.injected[0].operation == "part"
    assert db.committed(Doc) == []
    assert storage.paths() == set()

    await db.commit()  # a seekable source is read again from where it started
    assert streamed.path is not None
    assert streamed.size == len(big)
    assert streamed.checksum == checksum(big)
    assert storage.content(streamed.path) == big
    assert len(assert_consistent(db, storage)) == 2


async def test_a_file_with_neither_content_nor_an_object_says_so(
    db: Driver, storage: TracingBackend
) -> None:
    """Issue #16: it failed at INSERT with a wrapped `StatementError` asking whether
    tracking was disabled (it was not). The flush says what is wrong, before any SQL."""
    kept = make_file("kept.txt")
    db.add(Doc(file=kept))
    await db.commit()
    empty = FileObject(filename="nothing.txt")
    for doc in (Doc(file=empty), Doc(pages=[make_file("p.bin"), empty])):
        db.add(doc)
        with pytest.raises(NoContentError) as refused:
            await db.commit()
        message = str(refused.value)
        assert "Doc.file holds" in message or "Doc.pages holds" in message
        assert "neither content to upload nor a stored object" in message
        assert "tracking" not in message
        assert not isinstance(refused.value.__cause__, StatementError)
        await db.rollback()
    assert set(assert_consistent(db, storage)) == {kept.path}  # nothing else stored


async def test_failed_stream_upload_is_not_retried_truncated(
    db: Driver, storage: TracingBackend
) -> None:
    streamed = FileObject(filename="big.bin", content=chunks(6 * MiB))
    db.add(Doc(file=streamed))
    storage.fail("part", nth=3)
    with pytest.raises(StorageError):
        await db.commit()
    assert storage.paths() == set()
    # A one-shot stream was partly consumed: a retry must refuse instead of storing
    # whatever is left of it.
    with pytest.raises(NoContentError):
        await db.commit()
    assert storage.paths() == set()
    await db.rollback()
    assert assert_consistent(db, storage) == {}


async def test_failed_put_of_a_stream_is_not_retried_truncated(
    db: Driver, storage: TracingBackend
) -> None:
    doc = Doc(file=make_file("a.txt"))
    db.add(doc)
    await db.commit()
    doc.file = FileObject(filename="big.bin", content=chunks(6 * MiB, seed=2))
    storage.fail("put")
    with pytest.raises(StorageError):
        await db.commit()
    with pytest.raises(NoContentError):
        await db.commit()
    # the application assigns the content again and the old file is still replaced
    data = bytes(make_file(size=6 * MiB, seed=2).__dict__["_content"])
    doc.file = FileObject(filename="big.bin", content=chunks(6 * MiB, seed=2))
    await db.commit()
    assert doc.file.size == len(data)
    assert storage.content(doc.file.path or "") == data
    assert len(assert_consistent(db, storage)) == 1


async def test_failed_post_commit_delete_is_logged_and_leaves_an_orphan(
    db: Driver, storage: TracingBackend, caplog: pytest.LogCaptureFixture
) -> None:
    doc = Doc(file=make_file("a.txt", seed=1))
    db.add(doc)
    await db.commit()
    old = doc.file.path if doc.file else ""
    assert old

    doc.file = make_file("b.txt", seed=2)
    storage.fail("delete")
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore"):
        await db.commit()  # succeeds: the commit is not undone by a failed cleanup

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert repr(BACKEND) in message
    assert old in message
    assert storage.exists(old)  # the orphan the garbage collector will find
    committed = db.committed_files()
    assert set(committed) == {doc.file.path}
    assert storage.paths() - set(committed) == {old}


# -- opting out ------------------------------------------------------------------------------------
async def test_keep_replaced_keeps_old_objects(db: Driver, storage: TracingBackend) -> None:
    doc = KeptDoc(
        file=make_file("v1.txt", seed=1), pages=[make_file(f"p{i}", seed=i) for i in range(3)]
    )
    db.add(doc)
    await db.commit()
    ever: set[str | None] = {doc.file.path if doc.file else None, *(p.path for p in doc.pages)}

    doc.file = make_file("v2.txt", seed=2)
    doc.pages.pop(0)
    doc.pages[0] = make_file("q.txt", seed=5)
    await db.commit()
    ever |= {doc.file.path, doc.pages[0].path}
    doc.file = None
    doc.pages.clear()
    await db.commit()
    await db.delete(doc)
    await db.commit()

    assert db.committed(KeptDoc) == []
    assert len(ever) == 6
    assert storage.paths() == ever


async def test_untracked_column_does_nothing_automatically(
    db: Driver, storage: TracingBackend
) -> None:
    db.add(ManualDoc(file=make_file("a.txt")))
    with pytest.raises(StatementError) as raised:
        await db.commit()
    assert isinstance(raised.value.orig, InvalidFileObjectError)
    assert "has not been saved" in str(raised.value.orig)
    assert "lc_manual_docs.file" in str(raised.value.orig)
    await db.rollback()
    assert storage.paths() == set()

    first = make_file("first.txt", seed=1, backend=BACKEND)
    await db.save(first)
    doc = ManualDoc(file=first)
    db.add(doc)
    await db.commit()
    second = make_file("second.txt", seed=2, backend=BACKEND)
    await db.save(second)
    doc.file = second
    await db.commit()
    await db.delete(doc)
    await db.commit()
    # saved explicitly, never deleted automatically
    assert storage.paths() == {first.path, second.path}
    assert storage.calls["delete"] == 0


async def test_disabled_tracking_does_nothing_automatically(
    db: Driver, storage: TracingBackend
) -> None:
    disable_tracking(db.session)
    db.add(Doc(file=make_file("a.txt")))
    with pytest.raises(StatementError) as raised:
        await db.commit()
    assert isinstance(raised.value.orig, InvalidFileObjectError)
    await db.rollback()
    assert storage.paths() == set()

    first = make_file("first.txt", seed=1, backend=BACKEND)
    await db.save(first)
    doc = Doc(file=first)
    db.add(doc)
    await db.flush()
    await db.rollback()  # not uploaded by the session: not deleted by the rollback
    assert storage.paths() == {first.path}

    doc = Doc(file=first)
    db.add(doc)
    await db.commit()
    second = make_file("second.txt", seed=2, backend=BACKEND)
    await db.save(second)
    doc.file = second
    await db.commit()
    await db.delete(doc)
    await db.commit()
    assert storage.paths() == {first.path, second.path}
    assert storage.calls["delete"] == 0


async def test_explicit_save_before_add(db: Driver, storage: TracingBackend) -> None:
    file = make_file("a.txt", size=64, seed=1, backend=BACKEND)
    data = content_of(file)
    await db.save(file)
    path = file.path
    assert path is not None
    assert storage.content(path) == data
    db.add(Doc(file=file))
    await db.commit()
    assert file.path == path  # not uploaded a second time
    assert storage.calls["put"] == 1
    assert set(assert_consistent(db, storage)) == {path}


# -- nothing is overwritten in place ---------------------------------------------------------------
async def test_every_save_gets_a_fresh_key(db: Driver, storage: TracingBackend) -> None:
    doc = Doc(file=make_file("same.txt", seed=1))
    db.add(doc)
    await db.commit()
    seen = {doc.file.path if doc.file else None}
    for seed in range(2, 6):
        doc.file = make_file("same.txt", seed=seed)
        await db.commit()
        assert doc.file.path not in seen
        seen.add(doc.file.path)
    assert set(assert_consistent(db, storage)) == {doc.file.path}


async def test_constant_key_function_fails_instead_of_overwriting(
    db: Driver, storage: TracingBackend
) -> None:
    first = FixedKeyDoc(file=make_file("same.txt", seed=1))
    db.add(first)
    await db.commit()
    assert first.file is not None
    assert first.file.path == "fixed/same.txt"
    original = storage.content("fixed/same.txt")

    db.add(FixedKeyDoc(file=make_file("same.txt", seed=2)))
    with pytest.raises(ObjectExistsError) as raised:
        await db.commit()
    assert raised.value.path == "fixed/same.txt"
    assert storage.content("fixed/same.txt") == original
    await db.rollback()
    assert len(db.committed(FixedKeyDoc)) == 1
    assert set(assert_consistent(db, storage)) == {"fixed/same.txt"}
    assert storage.content("fixed/same.txt") == original


# -- genuinely async: the greenlet bridge awaits obstore -------------------------------------------
@pytest.fixture
def slow_storage() -> TracingBackend:
    backend = TracingBackend(ObstoreBackend(BACKEND, "memory://"), delay=0.05)
    storages.register_backend(backend)
    return backend


@pytest.fixture(params=["sqlite", "postgresql"])
def async_engines(request: pytest.FixtureRequest) -> tuple[Engine, AsyncEngine]:
    """(sync engine for checks, async engine) on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue(
            "sqlite_async_engine"
        )
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("pg_async_engine")


@pytest.mark.parametrize(("concurrency", "expected"), [(None, 5), (2, 2), (1, 1)])
async def test_async_session_uploads_concurrently_with_a_bound(
    async_engines: tuple[Engine, AsyncEngine],
    slow_storage: TracingBackend,
    concurrency: int | None,
    expected: int,
) -> None:
    check, engine = async_engines
    Base.metadata.drop_all(check)
    Base.metadata.create_all(check)
    try:
        async with AsyncSession(engine) as session:
            if concurrency is not None:
                session.info[CONCURRENCY_KEY] = concurrency
            session.add_all(Doc(file=make_file(f"f{i}.txt", seed=i)) for i in range(5))
            await session.commit()
            docs = (await session.scalars(select(Doc))).all()
            for doc in docs:
                doc.file = None
            await session.commit()
    finally:
        Base.metadata.drop_all(check)
    assert slow_storage.twins == {"put_async": 5, "delete_async": 1}
    assert slow_storage.max_in_flight == expected
    assert slow_storage.paths() == set()


async def test_async_uploads_to_a_store_that_never_waits_run_one_after_another(
    async_engines: tuple[Engine, AsyncEngine], storage: TracingBackend
) -> None:
    check, engine = async_engines
    Base.metadata.drop_all(check)
    Base.metadata.create_all(check)
    try:
        async with AsyncSession(engine) as session:
            session.add_all(Doc(file=make_file(f"f{i}.txt", seed=i)) for i in range(5))
            await session.commit()
            assert len(storage.paths()) == 5
    finally:
        Base.metadata.drop_all(check)
    assert storage.twins == {"put_async": 5}
    assert storage.max_in_flight == 1


async def test_failed_concurrent_upload_removes_the_others(
    sqlite_async_engine: AsyncEngine, sqlite_engine: Engine, slow_storage: TracingBackend
) -> None:
    Base.metadata.create_all(sqlite_engine)
    files = [make_file(f"f{i}.txt", size=100, seed=i) for i in range(3)]
    slow_storage.fail("put", nth=2)
    async with AsyncSession(sqlite_async_engine) as session:
        session.add_all(Doc(file=f) for f in files)
        with pytest.raises(StorageError, match="put #2"):
            await session.commit()
    # Uploads that wait run concurrently: all three were started, two succeeded, and
    # both were removed again.
    assert slow_storage.calls["put"] == 3
    assert slow_storage.max_in_flight == 3
    assert slow_storage.paths() == set()
    assert all(f.has_pending_content and f.path is None for f in files)


async def test_async_session_upload_failure_is_raised_from_await_commit(
    sqlite_async_engine: AsyncEngine, sqlite_engine: Engine, slow_storage: TracingBackend
) -> None:
    Base.metadata.create_all(sqlite_engine)
    slow_storage.fail("put", nth=1, times=2)
    async with AsyncSession(sqlite_async_engine) as session:
        session.add_all(Doc(file=make_file(f"f{i}.txt", seed=i)) for i in range(3))
        with pytest.raises(StorageError) as raised:
            await session.commit()
        # two concurrent uploads failed: both are reported, together
        assert isinstance(raised.value, StorageErrorGroup)
        assert slow_storage.paths() == set()
        await session.rollback()
    assert slow_storage.twins["put_async"] == 3
    assert slow_storage.twins["put"] == 0
    assert slow_storage.twins["delete_async"] == 1
