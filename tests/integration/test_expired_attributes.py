"""Expired rows: file columns after a commit, and replacing a file whose value expired.

With the default `expire_on_commit=True`, a commit keeps file columns loaded (their value
is what the flush just wrote), so `await doc.file.get_content_async()` works right after
`await session.commit()`; other columns expire as usual, and an explicit `expire()` or
`refresh()` expires file columns too.

`AsyncSession` cannot load an expired attribute inside an attribute event, so the
library does not load old values on assignment: it reads the stored value during the
flush instead. The replace scenarios pin that down, with the file column expired
explicitly.
"""

from __future__ import annotations

from sqlalchemy import Engine, event, inspect, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "expired_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("memory"))
    pages: Mapped[list[FileObject] | None] = mapped_column(StoredObject("memory", multiple=True))


def stored(backend: ObstoreBackend) -> set[str]:
    return {info.path for info in backend.list_objects()}


async def test_async_replace_after_commit_deletes_old_object(
    sqlite_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    await _async_replace_scenario(sqlite_async_engine, memory_backend)


async def test_async_replace_after_commit_postgres(
    pg_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    await _async_replace_scenario(pg_async_engine, memory_backend)


async def _async_replace_scenario(engine: AsyncEngine, backend: ObstoreBackend) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine)  # expire_on_commit=True, the default
    async with sessions() as session:
        doc = Doc(
            file=FileObject(filename="a.txt", content=b"a"),
            pages=[FileObject(filename="p.txt", content=b"p")],
        )
        session.add(doc)
        await session.commit()
        first = stored(backend)
        assert len(first) == 2

        session.expire(doc)
        doc.file = FileObject(filename="b.txt", content=b"b")  # doc is expired here
        doc.pages = [FileObject(filename="q.txt", content=b"q")]
        await session.commit()
        second = stored(backend)
        assert len(second) == 2
        assert not first & second  # both old objects deleted after the commit

        doc.file = FileObject(filename="c.txt", content=b"c")
        await session.flush()
        assert len(stored(backend)) == 3  # the old file is still there before the commit
        await session.rollback()
        assert stored(backend) == second  # the rolled-back upload is gone, old kept

        await session.delete(doc)
        await session.commit()
        assert stored(backend) == set()


def test_sync_replace_then_delete_expired_row(
    sqlite_engine: Engine, memory_backend: ObstoreBackend
) -> None:
    Base.metadata.drop_all(sqlite_engine)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session:
        doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
        session.add(doc)
        session.commit()
        session.expire(doc)
        doc.file = FileObject(filename="b.txt", content=b"b")  # replaced while expired
        session.delete(doc)  # and the row deleted in the same flush
        session.commit()
    assert stored(memory_backend) == set()


# -- file columns survive the commit's expiry ------------------------------------------------
async def test_files_are_readable_right_after_an_async_commit(
    sqlite_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    await _read_after_commit_scenario(sqlite_async_engine, memory_backend)


async def test_files_are_readable_right_after_an_async_commit_postgres(
    pg_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    await _read_after_commit_scenario(pg_async_engine, memory_backend)


async def _read_after_commit_scenario(engine: AsyncEngine, memory_backend: ObstoreBackend) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine)  # expire_on_commit=True, the default
    async with sessions() as session:
        doc = Doc(
            file=FileObject(filename="a.txt", content=b"hello"),
            pages=[FileObject(filename="p.txt", content=b"page")],
        )
        session.add(doc)
        await session.commit()
        assert doc.file is not None
        assert await doc.file.get_content_async() == b"hello"  # no MissingGreenlet
        assert [c async for c in doc.file.iter_chunks_async()] == [b"hello"]
        assert doc.pages is not None
        assert await doc.pages[0].get_content_async() == b"page"
        assert "id" in inspect(doc).expired_attributes  # other columns expire as usual
        assert "file" not in inspect(doc).expired_attributes

        # Another transaction changes the row (a Core update: a.txt becomes an orphan
        # for the garbage collector): an explicit refresh sees it.
        async with sessions() as other:
            doc_id = inspect(doc).identity[0]  # (doc.id itself expired)
            await other.execute(update(Doc).where(Doc.id == doc_id).values(file=None))
            await other.commit()
        await session.refresh(doc)
        assert doc.file is None

        # Replacing after the commit still deletes the old object after the next one.
        doc.file = FileObject(filename="b.txt", content=b"b")
        await session.commit()
        doc.file = FileObject(filename="c.txt", content=b"c")
        await session.commit()
        assert not any(path.endswith("/b.txt") for path in stored(memory_backend))
        assert await doc.file.get_content_async() == b"c"


async def test_an_async_commit_reloads_no_file_column(
    sqlite_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    statements: list[str] = []
    event.listen(
        sqlite_async_engine.sync_engine,
        "before_cursor_execute",
        lambda *a: statements.append(a[2]),
    )
    async with async_sessionmaker(sqlite_async_engine)() as session:
        doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
        session.add(doc)
        await session.commit()
        file = doc.file
        statements.clear()
        assert doc.file is file  # the very same value, no SELECT
        assert statements == []
        session.expire(doc)  # an explicit expire reloads it
        await session.refresh(doc)
        assert doc.file == file
        assert doc.file is not file
        assert [s for s in statements if s.startswith("SELECT")] != []


def test_a_plain_session_expires_files_as_sqlalchemy_says(
    sqlite_engine: Engine, memory_backend: ObstoreBackend
) -> None:
    Base.metadata.drop_all(sqlite_engine)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session:
        doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
        session.add(doc)
        session.commit()
        assert "file" in inspect(doc).expired_attributes
        assert doc.file is not None  # reloaded lazily, with the row's other columns
        assert doc.file.get_content() == b"a"
        assert "id" not in inspect(doc).expired_attributes


def test_savepoint_commits_and_rollbacks_expire_as_usual(
    sqlite_engine: Engine, memory_backend: ObstoreBackend
) -> None:
    Base.metadata.drop_all(sqlite_engine)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session:
        doc = Doc(file=FileObject(filename="a.txt", content=b"a"))
        session.add(doc)
        session.commit()
        kept = doc.file
        with session.begin_nested():
            doc.file = FileObject(filename="b.txt", content=b"b")
        session.rollback()  # the outer transaction: back to the committed row
        assert doc.file == kept
        assert doc.file is not None
        assert doc.file.get_content() == b"a"
