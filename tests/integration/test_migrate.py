"""Backend migration on real databases and stores.

Every scenario runs on SQLite (stdlib driver and aiosqlite) and PostgreSQL (psycopg and
asyncpg), for three source → destination pairs covering memory, local files and S3
(moto): memory → local, local → S3, S3 → memory. Rows hold a single-file column with a
rendition and a `multiple=True` column; one row lives in a third backend and must never
be touched. Interruptions are real (a failing destination, a progress callback that
raises), and the application writes rows while the migration runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tracemalloc
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from obstore.store import MemoryStore
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    BackendNotFoundError,
    ConfigurationError,
    FileObject,
    MigrationProgress,
    MigrationReport,
    ObstoreBackend,
    SaveOptions,
    StoredObject,
    _migration_copy,
    migrate,
    migrate_async,
    storages,
    verify_references,
)
from sqlalchemy_obstore import _migration as migrate_module
from sqlalchemy_obstore.testing import FaultInjectingBackend, make_file
from tests.integration.backends import s3_backend

pytestmark = pytest.mark.integration

SRC, DST, OTHER = "src", "dst", "other"
PAIRS = ["memory-local", "local-s3", "s3-memory"]


# -- fixtures -------------------------------------------------------------------------
@dataclass
class Db:
    """A database variant: the migration runs sync or async; setup uses a sync engine."""

    name: str
    engine: Engine | AsyncEngine
    sync_engine: Engine

    async def migrate(self, target: Any, **options: Any) -> MigrationReport:
        options.setdefault("source", SRC)
        options.setdefault("destination", DST)
        if isinstance(self.engine, AsyncEngine):
            return await migrate_async(self.engine, target, **options)
        return migrate(self.engine, target, **options)


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
    if isinstance(engine, Engine):
        yield Db(kind, engine, engine)
        return
    driver = "sqlite" if kind.startswith("sqlite") else "postgresql+psycopg"
    sync_engine = create_engine(engine.url.set(drivername=driver))
    try:
        yield Db(kind, engine, sync_engine)
    finally:
        sync_engine.dispose()


def _make(
    kind: str, key: str, request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> ObstoreBackend:
    if kind == "memory":
        return ObstoreBackend(key, "memory://", prefix=prefix)
    if kind == "local":
        return ObstoreBackend(key, tmp_path / f"store-{key}", prefix=prefix)
    return s3_backend(request.getfixturevalue("moto_server"), key=key, prefix=prefix)


@dataclass
class Stores:
    source: ObstoreBackend
    destination: ObstoreBackend
    other: ObstoreBackend


@pytest.fixture(params=PAIRS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    source_kind, destination_kind = request.param.split("-")
    # one prefix for both: copies keep their paths, which must lie under the
    # destination's prefix (a test's own prefix keeps tests apart in a shared bucket)
    prefix = f"mig-{uuid.uuid4().hex[:10]}"
    created = Stores(
        _make(source_kind, SRC, request, tmp_path, prefix),
        _make(destination_kind, DST, request, tmp_path, prefix),
        ObstoreBackend(OTHER, "memory://"),
    )
    for backend in (created.source, created.destination, created.other):
        storages.register_backend(backend)
    return created


# -- data -----------------------------------------------------------------------------------------
def make_models() -> tuple[type[DeclarativeBase], Any]:
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = f"mig_docs_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject | None] = mapped_column(StoredObject(SRC))
        pages: Mapped[list[FileObject]] = mapped_column(
            StoredObject(SRC, multiple=True), default=list
        )

    return Base, Doc


@dataclass
class World:
    base: type[DeclarativeBase]
    doc: Any
    content: dict[str, bytes]  # every object path of the source rows -> its bytes
    other_path: str

    @property
    def table(self) -> Table:
        table: Table = self.doc.__table__
        return table


def saved(name: str, seed: int, size: int = 0, backend: str = SRC) -> FileObject:
    return make_file(name, size=size or 40 + seed, seed=seed, backend=backend).save()


def with_rendition(seed: int) -> FileObject:
    main = saved("photo.png", seed, 64)
    thumb = saved("thumb.png", seed + 100, 16)
    return FileObject.from_dict(
        {**main.to_dict(), "renditions": {"thumb": thumb.to_dict()}}, trusted=True
    )


def paths_of(*files: FileObject) -> list[str]:
    found = []
    for file in files:
        assert file.path is not None
        found.append(file.path)
        found.extend(r.path for r in file.renditions.values() if r.path is not None)
    return found


def insert_rows(db: Db, world: World, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for file in [row.get("file"), *row.get("pages", [])]:
            if file is not None and (file.backend in (None, SRC)):
                for path in paths_of(file):
                    world.content[path] = storages.get_backend(SRC).get_bytes(path)
        row.setdefault("pages", [])
        row.setdefault("file", None)
    with db.sync_engine.begin() as conn:
        conn.execute(insert(world.table), rows)


def populate(db: Db, rows: int = 6) -> World:
    """Rows with single files, renditions and lists in `src`, one in `other`, one empty."""
    base, doc = make_models()
    base.metadata.create_all(db.sync_engine)
    other = saved("elsewhere.txt", 999, backend=OTHER)
    assert other.path is not None
    world = World(base, doc, {}, other.path)
    data: list[dict[str, Any]] = []
    for i in range(1, rows + 1):
        row: dict[str, Any] = {"id": i}
        if i % 3 == 1:
            row["file"] = with_rendition(i)
        elif i % 3 == 2:
            row["file"] = saved(f"doc-{i}.txt", i)
            row["pages"] = [saved(f"p{i}a.txt", 200 + i), saved(f"p{i}b.txt", 300 + i)]
        else:
            row["pages"] = [saved(f"only-{i}.bin", 400 + i)]
        data.append(row)
    data.append({"id": rows + 1, "file": other})
    data.append({"id": rows + 2, "file": None})
    insert_rows(db, world, data)
    return world


def raw_rows(db: Db, world: World) -> dict[int, tuple[Any, Any]]:
    table = world.table
    with db.sync_engine.connect() as conn:
        result = conn.execute(
            select(
                table.c.id,
                type_coerce(table.c.file, JSON(none_as_null=True)),
                type_coerce(table.c.pages, JSON(none_as_null=True)),
            )
        )
        return {row[0]: (row[1], row[2]) for row in result}


def entries(value: Any, default: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, Mapping):
            backend = item.get("backend") or default
            yield backend, item
            for rendition in (item.get("renditions") or {}).values():
                yield rendition.get("backend") or backend, rendition


def references(db: Db, world: World) -> list[tuple[str, str]]:
    found = []
    for file, pages in raw_rows(db, world).values():
        for value in (file, pages):
            found.extend((backend, item["path"]) for backend, item in entries(value, SRC))
    return found


def assert_everything_on_destination(db: Db, world: World, stores: Stores) -> None:
    """Every row points at the destination (or stays in `other`), every byte equal."""
    refs = references(db, world)
    moved = [path for backend, path in refs if backend == DST]
    assert sorted(moved) == sorted(world.content)
    assert [(b, p) for b, p in refs if b != DST] == [(OTHER, world.other_path)]
    for path, data in world.content.items():
        assert stores.destination.get_bytes(path) == data, path
    assert verify_references(db.sync_engine, world.base, check_checksums=True).ok


def listing(backend: ObstoreBackend) -> set[str]:
    return {info.path for info in backend.list_objects(backend.prefix)}


# -- scenarios ------------------------------------------------------------------------
async def test_migrates_files_lists_and_renditions_then_is_a_no_op(db: Db, stores: Stores) -> None:
    world = populate(db)
    before = {path: stores.source.head(path) for path in world.content}
    seen: list[MigrationProgress] = []

    report = await db.migrate(world.base, batch_size=3, progress=seen.append)

    assert report.ok, report.as_dict()
    assert report.failures == []
    assert report.objects_copied == len(world.content) == 12
    assert report.bytes_copied == sum(len(d) for d in world.content.values())
    assert (report.objects_skipped, report.rows_remaining, report.objects_deleted) == (0, 0, 0), (
        json.dumps(report.as_dict())
    )
    assert report.rows_rewritten == 6
    assert report.passes == 2  # the second pass finds nothing left
    assert seen
    assert (seen[-1].phase, seen[-1].rows_rewritten) == ("copy", 6)
    assert_everything_on_destination(db, world, stores)
    assert listing(stores.source) == set(world.content)  # sources are kept by default
    if stores.destination.supports_attributes:
        for path in world.content:
            head = stores.destination.head(path)
            assert head.content_type == (before[path].content_type or head.content_type)
            assert head.content_type in {"image/png", "text/plain", "application/octet-stream"}
            assert "filename" in head.attributes.get("Content-Disposition", "")
    rows = raw_rows(db, world)
    rewritten = rows[1][0]
    assert rewritten["backend"] == DST
    assert rewritten["renditions"]["thumb"]["backend"] == DST
    assert rewritten["checksum"].startswith("sha256:")
    json.dumps(report.as_dict())

    again = await db.migrate(world.base)
    assert again.ok
    assert (again.objects_copied, again.objects_skipped, again.rows_rewritten) == (0, 0, 0)
    assert again.passes == 1
    assert raw_rows(db, world) == rows


async def test_interrupted_migration_resumes(db: Db, stores: Stores) -> None:
    world = populate(db)
    # 1. the destination starts failing after two copies
    flaky = FaultInjectingBackend(stores.destination)
    flaky.fail("put", nth=3, times=1000)
    storages.register_backend(flaky, replace=True)
    report = await db.migrate(world.base, batch_size=2, max_passes=2)
    assert not report.ok
    assert report.objects_copied == 2, report.as_dict()
    assert report.failures
    assert all(f.table == world.table.name for f in report.failures)
    assert {f.column for f in report.failures} <= {"file", "pages"}
    assert all("injected fault" in f.error for f in report.failures)
    assert report.rows_remaining > 0
    assert all(isinstance(f.primary_key[0], int) for f in report.failures)
    storages.register_backend(stores.destination, replace=True)

    # 2. a progress callback stops the next run after its first batch
    class Stop(Exception):
        pass

    def stop(progress: MigrationProgress) -> None:
        raise Stop

    with pytest.raises(Stop):
        await db.migrate(world.base, batch_size=2, progress=stop)
    on_destination = [p for b, p in references(db, world) if b == DST]
    assert 0 < len(on_destination) < len(world.content)

    # 3. a copy made just before a crash (row not rewritten), a truncated copy and a
    #    same-size copy with other bytes: the first is skipped, the others are redone
    pending = [p for b, p in references(db, world) if b == SRC]
    exact, truncated, tampered = pending[:3]
    stores.destination.put(exact, world.content[exact])
    stores.destination.put(truncated, world.content[truncated][:-1])
    stores.destination.put(tampered, bytes(len(world.content[tampered])))

    resumed = await db.migrate(world.base)
    assert resumed.ok, resumed.as_dict()
    assert resumed.objects_skipped >= 1
    assert resumed.objects_copied + resumed.objects_skipped == len(pending)
    assert_everything_on_destination(db, world, stores)


async def test_rows_written_during_the_migration_are_not_lost(
    db: Db, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = populate(db)
    table = world.table
    original = _migration_copy.Mover.bring
    calls = 0

    def racing_bring(self: Any, job: Any) -> Any:
        # the application replaces row 2's file between the migration's read and its
        # compare-and-swap update: the update must not overwrite it
        nonlocal calls
        calls += 1
        if calls == 1:
            replacement = saved("replacement.txt", 77)
            with db.sync_engine.begin() as conn:
                conn.execute(update(table).where(table.c.id == 2).values(file=replacement))
            assert replacement.path is not None
            world.content[replacement.path] = stores.source.get_bytes(replacement.path)
        return original(self, job)

    inserted = False

    def insert_a_row(progress: MigrationProgress) -> None:
        # ... and inserts a row referencing the source after the first batch
        nonlocal inserted
        if not inserted:
            inserted = True
            insert_rows(db, world, [{"id": 100, "file": saved("late.txt", 55)}])

    monkeypatch.setattr(_migration_copy.Mover, "bring", racing_bring)
    report = await db.migrate(world.base, batch_size=3, progress=insert_a_row)

    assert report.ok, report.as_dict()
    assert report.rows_conflicted >= 1
    rows = raw_rows(db, world)
    assert rows[2][0]["filename"] == "replacement.txt"
    assert rows[2][0]["backend"] == DST
    assert rows[100][0]["backend"] == DST
    # the replaced object is no longer referenced: it is not expected at the destination
    referenced = {path for _, path in references(db, world)}
    world.content = {p: d for p, d in world.content.items() if p in referenced}
    assert_everything_on_destination(db, world, stores)


async def test_delete_source_only_after_a_complete_migration(
    db: Db, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = populate(db)
    orphan = saved("orphan.txt", 5)  # in the source, referenced by no row: not ours
    assert orphan.path is not None

    flaky = FaultInjectingBackend(stores.destination)
    flaky.fail("put", nth=4)
    storages.register_backend(flaky, replace=True)
    failed = await db.migrate(world.base, delete_source=True, max_passes=1)
    assert not failed.ok
    assert failed.objects_deleted == 0
    assert failed.delete_skipped_reason
    assert listing(stores.source) == set(world.content) | {orphan.path}
    storages.register_backend(stores.destination, replace=True)

    # the application references one migrated path in the source again, right before
    # the last check: that object must stay
    keep = sorted(world.content)[0]
    original = migrate_module._source_references

    def app_writes_then_check(*args: Any) -> set[str]:
        monkeypatch.setattr(migrate_module, "_source_references", original)
        with db.sync_engine.begin() as conn:
            conn.execute(
                insert(world.table),
                {
                    "id": 500,
                    "file": FileObject(backend=SRC, path=keep, size=len(world.content[keep])),
                    "pages": [],
                },
            )
        return original(*args)

    monkeypatch.setattr(migrate_module, "_source_references", app_writes_then_check)
    report = await db.migrate(world.base, delete_source=True)
    assert report.failures == []
    assert report.rows_remaining == 0
    assert report.objects_deleted == len(world.content) - 1
    assert listing(stores.source) == {orphan.path, keep}
    with db.sync_engine.begin() as conn:
        conn.execute(world.table.delete().where(world.table.c.id == 500))
    assert_everything_on_destination(db, world, stores)


async def test_dry_run_changes_nothing(db: Db, stores: Stores) -> None:
    world = populate(db)
    rows = raw_rows(db, world)

    report = await db.migrate(world.base, dry_run=True, delete_source=True)

    assert report.dry_run
    assert report.objects_copied == len(world.content)
    assert report.bytes_copied == sum(len(d) for d in world.content.values())
    assert report.rows_rewritten == report.rows_remaining == 6
    assert report.objects_deleted == 0
    assert raw_rows(db, world) == rows
    assert listing(stores.destination) == set()
    assert listing(stores.source) == set(world.content)


# -- single-variant checks ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_large_objects_are_streamed_in_parts(
    mode: str, sqlite_engine: Engine, sqlite_async_engine: AsyncEngine, tmp_path: Path
) -> None:
    source = ObstoreBackend(SRC, tmp_path / "src")
    destination = ObstoreBackend(DST, tmp_path / "dst")
    storages.register_backend(source)
    storages.register_backend(destination)
    db = Db(mode, sqlite_engine if mode == "sync" else sqlite_async_engine, sqlite_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    size = 8 * 1024 * 1024
    big = saved("big.bin", 1, size=size)
    insert_rows(db, world, [{"id": 1, "file": big}])
    tracemalloc.start()
    try:
        report = await db.migrate(world.base, chunk_size=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the object passes through Python a chunk at a time, never whole
    assert peak < size // 8, peak
    assert report.ok
    assert report.objects_copied == 1
    assert report.bytes_copied == size
    assert destination.get_bytes(big.path or "") == world.content[big.path or ""]


async def test_attributes_are_rebuilt_from_the_row(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Local files keep no attributes: the destination gets them as the session writes them.

    That includes the column's `Cache-Control` (the row does not record it), on the file
    and on its renditions, and nothing else.
    """
    storages.register_backend(ObstoreBackend(SRC, tmp_path / "src"))
    destination = ObstoreBackend(DST, "memory://")
    storages.register_backend(destination)
    suffix = uuid.uuid4().hex[:8]
    cache = "public, max-age=31536000, immutable"

    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = f"mig_cached_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject | None] = mapped_column(StoredObject(SRC, cache_control=cache))
        pages: Mapped[list[FileObject]] = mapped_column(
            StoredObject(SRC, multiple=True), default=list
        )

    db = Db("sqlite-sync", sqlite_engine, sqlite_engine)
    world = World(Base, Doc, {}, "")
    Base.metadata.create_all(sqlite_engine)
    file = make_file("Résumé.pdf", size=10, backend=SRC, metadata={"owner": "bob"}).save()
    thumb = make_file("Résumé.thumb.png", size=8, backend=SRC).save()
    with_thumb = FileObject.from_dict(
        {**file.to_dict(), "renditions": {"thumb": thumb.to_dict()}}, trusted=True
    )
    page = make_file("page.txt", size=5, backend=SRC).save()
    insert_rows(db, world, [{"id": 1, "file": with_thumb, "pages": [page]}])
    assert (await db.migrate(Base)).ok

    # What the session itself writes for such a column, on a store that keeps attributes:
    expected = FileObject(
        filename="Résumé.pdf", content=b"0123456789", metadata={"owner": "bob"}, backend=DST
    ).save(options=SaveOptions(cache_control=cache))
    written = destination.head(expected.path or "").attributes
    head = destination.head(file.path or "")
    assert head.content_type == "application/pdf"
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9.pdf" in head.attributes["Content-Disposition"]
    assert head.metadata == {"owner": "bob"}
    assert head.attributes["Cache-Control"] == cache
    assert dict(head.attributes) == dict(written)
    rendition = destination.head(thumb.path or "")
    assert rendition.content_type == "image/png"
    assert rendition.attributes["Cache-Control"] == cache
    # A column without Cache-Control gets none.
    assert "Cache-Control" not in destination.head(page.path or "").attributes


