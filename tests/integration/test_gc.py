"""Garbage collection and reference verification, on real databases and backends.

Every scenario runs on SQLite (stdlib driver and aiosqlite) and PostgreSQL (psycopg and
asyncpg), each with a memory and a local-files backend. Orphans are made the ways they
happen in production: an upload whose row never committed (a crash), a post-commit
delete that failed, rows removed by bulk SQL. Referenced objects and young orphans must
survive every run; orphans are reported in a dry run and removed for real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    GarbageReport,
    ObstoreBackend,
    StoredObject,
    VerificationReport,
    collect_garbage,
    collect_garbage_async,
    find_file_columns,
    storages,
    verify_references,
    verify_references_async,
)
from sqlalchemy_obstore import _gc as gc_module
from sqlalchemy_obstore.testing import FaultInjectingBackend, make_file

pytestmark = pytest.mark.integration


def _two_days_later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=2)


# Run the collector as if two days had passed: every existing object is older than the
# default grace period (24 hours), and the run stays within the safe floor.
LATER: dict[str, Any] = {"clock": _two_days_later}


def make_models(backend: str) -> tuple[type[DeclarativeBase], Any]:
    """A fresh base with a document model (single-file and list columns), unique tables."""
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = f"gc_docs_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject | None] = mapped_column(StoredObject(backend))
        pages: Mapped[list[FileObject]] = mapped_column(
            StoredObject(backend, multiple=True), default=list
        )

    return Base, Doc


@dataclass
class Db:
    """One database variant: runs the sync or the async API and the session the same way."""

    name: str
    engine: Engine | AsyncEngine
    sync_engine: Engine  # a separate sync engine on the same database (concurrent writer)

    @property
    def is_async(self) -> bool:
        return isinstance(self.engine, AsyncEngine)

    async def create_all(self, base: type[DeclarativeBase]) -> None:
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.begin() as conn:
                await conn.run_sync(base.metadata.create_all)
        else:
            base.metadata.create_all(self.engine)

    async def add(self, *rows: Any) -> None:
        if isinstance(self.engine, AsyncEngine):
            async with AsyncSession(self.engine) as session:
                session.add_all(rows)
                await session.commit()
        else:
            with Session(self.engine) as session:
                session.add_all(rows)
                session.commit()

    async def replace_file(self, model: Any, id: int, file: FileObject) -> None:
        if isinstance(self.engine, AsyncEngine):
            async with AsyncSession(self.engine) as session:
                (await session.get(model, id)).file = file
                await session.commit()
        else:
            with Session(self.engine) as session:
                session.get(model, id).file = file
                session.commit()

    async def gc(self, target: Any, **options: Any) -> GarbageReport:
        if isinstance(self.engine, AsyncEngine):
            return await collect_garbage_async(self.engine, target, **options)
        return collect_garbage(self.engine, target, **options)

    async def verify(self, target: Any, **options: Any) -> VerificationReport:
        if isinstance(self.engine, AsyncEngine):
            return await verify_references_async(self.engine, target, **options)
        return verify_references(self.engine, target, **options)


@pytest.fixture(params=["sqlite-sync", "sqlite-async", "pg-sync", "pg-async"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    kind = request.param
    fixture = {
        "sqlite-sync": "sqlite_engine",
        "sqlite-async": "sqlite_async_engine",
        "pg-sync": "pg_engine",
        "pg-async": "pg_async_engine",
    }[kind]
    engine = request.getfixturevalue(fixture)
    if kind == "sqlite-sync":
        yield Db(kind, engine, engine)
        return
    driver = "sqlite" if kind.startswith("sqlite") else "postgresql+psycopg"
    sync_engine = create_engine(engine.url.set(drivername=driver))
    try:
        yield Db(kind, engine, sync_engine if kind != "pg-sync" else engine)
    finally:
        sync_engine.dispose()


def paths(backend: ObstoreBackend) -> set[str]:
    return {info.path for info in backend.list_objects()}


def refs(*files: FileObject) -> set[str]:
    found = set()
    for file in files:
        assert file.path is not None
        found.add(file.path)
        found.update(r.path for r in file.renditions.values() if r.path is not None)
    return found


def with_rendition(backend: str) -> FileObject:
    """A stored file with a stored rendition (the column shape image processing writes)."""
    main = make_file("photo.png", size=64, seed=1, backend=backend).save()
    thumb = make_file("thumb.png", size=16, seed=2, backend=backend).save()
    return FileObject.from_dict(
        {**main.to_dict(), "renditions": {"thumb": thumb.to_dict()}}, trusted=True
    )


async def populate(db: Db, backend: ObstoreBackend) -> tuple[Any, Any, set[str], set[str]]:
    """Rows with referenced files, and orphans made by crashes and bulk SQL.

    Returns the base, the model, the referenced paths and the orphaned paths.
    """
    base, doc = make_models(backend.key)
    await db.create_all(base)
    kept_file = make_file("a.txt", size=10, seed=3)
    kept_pages = [make_file("p1.txt", size=11, seed=4), make_file("p2.txt", size=12, seed=5)]
    photo = with_rendition(backend.key)
    doomed = make_file("doomed.txt", size=13, seed=6)
    replaced = make_file("replaced.txt", size=14, seed=7)
    await db.add(
        doc(id=1, file=kept_file, pages=kept_pages),
        doc(id=2, file=photo),
        doc(id=3, file=doomed),
        doc(id=4, file=replaced),
        doc(id=5),  # no file, an empty list
    )
    # a crash between upload and commit: stored, never referenced
    crashed = make_file("crash.txt", size=15, seed=8, backend=backend.key).save()
    # bulk SQL the session never sees: the row goes, its object stays
    if isinstance(db.engine, AsyncEngine):
        async with db.engine.begin() as conn:
            await conn.execute(delete(doc.__table__).where(doc.__table__.c.id == 3))
    else:
        with db.engine.begin() as conn:
            conn.execute(delete(doc.__table__).where(doc.__table__.c.id == 3))
    # a post-commit delete that failed: the replaced object stays behind
    faulty = FaultInjectingBackend(backend)
    storages.register_backend(faulty, replace=True)
    faulty.fail("delete", times=10)
    new = make_file("new.txt", size=16, seed=9)
    await db.replace_file(doc, 4, new)
    storages.register_backend(backend, replace=True)
    referenced = refs(kept_file, *kept_pages, photo, new)
    orphans = refs(crashed, doomed, replaced)
    assert paths(backend) == referenced | orphans
    return base, doc, referenced, orphans


async def test_dry_run_reports_orphans_then_collection_removes_them(
    db: Db, backend: ObstoreBackend
) -> None:
    base, _, referenced, orphans = await populate(db, backend)

    report = await db.gc(base, **LATER)
    assert report.dry_run
    assert report.all_errors == []
    result = report.backends[backend.key]
    assert result.prefix == backend.prefix
    assert set(result.orphan_paths) == orphans
    assert (result.scanned, result.referenced, result.orphaned) == (6 + 3, 6, 3)
    assert (result.too_young, result.deleted, result.bytes_freed) == (0, 0, 0)
    assert paths(backend) == referenced | orphans  # a dry run deletes nothing

    report = await db.gc(base, **LATER, dry_run=False, batch_size=2)
    assert report.all_errors == []
    assert (report.orphaned, report.deleted) == (3, 3)
    assert report.bytes_freed == 15 + 13 + 14
    assert report.backends[backend.key].orphan_paths == []
    assert paths(backend) == referenced

    again = await db.gc(base, **LATER, dry_run=False)
    assert (again.scanned, again.orphaned, again.deleted) == (6, 0, 0)
    assert (await db.verify(base, check_checksums=True)).ok


async def test_grace_period_keeps_young_orphans(db: Db, backend: ObstoreBackend) -> None:
    base, _, referenced, orphans = await populate(db, backend)

    report = await db.gc(base, dry_run=False)  # default grace period: 24 hours
    assert (report.too_young, report.orphaned, report.deleted) == (3, 0, 0)
    assert report.referenced == len(referenced)
    assert paths(backend) == referenced | orphans


async def test_row_committed_during_the_scan_is_not_robbed(
    db: Db, backend: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, doc, referenced, orphans = await populate(db, backend)
    adopted = sorted(orphans)[0]
    original = gc_module._live_references

    def commit_then_look(*args: Any) -> set[str]:
        # another transaction references an orphan after the references were staged
        with db.sync_engine.begin() as conn:
            conn.execute(
                insert(doc.__table__),
                {"id": 99, "file": FileObject(backend=backend.key, path=adopted), "pages": []},
            )
        monkeypatch.setattr(gc_module, "_live_references", original)
        return original(*args)

    monkeypatch.setattr(gc_module, "_live_references", commit_then_look)
    report = await db.gc(base, **LATER, dry_run=False)
    assert report.all_errors == []
    assert report.deleted == len(orphans) - 1
    assert paths(backend) == referenced | {adopted}


async def test_failed_deletes_are_reported_and_retried(db: Db, backend: ObstoreBackend) -> None:
    base, _, referenced, orphans = await populate(db, backend)
    faulty = FaultInjectingBackend(backend)
    faulty.fail("delete")

    report = await db.gc(base, backends=[faulty], **LATER, dry_run=False)
    assert report.deleted == 0
    assert report.orphaned == 3
    assert len(report.backends[backend.key].errors) == 1
    assert paths(backend) == referenced | orphans

    report = await db.gc(base, backends=[backend.key], **LATER, dry_run=False)
    assert report.deleted == 3
    assert paths(backend) == referenced


async def test_listing_failures_are_reported(db: Db, backend: ObstoreBackend) -> None:
    base, _, referenced, orphans = await populate(db, backend)
    faulty = FaultInjectingBackend(backend)
    faulty.fail("list")

    report = await db.gc(base, backends=[faulty], **LATER, dry_run=False)
    assert report.deleted == 0
    assert [e.startswith(f"{backend.key}: listing") for e in report.all_errors] == [True]
    assert paths(backend) == referenced | orphans


async def test_verify_finds_missing_and_tampered_objects(db: Db, backend: ObstoreBackend) -> None:
    base, doc, referenced, _ = await populate(db, backend)
    assert (await db.verify(base)).ok

    by_name: dict[str, FileObject] = {}
    with db.sync_engine.connect() as conn:
        for row in conn.execute(doc.__table__.select()):
            for file in [row.file, *row.pages]:
                if file is not None:
                    by_name[file.filename] = file
                    by_name.update({f"r:{k}": r for k, r in file.renditions.items()})
    backend.delete(by_name["p2.txt"].path)  # deleted by hand
    backend.put(by_name["a.txt"].path, b"x" * 99)  # other size
    backend.put(by_name["new.txt"].path, b"y" * 16)  # same size, other bytes
    backend.put(by_name["r:thumb"].path, b"z" * 3)  # a rendition

    report = await db.verify(base)
    found = {(f.path, f.problem) for f in report.findings}
    assert report.checked == len(referenced)
    assert found == {
        (by_name["p2.txt"].path, "missing"),
        (by_name["a.txt"].path, "size_mismatch"),
        (by_name["r:thumb"].path, "size_mismatch"),
    }
    missing = next(f for f in report.findings if f.problem == "missing")
    assert (missing.table, missing.column, missing.primary_key) == (
        doc.__tablename__,
        "pages",
        (1,),
    )
    assert missing.backend == backend.key

    report = await db.verify(base, check_checksums=True)
    found = {(f.path, f.problem) for f in report.findings}
    assert (by_name["new.txt"].path, "checksum_mismatch") in found
    assert len(found) == 4


def test_find_file_columns_accepts_metadata_bases_and_sequences() -> None:
    base, doc = make_models("uploads")
    metadata = MetaData()
    Table("plain", metadata, Column("id", Integer, primary_key=True), Column("x", Integer))
    Table(
        "other",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("blob", StoredObject("b", multiple=True)),
    )
    names = [c.name for c in find_file_columns(base)]
    assert names == [f"{doc.__tablename__}.file", f"{doc.__tablename__}.pages"]
    assert find_file_columns(base.metadata) == find_file_columns(base)
    combined = find_file_columns([base, metadata, base])
    assert [c.name for c in combined] == [*names, "other.blob"]
    assert combined[-1].stored_type.multiple
    with pytest.raises(ConfigurationError):
        find_file_columns("models")


async def test_bad_options_are_refused(sqlite_engine: Engine) -> None:
    base, _ = make_models("uploads")
    with pytest.raises(ConfigurationError):
        collect_garbage(sqlite_engine, base, grace_period=timedelta(hours=-1))
    with pytest.raises(ConfigurationError):
        collect_garbage(sqlite_engine, base, batch_size=0)


def test_unregistered_backends_are_reported(sqlite_engine: Engine) -> None:
    base, _ = make_models("nowhere")
    base.metadata.create_all(sqlite_engine)
    report = collect_garbage(sqlite_engine, base)
    assert report.backends == {}
    assert len(report.errors) == 1
    assert "nowhere" in report.errors[0]


def test_many_small_batches_account_for_every_object(sqlite_engine: Engine) -> None:
    """A sanity check of the batching: many small pages, every object accounted for."""
    backend = ObstoreBackend("bulk", "memory://", prefix="data")
    storages.register_backend(backend)
    base, doc = make_models("bulk")
    base.metadata.create_all(sqlite_engine)
    rows = []
    for i in range(300):
        path = f"data/{i:05d}"
        backend.put(path, b"x")
        if i % 3:
            rows.append({"id": i, "file": FileObject(backend="bulk", path=path), "pages": []})
    # another backend's object in the same store: not managed by this one, never listed
    ObstoreBackend("other", backend.store).put("outside/prefix", b"x")
    with sqlite_engine.begin() as conn:
        conn.execute(insert(doc.__table__), rows)
    report = collect_garbage(sqlite_engine, base, **LATER, dry_run=False, batch_size=7)
    assert (report.scanned, report.referenced, report.deleted) == (300, 200, 100)
    assert report.references == 200
    assert len(paths(backend)) == 201


async def test_runs_inside_a_given_connection(
    sqlite_engine: Engine, backend: ObstoreBackend
) -> None:
    db = Db("sqlite-sync", sqlite_engine, sqlite_engine)
    base, _, referenced, orphans = await populate(db, backend)
    with sqlite_engine.connect() as conn:
        report = collect_garbage(conn, base, **LATER, dry_run=False)
        assert conn.in_transaction()  # the caller's transaction is left to the caller
        assert verify_references(conn, base).ok
        tables = conn.exec_driver_sql("SELECT name FROM sqlite_temp_master").all()
        assert tables == []  # the staging table is gone
    assert report.deleted == len(orphans)
    assert paths(backend) == referenced
