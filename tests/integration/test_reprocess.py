"""`reprocess`: late renditions and image facts for files stored before, on real databases.

Every scenario runs on SQLite (stdlib driver and aiosqlite) and PostgreSQL (psycopg and
asyncpg), against a memory store and S3 (moto). Rows are written as older versions
wrote them (no image facts, no renditions, or a rendition of another spec); the run
must bring each up to the policy, leave no unreferenced object behind, resume after an
interruption and never overwrite a row the application changed meanwhile.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import JSON, Engine, create_engine, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    ReprocessProgress,
    ReprocessReport,
    StoredObject,
    UploadPolicy,
    reprocess,
    reprocess_async,
    storages,
)
from sqlalchemy_obstore._reprocess_run import Reprocessing
from sqlalchemy_obstore.processing import ImagePolicy, Rendition
from sqlalchemy_obstore.testing import FaultInjectingBackend
from tests.integration.backends import s3_backend

pytestmark = pytest.mark.integration

OLD = ImagePolicy(renditions=(Rendition("thumb", 32, 32),))
NEW = ImagePolicy(renditions=(Rendition("thumb", 48, 48), Rendition("card", 40, 30, "JPEG")))


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "reprocess_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[FileObject | None] = mapped_column(
        StoredObject("media", policy=UploadPolicy(image=NEW))
    )
    gallery: Mapped[list[FileObject]] = mapped_column(
        StoredObject("media", multiple=True), default=list
    )
    note: Mapped[FileObject | None] = mapped_column(StoredObject("media"))


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(out, "PNG")
    return out.getvalue()


# -- fixtures -------------------------------------------------------------------------
@dataclass
class Db:
    name: str
    engine: Engine | AsyncEngine
    sync_engine: Engine

    async def reprocess(self, target: Any, **options: Any) -> ReprocessReport:
        if isinstance(self.engine, AsyncEngine):
            return await reprocess_async(self.engine, target, **options)
        return reprocess(self.engine, target, **options)


@pytest.fixture(params=["sqlite-sync", "sqlite-async", "pg-sync", "pg-async"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    fixture = {
        "sqlite-sync": "sqlite_engine",
        "sqlite-async": "sqlite_async_engine",
        "pg-sync": "pg_engine",
        "pg-async": "pg_async_engine",
    }[request.param]
    engine = request.getfixturevalue(fixture)
    if isinstance(engine, Engine):
        sync_engine = engine
    else:
        driver = "sqlite" if request.param.startswith("sqlite") else "postgresql+psycopg"
        sync_engine = create_engine(engine.url.set(drivername=driver))
    Base.metadata.drop_all(sync_engine)
    Base.metadata.create_all(sync_engine)
    try:
        yield Db(request.param, engine, sync_engine)
    finally:
        if sync_engine is not engine:
            sync_engine.dispose()


@pytest.fixture(params=["memory", "s3"])
def store(request: pytest.FixtureRequest) -> ObstoreBackend:
    prefix = f"rep-{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        backend = ObstoreBackend("media", "memory://", prefix=prefix)
    else:
        backend = s3_backend(request.getfixturevalue("moto_server"), key="media", prefix=prefix)
    storages.register_backend(backend)
    return backend


# -- helpers --------------------------------------------------------------------------
SIZES = [(120, 80), (60, 90), (200, 200), (33, 21), (90, 60)]


def populate(db: Db) -> None:
    """Rows as older versions wrote them: no sizes; an old-spec, an unspecified or no thumbnail."""
    with Session(db.sync_engine) as session:
        for number, size in enumerate(SIZES, start=1):
            file = FileObject(filename=f"p{number}.png", content=png(size))
            session.add(Photo(id=number, image=file))
        session.commit()
    media = storages.get_backend("media")
    with db.sync_engine.begin() as conn:
        values = conn.execute(select(Photo.id, Photo.image).order_by(Photo.id)).all()
        for number, value in values:
            data = value.to_dict()
            del data["image"]
            renditions = data.pop("renditions")
            thumb = renditions.pop("thumb")
            if number == 1:  # made under OLD, recorded with its spec
                thumb["image"] = {"width": 32, "height": 21, "spec": OLD.renditions[0].spec}
                data["renditions"] = {"thumb": thumb}
            elif number == 2:  # stored before specs were recorded
                del thumb["image"]
                data["renditions"] = {"thumb": thumb}
            else:
                renditions["thumb"] = thumb
            media.delete([r["path"] for r in renditions.values()])
            conn.execute(update(Photo).where(Photo.id == number).values(image=data))
    with Session(db.sync_engine) as session:
        row = session.get(Photo, 3)
        assert row is not None
        row.gallery = [FileObject(filename="g.png", content=png((64, 64)))]
        row.note = FileObject(filename="n.txt", content=b"not an image")
        session.commit()


def stored(db: Db) -> dict[int, tuple[FileObject | None, list[FileObject]]]:
    with Session(db.sync_engine) as session:
        return {p.id: (p.image, list(p.gallery)) for p in session.scalars(select(Photo))}


def referenced(db: Db) -> set[str]:
    paths = set()
    for image, gallery in stored(db).values():
        for file in [image, *gallery]:
            if file is not None:
                paths.add(file.path)
                paths.update(r.path for r in file.renditions.values())
    with Session(db.sync_engine) as session:
        paths.update(p.note.path for p in session.scalars(select(Photo)) if p.note is not None)
    return paths


def objects(store: ObstoreBackend) -> set[str]:
    return {o.path for o in store.list_objects(store.prefix)}


def assert_up_to_date(db: Db, store: ObstoreBackend) -> None:
    for number, (image, _) in stored(db).items():
        assert image is not None
        width, height = SIZES[number - 1]
        assert (image.width, image.height) == (width, height)
        assert set(image.renditions) == {"thumb", "card"}
        for rendition in NEW.renditions:
            made = image.renditions[rendition.name]
            assert made.image is not None
            assert made.image.spec == rendition.spec
            with Image.open(io.BytesIO(made.get_content())) as opened:
                assert opened.size == (made.width, made.height)
                assert opened.format == rendition.format
    assert objects(store) == referenced(db)  # nothing unreferenced, nothing missing


# -- scenarios ------------------------------------------------------------------------
async def test_builds_missing_and_changed_renditions_then_is_a_no_op(
    db: Db, store: ObstoreBackend
) -> None:
    populate(db)
    before = objects(store)
    dry = await db.reprocess(Base, dry_run=True)
    assert dry.ok
    assert dry.dry_run
    assert (dry.rows_updated, dry.renditions_built, dry.facts_recorded) == (5, 10, 5)
    assert dry.columns_skipped == ["reprocess_photos.gallery", "reprocess_photos.note"]
    assert objects(store) == before

    seen: list[ReprocessProgress] = []
    report = await db.reprocess(Base, batch_size=2, progress=seen.append)
    assert report.ok, report.as_dict()
    assert (report.rows_updated, report.renditions_built, report.facts_recorded) == (5, 10, 5)
    assert report.objects_deleted == 2  # the two thumbnails that were replaced
    assert report.rows_scanned == 5
    assert [p.last_key for p in seen] == [(2,), (4,), (5,)]
    assert_up_to_date(db, store)

    again = await db.reprocess(Base)
    assert (again.rows_updated, again.renditions_built, again.images_up_to_date) == (0, 0, 5)


async def test_an_explicit_policy_and_a_list_column(db: Db, store: ObstoreBackend) -> None:
    populate(db)
    report = await db.reprocess(Photo.gallery, policy=OLD)
    assert report.ok, report.as_dict()
    assert (report.rows_updated, report.renditions_built, report.facts_recorded) == (1, 1, 1)
    (gallery,) = stored(db)[3][1]
    assert (gallery.width, gallery.height) == (64, 64)
    assert gallery.renditions["thumb"].image is not None
    assert (gallery.renditions["thumb"].width, gallery.renditions["thumb"].height) == (32, 32)
    with pytest.raises(ConfigurationError, match="image policy"):
        await db.reprocess(Photo.note)


async def test_interrupted_run_resumes(db: Db, store: ObstoreBackend) -> None:
    populate(db)
    # 1. the store refuses writes after three renditions: those rows fail, nothing leaks
    flaky = FaultInjectingBackend(store)
    flaky.fail("put", nth=4, times=1000)
    storages.register_backend(flaky, replace=True)
    report = await db.reprocess(Photo.image, batch_size=2)
    assert not report.ok
    assert report.failures
    assert all("injected fault" in f.error for f in report.failures)
    assert {f.column for f in report.failures} == {"image"}
    assert report.rows_updated == 1
    storages.register_backend(store, replace=True)
    assert objects(store) == referenced(db)

    # 2. a progress callback stops the next run after its first batch
    class Stop(Exception):
        pass

    last: list[ReprocessProgress] = []

    def stop(progress: ReprocessProgress) -> None:
        last.append(progress)
        raise Stop

    with pytest.raises(Stop):
        await db.reprocess(Photo.image, batch_size=2, progress=stop)
    assert objects(store) == referenced(db)

    # 3. resumed from the cursor the callback saw: the rows before it are not read again
    (progress,) = last
    resumed = await db.reprocess(
        Photo.image, start_after={progress.table: progress.last_key}, batch_size=2
    )
    assert resumed.ok, resumed.as_dict()
    assert progress.last_key == (2,)
    assert resumed.rows_scanned == 3
    assert_up_to_date(db, store)


async def test_a_row_changed_meanwhile_is_not_overwritten(
    db: Db, store: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(db)
    old = stored(db)[2][0]
    assert old is not None
    rewrite = Reprocessing._rewrite_batch
    replacement = FileObject(filename="new.png", content=png((10, 10)), backend="media").save()

    def app_writes_first(self: Any, *args: Any) -> Any:
        with db.sync_engine.begin() as conn:  # the application, on its own connection
            conn.execute(update(Photo).where(Photo.id == 2).values(image=replacement))
        return rewrite(self, *args)

    monkeypatch.setattr(Reprocessing, "_rewrite_batch", app_writes_first)
    report = await db.reprocess(Photo.image, batch_size=5)
    assert report.rows_conflicted == 1
    assert not report.ok
    assert report.rows_updated == 4
    image = stored(db)[2][0]
    assert image is not None
    assert image.path == replacement.path
    assert image.image is None
    assert not image.renditions
    # what was made for the conflicted row is gone; its old thumbnail was not touched
    beside = {p for p in objects(store) if p.startswith(f"{old.path}.renditions/")}
    assert beside == {old.renditions["thumb"].path}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_an_original_outside_the_prefix_gets_no_renditions(
    mode: str,
    kind: str,
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """Renditions go next to their original: one outside the backend's prefix (stored
    before the backend got it) would put them where the backend can never delete them.
    That image fails on its own, nothing is written for it; the others are reprocessed."""
    media = ObstoreBackend(
        "media", "memory://" if kind == "memory" else tmp_path / "media", prefix="media"
    )
    storages.register_backend(media)
    Base.metadata.drop_all(sqlite_engine)
    Base.metadata.create_all(sqlite_engine)
    old = png((80, 60))
    # stored by the backend before it had a prefix (the same store, configured then)
    ObstoreBackend("media-before", media.store).put("legacy/cat.png", old)
    legacy = FileObject(
        backend="media",
        path="legacy/cat.png",
        size=len(old),
        filename="cat.png",
        content_type="image/png",
    )
    with Session(sqlite_engine) as session:
        session.add(Photo(id=1, image=FileObject(filename="new.png", content=png((70, 50)))))
        session.add(Photo(id=2, image=legacy))
        session.commit()
    column = type_coerce(Photo.__table__.c.image, JSON)
    with sqlite_engine.connect() as conn:
        before = conn.execute(select(column).where(Photo.id == 2)).scalar_one()
    tiny = ImagePolicy(renditions=(Rendition("tiny", 10, 10),))

    db = Db(mode, sqlite_engine if mode == "sync" else sqlite_async_engine, sqlite_engine)
    report = await db.reprocess(Photo.image, policy=tiny)

    assert not report.ok
    (failure,) = report.failures
    assert (failure.primary_key, failure.column, failure.path) == ((2,), "image", legacy.path)
    assert "outside the prefix 'media' of backend 'media'" in failure.error
    assert "give the backend a prefix that contains the path" in failure.error
    assert (report.rows_updated, report.renditions_built) == (1, 1)
    photos = stored(Db(mode, sqlite_engine, sqlite_engine))
    fresh = photos[1][0]
    assert fresh is not None
    assert "tiny" in fresh.renditions
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(column).where(Photo.id == 2)).scalar_one() == before
    # nothing lands outside the prefix: the original is the only object there
    everything = {info.path for info in media.list_objects()}
    assert everything - objects(media) == {"legacy/cat.png"}
