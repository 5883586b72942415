"""MirrorBackend and OverlayBackend: the backend conformance checks, and what each adds.

The first half runs the checks of `test_conformance.py` that apply to a composite backend
(saving every content kind, multipart, reads, missing objects, deletes, copies, listing,
attributes, the session lifecycle) against:

* `mirror-memory-local`: memory primary, local-files mirror;
* `mirror-memory-s3`: memory primary, S3 (moto) mirror;
* `overlay-memory`: memory base, memory overlay;
* `overlay-local`: memory base, local-files overlay.

Every write is also checked where it must land (the primary and every mirror; the
overlay) and where it must not (an overlay's base). The second half covers strict and
lenient mirrors, the zero-downtime switch between stores end to end, and the overlay's
tombstones.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, create_engine, select, type_coerce
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    Backend,
    ConfigurationError,
    FileObject,
    InvalidObjectPathError,
    MirrorBackend,
    ObjectExistsError,
    ObjectNotFoundError,
    ObstoreBackend,
    OverlayBackend,
    SaveOptions,
    StoredObject,
    UnsupportedOperationError,
    migrate,
    migrate_async,
    storages,
    verify_references,
)
from sqlalchemy_obstore._attributes import content_disposition
from sqlalchemy_obstore.composite import TOMBSTONE_PREFIX
from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault
from tests.integration.backends import s3_backend

pytestmark = pytest.mark.integration

KEY = "composite"
VARIANTS = ["mirror-memory-local", "mirror-memory-s3", "overlay-memory", "overlay-local"]
S3_PART = 5 * 1024 * 1024


@dataclass
class Composite:
    """A composite backend under test, with the stores its writes must (not) reach."""

    name: str
    backend: Backend
    receivers: list[Backend]  # every write lands in each of these
    untouched: list[Backend] = field(default_factory=list)  # never written
    root: str = field(default_factory=lambda: f"comp-{uuid.uuid4().hex[:10]}")

    def key(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def attributes(self) -> bool:
        return all(r.supports_attributes for r in self.receivers)

    @property
    def chunk(self) -> int:
        return S3_PART if self.name.endswith("s3") else 256 * 1024

    def landed(self, path: str, data: bytes) -> None:
        for receiver in self.receivers:
            assert receiver.get_bytes(path) == data, receiver
        for store in self.untouched:
            assert not store.exists(path)

    def gone(self, path: str) -> None:
        for receiver in self.receivers:
            assert not receiver.exists(path), receiver


def _local(key: str, tmp_path: Path) -> ObstoreBackend:
    return ObstoreBackend(key, tmp_path / f"store-{key}")


@pytest.fixture(params=VARIANTS)
def composite(request: pytest.FixtureRequest, tmp_path: Path) -> Composite:
    name: str = request.param
    if name.startswith("mirror"):
        primary = ObstoreBackend("primary", "memory://")
        mirror = (
            s3_backend(request.getfixturevalue("moto_server"), key="mirror")
            if name.endswith("s3")
            else _local("mirror", tmp_path)
        )
        created = Composite(name, MirrorBackend(KEY, primary, [mirror]), [primary, mirror])
    else:
        base = ObstoreBackend("base", "memory://")
        overlay: ObstoreBackend = (
            _local("overlay", tmp_path)
            if name.endswith("local")
            else ObstoreBackend("overlay", "memory://")
        )
        created = Composite(name, OverlayBackend(KEY, base, overlay), [overlay], [base])
    storages.register_backend(created.backend)
    return created


def _payload(size: int, seed: str = "") -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def _content(kind: str, data: bytes, tmp_path: Path) -> Any:
    if kind == "bytes":
        return data
    if kind == "path":
        path = tmp_path / "upload.bin"
        path.write_bytes(data)
        return path
    if kind == "file":
        return io.BytesIO(data)
    if kind == "iter":
        return iter([data[:100], data[100:1000], data[1000:]])

    async def chunks() -> AsyncIterator[bytes]:
        for part in (data[:100], data[100:1000], data[1000:]):
            await asyncio.sleep(0)
            yield part

    return chunks()


# -- conformance checks that apply to composite backends ----------------------------------------
# (async iterators can only be saved with save_async)
KINDS = [
    (kind, mode)
    for kind in ("bytes", "path", "file", "iter", "aiter")
    for mode in ("sync", "async")
    if (kind, mode) != ("aiter", "sync")
]


@pytest.mark.parametrize(("kind", "mode"), KINDS)
async def test_save_content_kinds(
    composite: Composite, kind: str, mode: str, tmp_path: Path
) -> None:
    data = _payload(4096 + 7, kind)
    file = FileObject(filename=f"{kind}.bin", content=_content(kind, data, tmp_path), backend=KEY)
    if mode == "async":
        await file.save_async()
    else:
        file.save()
    assert file.path is not None
    assert file.size == len(data)
    assert file.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert file.get_content() == data
    assert await file.get_content_async() == data
    assert file.verify()
    composite.landed(file.path, data)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_multipart_upload(composite: Composite, mode: str, tmp_path: Path) -> None:
    chunk = composite.chunk
    data = _payload(2 * chunk + chunk // 5, "multipart")
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    file = FileObject(filename="big.bin", content=source, backend=KEY)
    if mode == "async":
        await file.save_async(chunk_size=chunk)
    else:
        file.save(chunk_size=chunk)
    assert file.path is not None
    assert file.size == len(data)
    assert b"".join([c async for c in file.iter_chunks_async(chunk_size=chunk)]) == data
    assert b"".join(file.iter_chunks(chunk_size=chunk)) == data
    composite.landed(file.path, data)


async def test_reads_ranges_head_and_exists(composite: Composite) -> None:
    backend = composite.backend
    data = _payload(64 * 1024 + 3, "read")
    path = composite.key("read/data.txt")
    backend.put(path, data, attributes={"Content-Type": "text/plain"})
    assert backend.get_bytes(path) == data
    assert await backend.get_bytes_async(path) == data
    assert b"".join(backend.iter_chunks(path, chunk_size=16 * 1024)) == data
    assert b"".join([c async for c in backend.iter_chunks_async(path, chunk_size=8192)]) == data
    assert backend.get_range(path, 10, 100) == data[10:110]
    assert await backend.get_range_async(path, len(data) - 5, 100) == data[-5:]
    head = backend.head(path)
    assert head.size == len(data)
    assert (await backend.head_async(path)).size == len(data)
    reads_attributes = composite.backend.supports_attributes
    assert head.content_type == ("text/plain" if reads_attributes else None)
    assert backend.exists(path)
    assert await backend.exists_async(path)
    assert not backend.exists(composite.key("read/absent"))


async def test_missing_object_errors(composite: Composite) -> None:
    backend = composite.backend
    missing = composite.key("missing/never-written.bin")
    with pytest.raises(ObjectNotFoundError):
        backend.get_bytes(missing)
    with pytest.raises(ObjectNotFoundError):
        backend.head(missing)
    with pytest.raises(ObjectNotFoundError):
        list(backend.iter_chunks(missing))
    with pytest.raises(ObjectNotFoundError):
        await backend.head_async(missing)
    with pytest.raises(ObjectNotFoundError):
        await backend.get_range_async(missing, 0, 3)
    with pytest.raises(ObjectNotFoundError):
        [c async for c in backend.iter_chunks_async(missing)]


async def test_delete_one_and_many(composite: Composite) -> None:
    backend = composite.backend
    paths = [composite.key(f"delete/{n}.txt") for n in range(5)]
    for path in paths:
        backend.put(path, path.encode())
    backend.delete(paths[0])
    assert not backend.exists(paths[0])
    assert backend.exists(paths[1])
    backend.delete([paths[1], composite.key("delete/missing"), paths[2]])
    await backend.delete_async([paths[3]])
    await backend.delete_async(paths[4])
    for path in paths:
        assert not backend.exists(path)
        composite.gone(path)
    backend.delete(paths)  # already gone: no error
    await backend.delete_async(paths)
    backend.delete([])


async def test_copy_and_refuse_overwrite(composite: Composite) -> None:
    backend = composite.backend
    source, other = composite.key("copy/source.txt"), composite.key("copy/other.txt")
    destination = composite.key("copy/destination.txt")
    backend.put(source, b"source bytes", attributes={"Content-Type": "text/plain"})
    backend.put(other, b"other bytes")
    backend.copy(source, destination)
    composite.landed(destination, b"source bytes")
    if composite.attributes:
        assert backend.head(destination).content_type == "text/plain"
    await backend.copy_async(other, destination, overwrite=True)
    composite.landed(destination, b"other bytes")
    with pytest.raises(ObjectExistsError):
        backend.copy(source, destination)
    with pytest.raises(ObjectExistsError):
        await backend.copy_async(source, destination)
    assert backend.get_bytes(destination) == b"other bytes"
    with pytest.raises(ObjectNotFoundError):
        backend.copy(composite.key("copy/absent"), composite.key("copy/elsewhere"))


async def test_list_objects(composite: Composite) -> None:
    backend = composite.backend
    base = composite.key("list")
    inside = [f"{base}/a.txt", f"{base}/b.txt", f"{base}/sub/c.txt"]
    for path in [*inside, f"{base}-sibling.txt"]:
        backend.put(path, b"xyz")
    assert sorted(i.path for i in backend.list_objects(base)) == inside
    infos = [i async for i in backend.list_objects_async(base)]
    assert sorted(i.path for i in infos) == inside
    assert all(i.size == 3 for i in infos)
    assert sorted(i.path for i in backend.list_objects(base, offset=inside[0])) == inside[1:]
    after = [i.path async for i in backend.list_objects_async(base, offset=inside[1])]
    assert sorted(after) == inside[2:]


async def test_attributes_round_trip(composite: Composite) -> None:
    filename = "Résumé 2024.pdf"
    file = FileObject(
        filename=filename, content=b"%PDF-1.7", backend=KEY, metadata={"owner": "alice"}
    )
    await file.save_async(options=SaveOptions(cache_control="private, max-age=600"))
    assert file.path is not None
    for receiver in composite.receivers:
        info = await receiver.head_async(file.path)
        if receiver.supports_attributes:
            assert info.content_type == "application/pdf"
            disposition = content_disposition(filename, "application/pdf")
            assert info.attributes.get("Content-Disposition") == disposition
            assert info.attributes.get("Cache-Control") == "private, max-age=600"
            assert info.metadata == {"owner": "alice"}
        else:
            assert info.content_type is None


def test_signing_follows_the_stores(composite: Composite) -> None:
    # Memory and local stores cannot sign natively and no signer is configured: memory
    # stores sign through the development signer, local ones cannot sign at all.
    backend = composite.backend
    assert backend.supports_native_signing is False
    if backend.supports_signing:
        assert backend.sign("a.txt").startswith("/_storage/")
    elif isinstance(backend, MirrorBackend):  # the primary signs
        with pytest.raises(UnsupportedOperationError):
            backend.sign("a.txt")


class _Base(DeclarativeBase):
    pass


class Doc(_Base):
    __tablename__ = "composite_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(KEY))


async def test_column_lifecycle_round_trip(
    composite: Composite, sqlite_async_engine: AsyncEngine
) -> None:
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    async with AsyncSession(sqlite_async_engine, expire_on_commit=False) as session:
        doc = Doc(file=FileObject(filename="first.txt", content=b"first version"))
        session.add(doc)
        await session.commit()
        first = doc.file
        assert first is not None
        assert first.path is not None
        composite.landed(first.path, b"first version")
        doc.file = FileObject(filename="second.txt", content=b"second version")
        await session.commit()
        assert doc.file.path is not None
        composite.landed(doc.file.path, b"second version")
    assert not composite.backend.exists(first.path)  # deleted after the commit
    composite.gone(first.path)


# -- mirror -------------------------------------------------------------------------------
def test_mirror_needs_a_mirror() -> None:
    with pytest.raises(ConfigurationError):
        MirrorBackend("m", ObstoreBackend("p", "memory://"), [])


def _store(kind: str, key: str, prefix: str | None, tmp_path: Path) -> ObstoreBackend:
    fs: Any = "memory://" if kind == "memory" else tmp_path / f"store-{key}"
    return ObstoreBackend(key, fs, prefix=prefix)


@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize(
    ("outer", "inner"), [("media", "uploads"), ("uploads/archive", "uploads"), ("media", None)]
)
def test_composites_refuse_a_store_whose_prefix_would_not_hold_the_paths(
    kind: str, outer: str, inner: str | None, tmp_path: Path
) -> None:
    """A mirror gets the primary's paths, an overlay writes and deletes the base's: under
    another prefix neither could delete them (a backend deletes only under its prefix)."""
    origin = _store(kind, "origin", inner, tmp_path)
    receiver = _store(kind, "receiver", outer, tmp_path)
    with pytest.raises(ConfigurationError, match="a mirror receives each write") as mirrored:
        MirrorBackend(KEY, origin, [ObstoreBackend("fine", "memory://"), receiver])
    with pytest.raises(ConfigurationError, match="writes and deletes the base's") as overlaid:
        OverlayBackend(KEY, origin, receiver)
    for caught in (mirrored, overlaid):
        message = str(caught.value)
        assert f"Backend 'receiver' (prefix {outer!r}) cannot hold the paths" in message
        assert "neither delete them nor collect them as garbage" in message
        assert caught.value.backend == "receiver"
        advice = "the same prefix as 'origin'" if inner else "give 'receiver' no prefix either"
        assert advice in message
    assert list(receiver.list_objects()) == list(origin.list_objects()) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize(("outer", "inner"), [("uploads", "uploads"), ("media", "media/uploads")])
async def test_composites_over_stores_whose_prefix_holds_the_paths_write_and_delete(
    mode: str, kind: str, outer: str, inner: str, tmp_path: Path
) -> None:
    """The same prefix (or one containing it): every write can be deleted again."""
    primary = _store(kind, "primary", inner, tmp_path)
    mirror = _store(kind, "mirror", outer, tmp_path)
    other = ObstoreBackend("other", "memory://")  # no prefix: holds every path
    mirrored = MirrorBackend(KEY, primary, [mirror, other])
    base = ObstoreBackend("base", "memory://", prefix=inner)
    base.put(f"{inner}/old.txt", b"old")
    overlay = _store(kind, "overlay", outer, tmp_path)
    overlaid = OverlayBackend("overlaid", base, overlay)
    for backend in (mirrored, overlaid):
        with storages.temporary(backend):
            file = FileObject(filename="a.txt", content=b"new", backend=backend.key)
            if mode == "sync":
                file.save()
                file.delete()
                backend.delete(f"{inner}/old.txt")
            else:
                await file.save_async()
                await file.delete_async()
                await backend.delete_async(f"{inner}/old.txt")
        assert file.path is not None
        assert file.path.startswith(f"{backend.prefix}/")  # the primary's, the overlay's
        assert not backend.exists(file.path)
        assert not backend.exists(f"{inner}/old.txt")
    assert [list(b.list_objects()) for b in (primary, mirror, other)] == [[], [], []]
    assert base.get_bytes(f"{inner}/old.txt") == b"old"  # only hidden by the overlay


async def _outside(backend: Backend, mode: str, operation: str, path: str) -> None:
    """One write or delete of `path`, with the sync or the async call."""
    sync = mode == "sync"
    if operation == "put":
        if sync:
            backend.put(path, b"leak")
        else:
            await backend.put_async(path, b"leak")
    elif operation == "put create_only":
        if sync:
            backend.put(path, iter([b"leak"]), create_only=True)
        else:
            await backend.put_async(path, b"leak", create_only=True)
    elif operation == "put_buffer":
        if sync:
            backend.put_buffer(path, b"leak")
        else:
            await backend.put_buffer_async(path, b"leak")
    elif operation == "copy":
        if sync:
            backend.copy("uploads/a.txt", path)
        else:
            await backend.copy_async("uploads/a.txt", path, overwrite=True)
    elif sync:
        backend.delete(["uploads/a.txt", path])
    else:
        await backend.delete_async(path)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize("path", ["billing/ledger.csv", "uploads/../billing/ledger.csv"])
async def test_composites_write_and_delete_nothing_outside_their_prefix(
    mode: str, kind: str, path: str, tmp_path: Path
) -> None:
    """A composite's prefix bounds its writes and deletes as an `ObstoreBackend`'s does:
    a path outside it is refused before any store is asked, even a mirror whose wider
    prefix would take it (it could then hold an object the composite can never delete)."""
    primary = FaultInjectingBackend(_store(kind, "primary", "uploads", tmp_path))
    mirror = FaultInjectingBackend(ObstoreBackend("mirror", "memory://"))  # holds any path
    base = FaultInjectingBackend(ObstoreBackend("base", "memory://", prefix="uploads"))
    overlay = FaultInjectingBackend(_store(kind, "overlay", "uploads", tmp_path))
    mirrored = MirrorBackend(KEY, primary, [mirror])
    overlaid = OverlayBackend("overlaid", base, overlay)
    for backend in (mirrored, overlaid):
        for operation in ("put", "put create_only", "put_buffer", "copy", "delete"):
            with pytest.raises(InvalidObjectPathError) as raised:
                await _outside(backend, mode, operation, path)
            assert "'uploads/'" in str(raised.value)
    for store in (primary, mirror, base, overlay):
        assert not store.calls, store.key  # no store was asked anything
        assert list(store.inner.list_objects()) == []


@pytest.fixture
def flaky_mirror(tmp_path: Path) -> tuple[ObstoreBackend, FaultInjectingBackend]:
    primary = ObstoreBackend("primary", "memory://")
    return primary, FaultInjectingBackend(_local("mirror", tmp_path))


def _rows(engine: Engine) -> list[Any]:
    with Session(engine) as session:
        return list(session.scalars(select(Doc)))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_strict_mirror_failure_rolls_back_the_upload(
    mode: str,
    flaky_mirror: tuple[ObstoreBackend, FaultInjectingBackend],
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    primary, flaky = flaky_mirror
    storages.register_backend(MirrorBackend(KEY, primary, [flaky]))
    _Base.metadata.create_all(sqlite_engine)
    flaky.fail("put", times=2)
    big = tmp_path / "big.bin"
    big.write_bytes(_payload(600 * 1024, "big"))

    async def commit(doc: Doc) -> None:
        if mode == "sync":
            with Session(sqlite_engine) as session:
                session.add(doc)
                session.commit()
        else:
            async with AsyncSession(sqlite_async_engine) as asession:
                asession.add(doc)
                await asession.commit()

    for content in (b"small", big):
        with pytest.raises(InjectedFault):
            await commit(Doc(file=FileObject(filename="a.bin", content=content)))
    assert len(flaky.injected) == 2
    assert _rows(sqlite_engine) == []
    assert list(primary.list_objects()) == []  # nothing stays in the primary
    assert list(flaky.inner.list_objects()) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_lenient_mirror_logs_counts_and_commits(
    mode: str,
    flaky_mirror: tuple[ObstoreBackend, FaultInjectingBackend],
    sqlite_engine: Engine,
    sqlite_async_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, flaky = flaky_mirror
    mirror = MirrorBackend(KEY, primary, [flaky], strict=False)
    storages.register_backend(mirror)
    _Base.metadata.create_all(sqlite_engine)
    flaky.fail("put")
    doc = Doc(file=FileObject(filename="a.txt", content=b"hello"))
    if mode == "sync":
        with Session(sqlite_engine, expire_on_commit=False) as session:
            session.add(doc)
            session.commit()
    else:
        async with AsyncSession(sqlite_async_engine, expire_on_commit=False) as asession:
            asession.add(doc)
            await asession.commit()
    assert mirror.mirror_failures == 1
    assert "failed to write" in caplog.text
    assert doc.file is not None
    assert doc.file.path is not None
    assert primary.get_bytes(doc.file.path) == b"hello"
    assert not flaky.inner.exists(doc.file.path)
    assert [r.id for r in _rows(sqlite_engine)] == [doc.id]


@pytest.fixture(params=["sqlite-async", "pg-sync"])
def switch_engines(request: pytest.FixtureRequest) -> Iterator[tuple[Engine | AsyncEngine, Engine]]:
    """The engine the migration uses, and a sync engine for the application."""
    if request.param == "pg-sync":
        engine: Engine = request.getfixturevalue("pg_engine")
        yield engine, engine
        return
    async_engine: AsyncEngine = request.getfixturevalue("sqlite_async_engine")
    sync_engine = create_engine(async_engine.url.set(drivername="sqlite"))
    yield async_engine, sync_engine
    sync_engine.dispose()


async def test_zero_downtime_switch(
    switch_engines: tuple[Engine | AsyncEngine, Engine],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Local files to S3 while the application keeps writing: mirror, backfill, flip."""
    engine, sync_engine = switch_engines
    prefix = f"switch-{uuid.uuid4().hex[:8]}"
    local = ObstoreBackend("uploads", tmp_path / "files", prefix=prefix)
    s3 = s3_backend(request.getfixturevalue("moto_server"), key="uploads-s3", prefix=prefix)

    class Base(DeclarativeBase):
        pass

    class Attachment(Base):
        __tablename__ = f"attachments_{uuid.uuid4().hex[:8]}"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject | None] = mapped_column(StoredObject("uploads"))

    Base.metadata.create_all(sync_engine)
    written: dict[int, bytes] = {}

    def app_writes(n: int) -> None:  # the application, saving through its sessions
        with Session(sync_engine) as session:
            data = _payload(100 + n, f"row {n}")
            session.add(Attachment(id=n, file=FileObject(filename=f"{n}.txt", content=data)))
            session.commit()
            written[n] = data

    async def run_migrate(**options: Any) -> Any:
        if isinstance(engine, AsyncEngine):
            return await migrate_async(
                engine, Base, source="uploads", destination="uploads-s3", **options
            )
        return migrate(engine, Base, source="uploads", destination="uploads-s3", **options)

    # 0. today: local files only
    storages.register_backend(local)
    for n in range(1, 6):
        app_writes(n)
    # 1. write to both: the application's backend key now names a mirror
    storages.register_backend(MirrorBackend("uploads", local, [s3]), replace=True)
    storages.register_backend(s3)
    for n in range(6, 9):
        app_writes(n)
    mirrored = list(range(6, 9))
    # 2. backfill while the application keeps writing
    during = iter(range(100, 103))

    def keep_writing(progress: Any) -> None:
        n = next(during, None)
        if n is not None:
            app_writes(n)

    report = await run_migrate(batch_size=2, progress=keep_writing)
    assert report.ok, report.as_dict()
    assert report.objects_skipped >= len(mirrored)  # the mirror had written those already
    # 3. flip: S3 becomes the primary (local kept as a mirror, to roll back if needed)
    storages.register_backend(MirrorBackend("uploads", s3, [local]), replace=True)
    app_writes(200)
    final = await run_migrate()
    assert final.ok
    assert final.objects_copied == 0  # everything was in S3 already
    # every row now names the S3 backend and reads its bytes from S3
    with Session(sync_engine) as session:
        rows = {a.id: a.file for a in session.scalars(select(Attachment))}
    assert set(rows) == set(written)
    for n, file in rows.items():
        assert file is not None
        assert file.backend == "uploads-s3"
        assert s3.get_bytes(file.path or "") == written[n]
        assert file.get_content() == written[n]
    assert verify_references(sync_engine, Base, check_checksums=True).ok
    # 4. the local files can go once the team is confident
    storages.register_backend(local, replace=True)
    cleanup = await run_migrate(delete_source=True)
    assert cleanup.ok
    assert cleanup.objects_deleted == len(written)
    assert list(local.list_objects()) == []


