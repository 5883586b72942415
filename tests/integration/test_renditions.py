"""Renditions follow the original through the transactional lifecycle.

Every scenario is a plain function of a sync `Session`; it runs as is, and inside an
`AsyncSession` through `run_sync` (so the session hooks run in SQLAlchemy's greenlet
bridge and use obstore's async calls), on SQLite and, when a server is available, on
PostgreSQL.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    FileObjectList,
    InvalidImageError,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
)
from sqlalchemy_obstore.processing import ImagePolicy, Normalize, Rendition
from tests.conftest import PG_SERVER, _real_sqlite_transactions
from tests.loop_stall import LoopStallProbe

pytestmark = pytest.mark.integration

POLICY = UploadPolicy(
    image=ImagePolicy(
        normalize=Normalize(max_width=200, max_height=200),
        renditions=(Rendition("thumb", 32, 32), Rendition("card", 64, 48, "JPEG", mode="cover")),
    )
)


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "rendition_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[FileObject | None] = mapped_column(StoredObject("memory", policy=POLICY))
    gallery: Mapped[list[FileObject]] = mapped_column(
        StoredObject("memory", multiple=True, policy=POLICY), default=list
    )


def png(size: tuple[int, int] = (400, 300), color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def photo_file(name: str = "cat.png", size: tuple[int, int] = (400, 300)) -> FileObject:
    return FileObject(filename=name, content=png(size))


def objects(backend: ObstoreBackend) -> set[str]:
    return {o.path for o in backend.list_objects()}


def paths(file: FileObject | None) -> set[str]:
    assert file is not None
    return {p for p in (file.path, *(r.path for r in file.renditions.values())) if p}


Scenario = Callable[[Session, ObstoreBackend], None]


# -- drivers ----------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite-sync", "sqlite-async", "pg-sync", "pg-async"])
def run(
    request: pytest.FixtureRequest, memory_backend: ObstoreBackend, tmp_path: Path
) -> Iterator[Callable[[Scenario], Any]]:
    database, mode = request.param.split("-")
    if database == "pg":
        url = f"postgresql+{{driver}}://{PG_SERVER}/{request.getfixturevalue('pg_database')}"
    else:
        url = f"sqlite+{{driver}}:///{tmp_path / 'db.sqlite'}"
    if mode == "sync":
        engine = create_engine(url.format(driver="psycopg" if database == "pg" else "pysqlite"))
        if database == "sqlite":
            _real_sqlite_transactions(engine)
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)

        async def run_sync(scenario: Scenario) -> None:
            with Session(engine, expire_on_commit=False) as session:
                scenario(session, memory_backend)

        yield run_sync
        engine.dispose()
        return

    def no_sync_call(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an AsyncSession flush must use obstore's async calls")

    async def run_async(scenario: Scenario) -> None:
        # Inside the greenlet bridge the lifecycle must upload and delete asynchronously.
        memory_backend.put = no_sync_call  # type: ignore[method-assign]
        memory_backend.delete = no_sync_call  # type: ignore[method-assign]
        engine = create_async_engine(
            url.format(driver="asyncpg" if database == "pg" else "aiosqlite")
        )
        if database == "sqlite":
            _real_sqlite_transactions(engine.sync_engine)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine, expire_on_commit=False) as session:
                await session.run_sync(scenario, memory_backend)
        finally:
            await engine.dispose()

    yield run_async


# -- scenarios --------------------------------------------------------------------------------
async def test_renditions_exist_after_commit(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        photo = Photo(id=1, image=photo_file())
        session.add(photo)
        session.commit()
        image = photo.image
        assert image is not None
        assert set(image.renditions) == {"thumb", "card"}
        assert objects(backend) == paths(image)
        with Image.open(io.BytesIO(image.get_content())) as stored:
            assert stored.size == (200, 150)  # normalised
        thumb = image.renditions["thumb"]
        with Image.open(io.BytesIO(thumb.get_content())) as small:
            assert (small.format, small.size) == ("WEBP", (32, 24))
        card = image.renditions["card"]
        with Image.open(io.BytesIO(b"".join(card.iter_chunks()))) as small:
            assert (small.format, small.size) == ("JPEG", (64, 48))
        session.expunge_all()
        again = session.get(Photo, 1)
        assert again is not None
        assert again.image is not None
        assert again.image.renditions["thumb"].path == thumb.path
        assert again.image.renditions["thumb"].size == thumb.size

    await run(scenario)


async def test_replaced_original_takes_its_renditions_along_after_commit(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        photo = Photo(id=1, image=photo_file())
        session.add(photo)
        session.commit()
        old = paths(photo.image)
        photo.image = photo_file("dog.png", (300, 300))
        session.flush()
        new = paths(photo.image)
        assert objects(backend) == old | new  # not before the commit
        session.commit()
        assert objects(backend) == new
        assert len(new) == 3

    await run(scenario)


async def test_deleted_row_takes_its_renditions_along_after_commit(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        session.add(Photo(id=1, image=photo_file()))
        session.commit()
        photo = session.get(Photo, 1)
        assert photo is not None
        stored = paths(photo.image)
        session.delete(photo)
        session.flush()
        assert objects(backend) == stored
        session.commit()
        assert objects(backend) == set()

    await run(scenario)


async def test_set_to_none_removes_renditions_after_commit(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        photo = Photo(id=1, image=photo_file())
        session.add(photo)
        session.commit()
        photo.image = None
        session.flush()
        assert len(objects(backend)) == 3
        session.commit()
        assert objects(backend) == set()

    await run(scenario)


async def test_rollback_removes_the_uploaded_renditions(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        photo = Photo(id=1, image=photo_file())
        session.add(photo)
        session.flush()
        assert len(objects(backend)) == 3
        session.rollback()
        assert objects(backend) == set()
        image = photo.image
        assert image is not None
        assert image.has_pending_content
        assert image.renditions == {}
        session.add(photo)  # a retry uploads everything again
        session.commit()
        assert objects(backend) == paths(photo.image)

    await run(scenario)


async def test_savepoint_rollback_removes_only_its_renditions(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        first = Photo(id=1, image=photo_file())
        session.add(first)
        session.flush()
        kept = paths(first.image)
        savepoint = session.begin_nested()
        first.image = photo_file("other.png")
        session.flush()
        assert objects(backend) == kept | paths(first.image)
        savepoint.rollback()
        assert objects(backend) == kept
        session.commit()
        assert objects(backend) == kept

    await run(scenario)


async def test_failed_flush_removes_the_renditions_it_uploaded(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        session.add(Photo(id=1, image=photo_file()))
        session.add(Photo(id=2, image=FileObject(filename="x.png", content=b"not an image")))
        with pytest.raises(InvalidImageError):
            session.flush()
        assert objects(backend) == set()
        session.rollback()

    await run(scenario)


async def test_database_failure_after_upload_removes_them_on_rollback(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        session.add(Photo(id=1))
        session.commit()
        session.expunge_all()
        session.add(Photo(id=1, image=photo_file()))  # duplicate primary key
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        assert objects(backend) == set()

    await run(scenario)


async def test_list_items_removed_take_their_renditions_along(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        photo = Photo(id=1, gallery=[photo_file("a.png"), photo_file("b.png")])
        session.add(photo)
        session.commit()
        assert isinstance(photo.gallery, FileObjectList)
        first, second = photo.gallery
        assert len(objects(backend)) == 6
        photo.gallery.remove(first)
        session.flush()
        assert len(objects(backend)) == 6
        session.commit()
        assert objects(backend) == paths(second)

    await run(scenario)


async def test_rows_written_before_renditions_still_load(run: Any) -> None:
    def scenario(session: Session, backend: ObstoreBackend) -> None:
        legacy = FileObject(filename="old.png", path="k/old.png", size=3)
        session.add(Photo(id=1, image=legacy))
        session.commit()
        session.expunge_all()
        photo = session.execute(select(Photo)).scalar_one()
        assert photo.image is not None
        assert photo.image.renditions == {}
        assert "renditions" not in photo.image.to_dict()

    await run(scenario)


async def test_renditions_stream_and_sign_through_async_api(
    sqlite_async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(sqlite_async_engine) as session:
        session.add(Photo(id=1, image=photo_file()))
        await session.commit()
        photo = (await session.execute(select(Photo))).scalar_one()
        assert photo.image is not None
        thumb = photo.image.renditions["thumb"]
        data = b"".join([chunk async for chunk in thumb.iter_chunks_async(chunk_size=64)])
        assert data == await thumb.get_content_async()
        assert await thumb.verify_async()
        await session.delete(photo)
        await session.commit()
        assert not await thumb.exists_async()


async def test_an_async_session_flush_keeps_the_event_loop_serving(
    sqlite_async_engine: AsyncEngine, memory_backend: ObstoreBackend, monkeypatch: Any
) -> None:
    # The flush runs in SQLAlchemy's greenlet bridge, on the event loop's thread: the
    # images must be decoded and encoded elsewhere while the loop goes on serving.
    decoded_on: list[str] = []
    original = ImageFile.ImageFile.load

    def recording(self: Any) -> Any:
        if self.tile:
            decoded_on.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    photo = Photo(
        id=1,
        image=photo_file("big.png", (5000, 4000)),
        gallery=[photo_file("a.png", (4000, 3000)), photo_file("b.png", (3000, 4000))],
    )
    started = time.perf_counter()
    async with (
        LoopStallProbe() as probe,
        AsyncSession(sqlite_async_engine, expire_on_commit=False) as session,
    ):
        session.add(photo)
        await session.commit()
    took = time.perf_counter() - started
    assert len(decoded_on) == 3
    assert all(name.startswith("sqlalchemy-obstore-image") for name in decoded_on)
    assert took > 0.25, "the flush must be heavy enough to have stalled the loop"
    assert probe.stall < 0.1, f"the loop stalled {probe.stall:.3f} s during a {took:.2f} s flush"
    assert photo.image is not None
    assert objects(memory_backend) == paths(photo.image) | paths(photo.gallery[0]) | paths(
        photo.gallery[1]
    )
    with Image.open(io.BytesIO(await photo.image.get_content_async())) as stored:
        assert stored.size == (200, 160)
    card = await photo.image.renditions["card"].get_content_async()
    with Image.open(io.BytesIO(card)) as small:
        assert (small.format, small.size) == ("JPEG", (64, 48))