async def test_large_objects_to_s3_use_multipart(
    sqlite_async_engine: AsyncEngine, sqlite_engine: Engine, request: pytest.FixtureRequest
) -> None:
    source = ObstoreBackend(SRC, "memory://")
    destination = s3_backend(request.getfixturevalue("moto_server"), key=DST)
    storages.register_backend(source)
    storages.register_backend(destination)
    db = Db("sqlite-async", sqlite_async_engine, sqlite_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    size = 11 * 1024 * 1024
    big = saved("big.bin", 2, size=size)
    insert_rows(db, world, [{"id": 1, "file": big}])
    report = await db.migrate(world.base)
    assert report.ok, report.as_dict()
    head = destination.head(big.path or "")
    assert head.size == size
    assert (head.etag or "").strip('"').endswith("-3")  # three parts of 5 MiB at most
    data = world.content[big.path or ""]
    got = hashlib.sha256(b"".join(destination.iter_chunks(big.path or ""))).hexdigest()
    assert got == hashlib.sha256(data).hexdigest()


async def test_corrupt_source_object_is_reported_and_not_migrated(
    sqlite_engine: Engine, memory_backend: ObstoreBackend
) -> None:
    source = ObstoreBackend(SRC, "memory://")
    destination = ObstoreBackend(DST, "memory://")
    storages.register_backend(source)
    storages.register_backend(destination)
    db = Db("sqlite-sync", sqlite_engine, sqlite_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    good, bad, gone = saved("good.txt", 1), saved("bad.txt", 2), saved("gone.txt", 3)
    insert_rows(db, world, [{"id": 1, "file": good}, {"id": 2, "file": bad, "pages": [gone]}])
    source.put(bad.path or "", bytes(bad.size or 0))  # same size, other bytes
    source.delete(gone.path or "")

    report = await db.migrate(world.base)

    assert not report.ok
    assert report.rows_rewritten == 1
    assert report.rows_remaining == 1
    problems = {(f.primary_key, f.column, f.path): f.error for f in report.failures}
    assert set(problems) == {((2,), "file", bad.path), ((2,), "pages", gone.path)}
    assert "checksum" in problems[((2,), "file", bad.path)]
    assert "missing" in problems[((2,), "pages", gone.path)]
    assert listing(destination) == {good.path}  # the bad copy was removed again


def test_refuses_unusable_options(sqlite_engine: Engine) -> None:
    storages.register_backend(ObstoreBackend(SRC, "memory://"))
    base, _ = make_models()
    base.metadata.create_all(sqlite_engine)
    with pytest.raises(ConfigurationError):
        migrate(sqlite_engine, base, source=SRC, destination=SRC)
    with pytest.raises(BackendNotFoundError):
        migrate(sqlite_engine, base, source=SRC, destination="nowhere")
    storages.register_backend(ObstoreBackend(DST, "memory://"))
    with pytest.raises(ConfigurationError):
        migrate(sqlite_engine, base, source=SRC, destination=DST, batch_size=0)
    metadata = MetaData()
    Table("no_pk", metadata, Column("n", Integer), Column("f", StoredObject(SRC)))
    metadata.create_all(sqlite_engine)
    with pytest.raises(ConfigurationError, match="primary key"):
        migrate(sqlite_engine, metadata, source=SRC, destination=DST)


def test_delete_source_refuses_two_keys_on_one_store(sqlite_engine: Engine) -> None:
    store = MemoryStore()
    storages.register_backend(ObstoreBackend(SRC, store))
    storages.register_backend(ObstoreBackend(DST, store))
    base, _ = make_models()
    base.metadata.create_all(sqlite_engine)
    with pytest.raises(ConfigurationError, match="same store"):
        migrate(sqlite_engine, base, source=SRC, destination=DST, delete_source=True)
    assert list(storages.get_backend(SRC).list_objects()) == []  # the probe is gone


def test_runs_inside_a_given_connection(sqlite_engine: Engine) -> None:
    storages.register_backend(ObstoreBackend(SRC, "memory://"))
    storages.register_backend(ObstoreBackend(DST, "memory://"))
    db = Db("sqlite-sync", sqlite_engine, sqlite_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    insert_rows(db, world, [{"id": 1, "file": saved("a.txt", 1)}])
    with sqlite_engine.connect() as conn:
        report = migrate(conn, world.base, source=SRC, destination=DST)
        assert conn.in_transaction()
        conn.rollback()  # the caller decides: nothing was committed
    assert report.ok
    assert report.rows_rewritten == 1
    assert [b for b, _ in references(db, world)] == [SRC]


async def test_composite_primary_keys_and_report_limit(db: Db) -> None:
    storages.register_backend(ObstoreBackend(SRC, "memory://"))
    destination = ObstoreBackend(DST, "memory://")
    storages.register_backend(destination)
    metadata = MetaData()
    table = Table(
        f"mig_tenant_{uuid.uuid4().hex[:8]}",
        metadata,
        Column("tenant", Integer, primary_key=True),
        Column("id", Integer, primary_key=True),
        Column("file", StoredObject(SRC)),
    )
    metadata.create_all(db.sync_engine)
    files = {(t, i): saved(f"{t}-{i}.txt", 10 * t + i) for t in (1, 2) for i in (1, 2, 3)}
    with db.sync_engine.begin() as conn:
        conn.execute(
            insert(table), [{"tenant": t, "id": i, "file": f} for (t, i), f in files.items()]
        )
    missing = [files[(1, 2)], files[(2, 3)]]
    for file in missing:
        storages.get_backend(SRC).delete(file.path or "")

    report = await db.migrate(metadata, batch_size=2, report_limit=1)

    assert report.rows_rewritten == 4
    assert report.rows_remaining == 2
    assert len(report.failures) == 1
    assert report.failures_omitted == 1
    assert not report.ok
    assert report.failures[0].primary_key in {(1, 2), (2, 3)}
    with db.sync_engine.connect() as conn:
        stored = {(r.tenant, r.id): r.file for r in conn.execute(select(table))}
    for key, file in stored.items():
        assert file.backend == (SRC if key in {(1, 2), (2, 3)} else DST)
        if file.backend == DST:
            assert file.get_content() == storages.get_backend(SRC).get_bytes(file.path or "")


class _InFlight(FaultInjectingBackend):
    """Counts the puts running at the same time (a real backend underneath).

    With `wait_for_company`, a put waits (up to 1 s) until another one has started, so
    a migration that copies concurrently shows it whatever the scheduling; one that
    copies one at a time just runs slower and still counts 1.
    """

    def __init__(self, inner: ObstoreBackend, *, wait_for_company: bool) -> None:
        super().__init__(inner)
        self.running = self.most = 0
        self.wait_for_company = wait_for_company
        self._company: asyncio.Event | None = None

    async def put_async(self, path: str, body: Any, **options: Any) -> Any:
        if self._company is None:
            self._company = asyncio.Event()
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running > 1:
            self._company.set()
        try:
            if self.wait_for_company:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._company.wait(), 1)
            else:
                await asyncio.sleep(0)  # let the other copies start
            return await super().put_async(path, body, **options)
        finally:
            self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_async_copies_run_concurrently_within_the_bound(
    concurrency: int, sqlite_async_engine: AsyncEngine, sqlite_engine: Engine
) -> None:
    storages.register_backend(ObstoreBackend(SRC, "memory://"))
    destination = _InFlight(ObstoreBackend(DST, "memory://"), wait_for_company=concurrency > 1)
    storages.register_backend(destination)
    db = Db("sqlite-async", sqlite_async_engine, sqlite_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    insert_rows(db, world, [{"id": n, "file": saved(f"{n}.txt", n)} for n in range(1, 13)])
    report = await db.migrate(world.base, concurrency=concurrency)
    assert report.ok
    assert report.objects_copied == 12
    if concurrency == 1:
        assert destination.most == 1
    else:  # several at once, never more than the bound
        assert 1 < destination.most <= concurrency


async def test_delete_source_keeps_objects_whose_copy_is_damaged(db: Db) -> None:
    source = ObstoreBackend(SRC, "memory://")
    destination = ObstoreBackend(DST, "memory://")
    storages.register_backend(source)
    storages.register_backend(destination)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(db.sync_engine)
    files = [saved(f"{n}.txt", n) for n in range(1, 5)]
    insert_rows(db, world, [{"id": n, "file": f} for n, f in enumerate(files, 1)])
    assert (await db.migrate(world.base)).ok
    damaged, lost = files[0].path or "", files[1].path or ""
    destination.put(damaged, bytes(len(world.content[damaged])))  # same size, other bytes
    destination.delete(lost)

    report = await db.migrate(world.base, delete_source=True)

    assert report.objects_deleted == 2
    assert {(f.primary_key, f.path) for f in report.failures} == {((1,), damaged), ((2,), lost)}
    assert all(f.error.startswith("kept the source object") for f in report.failures)
    assert not report.ok
    assert listing(source) == {damaged, lost}


# -- the destination's prefix -------------------------------------------------------------------
def _prefixed(kind: str, key: str, prefix: str | None, tmp_path: Path) -> ObstoreBackend:
    """A memory or local-files backend with `prefix`, registered under `key`."""
    fs: Any = "memory://" if kind == "memory" else tmp_path / f"store-{key}"
    backend = ObstoreBackend(key, fs, prefix=prefix)
    storages.register_backend(backend)
    return backend


def _everything(backend: ObstoreBackend) -> set[str]:
    """Every object in the backend's store, inside its prefix or not."""
    return {info.path for info in backend.list_objects()}


def _sqlite_db(mode: str, sqlite_engine: Engine, sqlite_async_engine: AsyncEngine) -> Db:
    return Db(mode, sqlite_engine if mode == "sync" else sqlite_async_engine, sqlite_engine)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize(
    ("source_prefix", "destination_prefix", "advice"),
    [
        ("uploads", "media", "same prefix as 'src' ('uploads'), or a prefix that contains it"),
        ("uploads", "uploads/archive", "same prefix as 'src' ('uploads')"),
        (None, "media", "give 'dst' no prefix either"),
    ],
)
async def test_refuses_a_destination_whose_prefix_would_not_hold_the_copies(
    mode: str,
    kind: str,
    source_prefix: str | None,
    destination_prefix: str,
    advice: str,
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """Copies keep their paths: under another prefix the destination could never delete
    them (nor gc see them). Refused before anything is read, copied or rewritten."""
    source = _prefixed(kind, SRC, source_prefix, tmp_path)
    destination = _prefixed(kind, DST, destination_prefix, tmp_path)
    db = _sqlite_db(mode, sqlite_engine, sqlite_async_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    insert_rows(db, world, [{"id": 1, "file": with_rendition(1)}, {"id": 2, "file": saved("b", 2)}])
    rows = raw_rows(db, world)

    for options in ({}, {"dry_run": True}, {"delete_source": True}):
        with pytest.raises(ConfigurationError) as caught:
            await db.migrate(world.base, **options)
        message = str(caught.value)
        assert "cannot hold the paths of backend 'src'" in message, message
        assert "neither delete them nor collect them as garbage" in message
        assert advice in message
        assert caught.value.backend == DST

    assert raw_rows(db, world) == rows  # no row flipped
    assert _everything(destination) == set()  # nothing written there
    assert _everything(source) == set(world.content)  # nothing deleted, no probe left


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize(
    ("source_prefix", "destination_prefix"),
    [("uploads", "uploads"), ("media/uploads", "media"), ("uploads", None), (None, None)],
)
async def test_a_destination_whose_prefix_holds_the_paths_migrates_and_can_delete(
    mode: str,
    kind: str,
    source_prefix: str | None,
    destination_prefix: str | None,
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    _prefixed(kind, SRC, source_prefix, tmp_path)
    destination = _prefixed(kind, DST, destination_prefix, tmp_path)
    db = _sqlite_db(mode, sqlite_engine, sqlite_async_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)
    pages = [saved("p1", 3), saved("p2", 4)]
    insert_rows(db, world, [{"id": 1, "file": with_rendition(1), "pages": pages}])

    report = await db.migrate(world.base, delete_source=True)

    assert report.ok, report.as_dict()
    assert (report.objects_copied, report.objects_deleted) == (4, 4)
    for path, data in world.content.items():
        assert destination.get_bytes(path) == data
    assert _everything(destination) == listing(destination) == set(world.content)
    destination.delete(sorted(world.content))  # each copy is the destination's to delete
    assert _everything(destination) == set()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_a_reference_outside_the_destinations_prefix_fails_alone(
    mode: str,
    kind: str,
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """Rows written before the source got its prefix name paths outside it: the prefixes
    agree, yet such a path would land outside the destination's prefix. Each such row
    fails on its own (no copy, row unchanged, source kept); the others migrate."""
    source = _prefixed(kind, SRC, "uploads", tmp_path)
    destination = _prefixed(kind, DST, "uploads", tmp_path)
    db = _sqlite_db(mode, sqlite_engine, sqlite_async_engine)
    world = World(*make_models(), {}, "")
    world.base.metadata.create_all(sqlite_engine)

    before = ObstoreBackend("before", source.store)  # the source when it had no prefix

    def legacy(name: str, data: bytes) -> FileObject:
        path = f"legacy/{name}"
        before.put(path, data)  # as stored then
        return FileObject(backend=SRC, path=path, size=len(data), filename=name)

    old_file, old_page = legacy("old.txt", b"old bytes"), legacy("page.txt", b"old page")
    fresh, mixed = saved("fresh.txt", 1), saved("mixed.txt", 2)
    insert_rows(
        db,
        world,
        [
            {"id": 1, "file": fresh},
            {"id": 2, "file": old_file},
            {"id": 3, "file": mixed, "pages": [old_page]},  # one good file, one old page
        ],
    )
    rows = raw_rows(db, world)
    expected = {((2,), "file", "legacy/old.txt"), ((3,), "pages", "legacy/page.txt")}

    dry = await db.migrate(world.base, dry_run=True)
    assert {(f.primary_key, f.column, f.path) for f in dry.failures} == expected
    assert _everything(destination) == set()

    report = await db.migrate(world.base, delete_source=True)

    assert not report.ok
    assert {(f.primary_key, f.column, f.path) for f in report.failures} == expected
    for failure in report.failures:
        assert "outside the prefix 'uploads' of backend 'dst'" in failure.error, failure
        assert "give the destination a prefix that contains the path" in failure.error
    assert json.dumps(report.as_dict())
    assert (report.rows_rewritten, report.rows_remaining) == (1, 2)
    after = raw_rows(db, world)
    assert after[1][0]["backend"] == DST
    assert (after[2], after[3]) == (rows[2], rows[3])  # not flipped, not even row 3's file
    # nothing lands outside the destination's prefix
    assert _everything(destination) == listing(destination)
    assert not destination.exists("legacy/old.txt")
    assert not destination.exists("legacy/page.txt")
    # incomplete: no source object is deleted
    assert report.delete_skipped_reason
    assert report.objects_deleted == 0
    assert _everything(source) == set(world.content)