# -- overlay ------------------------------------------------------------------------------
@pytest.fixture
def production() -> ObstoreBackend:
    base = ObstoreBackend("uploads", "memory://")
    for name in ("a.txt", "b.txt", "c.txt"):
        base.put(f"data/{name}", name.encode())
    return base


def read_only(base: Backend) -> FaultInjectingBackend:
    """The base, failing every write: the overlay must never write to it."""
    guarded = FaultInjectingBackend(base)
    for operation in ("put", "delete", "copy"):
        guarded.fail(operation, probability=1.0, times=10**6, message="base written")
    return guarded


def test_staging_writes_never_touch_the_base(production: ObstoreBackend) -> None:
    guarded = read_only(production)
    staging_store = ObstoreBackend("staging", "memory://")
    staging = OverlayBackend("uploads", guarded, staging_store)
    staging.put("data/a.txt", b"changed in staging")
    staging.put("data/new.txt", b"new")
    staging.copy("data/b.txt", "data/b-copy.txt")
    staging.delete(["data/c.txt", "data/new.txt"])
    assert guarded.injected == []
    assert guarded.calls["put"] == guarded.calls["delete"] == guarded.calls["copy"] == 0
    assert staging.get_bytes("data/a.txt") == b"changed in staging"
    assert staging.get_bytes("data/b-copy.txt") == b"b.txt"
    assert production.get_bytes("data/a.txt") == b"a.txt"
    assert production.get_bytes("data/c.txt") == b"c.txt"
    assert not production.exists("data/b-copy.txt")
    assert [i.path for i in staging.list_objects("data")] == [
        "data/a.txt",
        "data/b-copy.txt",
        "data/b.txt",
    ]
    assert staging.head("data/a.txt").size == len(b"changed in staging")


