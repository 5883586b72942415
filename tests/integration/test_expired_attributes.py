"""Replacing a file on a row whose attributes expired (the default after a commit).

`AsyncSession` cannot load an expired attribute inside an attribute event, so the
library does not load old values on assignment: it reads the stored value during the
flush instead. These tests pin that down with the default `expire_on_commit=True`.
"""

from __future__ import annotations

from sqlalchemy import Engine
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
        doc.file = FileObject(filename="b.txt", content=b"b")  # replaced while expired
        session.delete(doc)  # and the row deleted in the same flush
        session.commit()
    assert stored(memory_backend) == set()