@pytest.mark.parametrize("overlay_kind", ["memory", "local"])
async def test_deletes_hide_base_objects_and_persist(
    production: ObstoreBackend, overlay_kind: str, tmp_path: Path
) -> None:
    staging_store = (
        ObstoreBackend("staging", "memory://")
        if overlay_kind == "memory"
        else _local("staging", tmp_path)
    )
    staging = OverlayBackend("uploads", read_only(production), staging_store)
    await staging.delete_async("data/b.txt")
    staging.delete("data/never-existed.txt")
    for view in (staging, OverlayBackend("uploads", production, staging_store)):  # a restart
        assert not view.exists("data/b.txt")
        assert not await view.exists_async("data/b.txt")
        with pytest.raises(ObjectNotFoundError):
            view.get_bytes("data/b.txt")
        with pytest.raises(ObjectNotFoundError):
            await view.head_async("data/b.txt")
        with pytest.raises(ObjectNotFoundError):
            list(view.iter_chunks("data/b.txt"))
        assert [i.path for i in view.list_objects()] == ["data/a.txt", "data/c.txt"]
        assert [i.path async for i in view.list_objects_async("data")] == [
            "data/a.txt",
            "data/c.txt",
        ]
    assert production.get_bytes("data/b.txt") == b"b.txt"
    tombstones = [i.path for i in staging_store.list_objects()]
    assert tombstones == [f"{TOMBSTONE_PREFIX}/data/b.txt"]  # only base objects get one
    # writing the path again brings it back, with the new content
    await staging.put_async("data/b.txt", b"again")
    assert staging.get_bytes("data/b.txt") == b"again"
    assert [i.path for i in staging_store.list_objects()] == ["data/b.txt"]


@pytest.mark.parametrize("overlay_kind", ["memory", "local"])
async def test_an_overlay_with_a_prefix_writes_and_deletes_only_under_it(
    overlay_kind: str, tmp_path: Path
) -> None:
    """Both backends with a prefix, as the docs show them (docs/how-to/sandbox.md): the
    tombstones live below the overlay's prefix, because a backend never deletes outside
    it, and lifting one (writing the path again) is such a delete."""
    production = ObstoreBackend("production", "memory://", prefix="uploads")
    for name in ("a.txt", "b.txt"):
        production.put(f"uploads/{name}", name.encode())
    staging_store = (
        ObstoreBackend("staging", "memory://", prefix="uploads")
        if overlay_kind == "memory"
        else ObstoreBackend("staging", tmp_path / "staging", prefix="uploads")
    )
    staging = OverlayBackend("uploads", read_only(production), staging_store)

    await staging.delete_async("uploads/a.txt")
    assert [i.path for i in staging_store.list_objects()] == [
        f"uploads/{TOMBSTONE_PREFIX}/uploads/a.txt"
    ]
    assert not staging.exists("uploads/a.txt")
    assert [i.path for i in staging.list_objects("uploads")] == ["uploads/b.txt"]
    assert [i.path async for i in staging.list_objects_async()] == ["uploads/b.txt"]

    staging.put("uploads/a.txt", b"again")  # lifts the tombstone: a delete below the prefix
    assert staging.get_bytes("uploads/a.txt") == b"again"
    assert [i.path for i in staging_store.list_objects()] == ["uploads/a.txt"]

    with storages.temporary(staging):  # files saved and deleted through the overlay
        saved = FileObject(filename="new.txt", content=b"new", backend="uploads")
        await saved.save_async()
        assert saved.path is not None
        assert saved.path.startswith("uploads/")
        assert staging_store.get_bytes(saved.path) == b"new"
        await saved.delete_async()
    assert not staging_store.exists(saved.path)
    assert production.get_bytes("uploads/a.txt") == b"a.txt"  # the base: never written


async def test_staging_session_over_production_rows(
    production: ObstoreBackend, sqlite_engine: Engine
) -> None:
    """A staging app replaces a production file: production keeps it, staging hides it."""
    _Base.metadata.create_all(sqlite_engine)
    original = FileObject(backend=KEY, path="data/a.txt", size=5, filename="a.txt")
    with Session(sqlite_engine) as session:  # the row, as copied from production
        session.add(Doc(id=1, file=original))
        session.commit()
    staging_store = ObstoreBackend("staging", "memory://")
    storages.register_backend(OverlayBackend(KEY, read_only(production), staging_store))
    with Session(sqlite_engine, expire_on_commit=False) as session:
        doc = session.get(Doc, 1)
        assert doc is not None
        assert doc.file is not None
        assert doc.file.get_content() == b"a.txt"
        doc.file = FileObject(filename="a2.txt", content=b"staging version")
        session.commit()
    assert doc.file.path is not None
    assert staging_store.get_bytes(doc.file.path) == b"staging version"
    assert not storages.get_backend(KEY).exists("data/a.txt")  # deleted, for staging
    assert production.get_bytes("data/a.txt") == b"a.txt"  # untouched
    with Session(sqlite_engine) as session:
        raw = session.execute(select(type_coerce(Doc.__table__.c.file, JSON))).scalar_one()
    assert raw["path"] == doc.file.path


class _Signer:
    """A stand-in URL signer that says which backend signed what."""

    def sign_url(self, backend: str, path: str, *, method: str, expires_in: timedelta) -> str:
        return f"https://{backend}.example/{path}?method={method}"


async def test_overlay_signs_reads_where_the_object_is_and_writes_in_the_overlay() -> None:
    base = ObstoreBackend("base", "memory://", url_signer=_Signer())
    base.put("data/a.txt", b"a")
    overlay = ObstoreBackend("overlay", "memory://", url_signer=_Signer())
    staging = OverlayBackend("uploads", base, overlay)
    staging.put("data/b.txt", b"b")
    assert staging.supports_signing
    assert staging.sign("data/a.txt").startswith("https://base.example/")
    assert staging.sign(["data/b.txt"]) == ["https://overlay.example/data/b.txt?method=GET"]
    for method in ("PUT", "DELETE"):  # never a signed write against the base
        signed = await staging.sign_async("data/a.txt", method=method)  # type: ignore[arg-type]
        assert signed.startswith("https://overlay.example/")
    staging.delete("data/a.txt")
    with pytest.raises(ObjectNotFoundError):
        staging.sign("data/a.txt")


async def test_overlay_create_only_sees_base_objects(production: ObstoreBackend) -> None:
    staging = OverlayBackend("uploads", read_only(production), ObstoreBackend("s", "memory://"))
    with pytest.raises(ObjectExistsError):
        staging.put("data/a.txt", b"x", create_only=True)
    with pytest.raises(ObjectExistsError):
        await staging.put_async("data/a.txt", b"x", create_only=True)
    staging.put("data/fresh.txt", b"x", create_only=True)
    assert staging.get_bytes("data/a.txt") == b"a.txt"


@pytest.mark.parametrize("strict", [True, False])
async def test_mirror_delete_failures(
    strict: bool, flaky_mirror: tuple[ObstoreBackend, FaultInjectingBackend]
) -> None:
    primary, flaky = flaky_mirror
    mirror = MirrorBackend(KEY, primary, [flaky], strict=strict)
    mirror.put("a.txt", b"a")
    mirror.put("b.txt", b"b")
    flaky.fail("delete", times=2)
    if strict:
        with pytest.raises(InjectedFault):
            mirror.delete("a.txt")
        with pytest.raises(InjectedFault):
            await mirror.delete_async(["b.txt"])
    else:
        mirror.delete("a.txt")
        await mirror.delete_async(["b.txt"])
        assert mirror.mirror_failures == 2
    # the primary was cleaned up either way; the mirror still holds both
    assert not primary.exists("a.txt")
    assert not primary.exists("b.txt")
    assert flaky.inner.exists("a.txt")
    assert flaky.inner.exists("b.txt")


async def test_mirror_create_only_refusal_changes_nothing(tmp_path: Path) -> None:
    primary, mirror = ObstoreBackend("p", "memory://"), _local("m", tmp_path)
    mirrored = MirrorBackend(KEY, primary, [mirror])
    mirrored.put("a.txt", b"original")
    with pytest.raises(ObjectExistsError):
        mirrored.put("a.txt", b"other", create_only=True)
    with pytest.raises(ObjectExistsError):
        await mirrored.put_async("a.txt", b"other", create_only=True)
    assert primary.get_bytes("a.txt") == b"original"
    assert mirror.get_bytes("a.txt") == b"original"
    await mirrored.put_async("b.txt", b"new", create_only=True)
    assert mirror.get_bytes("b.txt") == b"new"
