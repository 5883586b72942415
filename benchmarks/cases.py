"""The in-process benchmark cases: each measures our library against raw obstore.

Every case function takes a `Context` and returns one `Result`. Work per round is `n`
operations; `ours` and `raw` get fresh keys every round, so no round overwrites or
re-reads an earlier one. When advanced-alchemy is installed, its file objects (the
"peer") do the same work in the same rounds, under their own keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store
from sqlalchemy import JSON, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from timing import Pair, measure, measure_async

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, sign_files, storages

try:  # the peer: advanced-alchemy's file objects, measured only when it is installed
    from advanced_alchemy._listeners import _active_file_operations as _aa_uploads
    from advanced_alchemy.config import AsyncSessionConfig, SQLAlchemyAsyncConfig
    from advanced_alchemy.types.file_object import FileObject as AAFileObject
    from advanced_alchemy.types.file_object import StoredObject as AAStoredObject
    from advanced_alchemy.types.file_object import storages as aa_storages
    from advanced_alchemy.types.file_object.backends.obstore import (
        ObstoreBackend as AAObstoreBackend,
    )
except ImportError:
    PEER_VERSION: str | None = None
else:
    PEER_VERSION = importlib.metadata.version("advanced-alchemy")

PAYLOAD = b"x" * 1024
SIGN_EXPIRY = timedelta(hours=1)
F = TypeVar("F", bound=Callable[..., Any])


class SkipCase(Exception):
    """A case that cannot run here (a server is missing); the runner notes and skips it."""


@dataclass
class Result:
    case: str
    unit: str  # "ops/s" or "MB/s"
    ours_rate: float
    raw_rate: float
    ratio: float  # ours time / raw time: lower is better, 1.0 = same speed
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    peer_rate: float | None = None  # advanced-alchemy, when installed and comparable
    peer_ratio: float | None = None  # peer time / raw time


@dataclass
class Context:
    n: int
    rounds: int
    workdir: Path
    s3_kwargs: dict[str, Any] | None = None  # S3Store kwargs of the running moto server


def _ops(case: str, pair: Pair, n: int, notes: str = "", peer_notes: str = "") -> Result:
    """An ops/s result; `peer_notes` (how the peer's work differs) only when it was measured."""
    result = Result(case, "ops/s", n / pair.ours, n / pair.raw, pair.ours / pair.raw, notes)
    if pair.peer is not None:
        result.peer_rate, result.peer_ratio = n / pair.peer, pair.peer / pair.raw
        if peer_notes:
            result.notes = f"{notes}; aa: {peer_notes}" if notes else f"aa: {peer_notes}"
    return result


def _peer(key: str, store: Any, fn: F) -> F | None:
    """`fn` with an advanced-alchemy backend `key` on `store`; `None` without advanced-alchemy."""
    if PEER_VERSION is None:
        return None
    aa_storages.register_backend(AAObstoreBackend(key, store))
    return fn


def _aa_file(backend: str, path: str, content: bytes | None = None) -> Any:
    """An advanced-alchemy FileObject: the caller picks its (unique) path, the name is the path."""
    return AAFileObject(backend=backend, filename=path, content=content)


# --------------------------------------------------------------------------- save N x 1 KiB


def _targets(ctx: Context) -> Iterator[tuple[str, Callable[[], Any], str]]:
    """(name, store factory, note) for every place the save cases write to."""
    yield "memory", MemoryStore, ""
    shm = Path("/dev/shm")
    if shm.is_dir():
        yield "local-tmpfs", lambda: _local(Path(tempfile.mkdtemp(dir=shm))), "/dev/shm"
    yield "local-disk", lambda: _local(Path(tempfile.mkdtemp(dir=ctx.workdir))), ""
    if ctx.s3_kwargs is not None:
        kwargs = ctx.s3_kwargs
        yield "s3", lambda: S3Store(**kwargs), "moto on 127.0.0.1"


def _local(path: Path) -> LocalStore:
    return LocalStore(path, mkdir=True)


def _backend(key: str, store: Any) -> ObstoreBackend:
    backend = ObstoreBackend(key, store)
    storages.register_backend(backend, replace=True)
    return backend


SAVE_PEER_NOTES = "put + HEAD each, key made by the caller, no checksum"


def save_cases(ctx: Context) -> Iterator[tuple[str, Callable[[], Result]]]:
    n = ctx.n
    for target, factory, note in _targets(ctx):

        def sync(
            target: str = target, factory: Callable[[], Any] = factory, note: str = note
        ) -> Result:
            store = factory()
            _backend(f"bench-{target}", store)

            def ours(r: int) -> None:
                for _ in range(n):
                    FileObject(filename="a.bin", content=PAYLOAD, backend=f"bench-{target}").save()

            def raw(r: int) -> None:
                for i in range(n):
                    obstore.put(store, f"raw/sync/{r}/{i}", PAYLOAD)

            def aa(r: int) -> None:
                for i in range(n):
                    _aa_file(f"aa-{target}", f"aa/sync/{r}/{i}.bin", PAYLOAD).save()

            pair = measure(ours, raw, ctx.rounds, peer=_peer(f"aa-{target}", store, aa))
            return _ops(f"save/{target}/sync", pair, n, note, SAVE_PEER_NOTES)

        def seq(
            target: str = target, factory: Callable[[], Any] = factory, note: str = note
        ) -> Result:
            store = factory()
            _backend(f"bench-{target}", store)

            async def ours(r: int) -> None:
                for _ in range(n):
                    f = FileObject(filename="a.bin", content=PAYLOAD, backend=f"bench-{target}")
                    await f.save_async()

            async def raw(r: int) -> None:
                for i in range(n):
                    await obstore.put_async(store, f"raw/seq/{r}/{i}", PAYLOAD)

            async def aa(r: int) -> None:
                for i in range(n):
                    await _aa_file(f"aa-{target}", f"aa/seq/{r}/{i}.bin", PAYLOAD).save_async()

            peer = _peer(f"aa-{target}", store, aa)
            pair = asyncio.run(measure_async(ours, raw, ctx.rounds, peer))
            return _ops(f"save/{target}/async-seq", pair, n, note, SAVE_PEER_NOTES)

        def conc(
            target: str = target, factory: Callable[[], Any] = factory, note: str = note
        ) -> Result:
            store = factory()
            _backend(f"bench-{target}", store)

            async def ours(r: int) -> None:
                files = [
                    FileObject(filename="a.bin", content=PAYLOAD, backend=f"bench-{target}")
                    for _ in range(n)
                ]
                await asyncio.gather(*(f.save_async() for f in files))

            async def raw(r: int) -> None:
                await asyncio.gather(
                    *(obstore.put_async(store, f"raw/conc/{r}/{i}", PAYLOAD) for i in range(n))
                )

            async def aa(r: int) -> None:
                files = [
                    _aa_file(f"aa-{target}", f"aa/conc/{r}/{i}.bin", PAYLOAD) for i in range(n)
                ]
                await asyncio.gather(*(f.save_async() for f in files))

            peer = _peer(f"aa-{target}", store, aa)
            pair = asyncio.run(measure_async(ours, raw, ctx.rounds, peer))
            return _ops(f"save/{target}/async-gather", pair, n, note, SAVE_PEER_NOTES)

        yield f"save/{target}/sync", sync
        yield f"save/{target}/async-seq", seq
        yield f"save/{target}/async-gather", conc
    yield "save/memory/sync-floor", _save_floor(ctx)


def _save_floor(ctx: Context) -> Callable[[], Result]:
    """What a sync save to memory cannot do without, written inline with no library code.

    A fresh random key, the SHA-256 of the content, the content type and disposition
    stored with the object, and a PUT that refuses to overwrite: the work behind the
    guarantees of `FileObject.save()`, and so the lowest ratio any implementation of
    them can reach against a bare `put`. It shows how far the target of 2x is from it.
    """
    n = ctx.n
    attributes = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="a.bin"',
    }

    def case() -> Result:
        store = MemoryStore()

        def ours(r: int) -> None:
            randomness = os.urandom(16 * n).hex()  # one system call for the round's keys
            for i in range(n):
                key = f"{randomness[32 * i : 32 * i + 32]}/a.bin"
                checksum = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
                result = obstore.put(store, key, PAYLOAD, mode="create", attributes=attributes)
                assert checksum
                assert result["e_tag"]

        def raw(r: int) -> None:
            for i in range(n):
                obstore.put(store, f"raw/floor/{r}/{i}", PAYLOAD)

        return _ops(
            "save/memory/sync-floor",
            measure(ours, raw, ctx.rounds),
            n,
            "no library code: random key, SHA-256, attributes, create-only put, inline",
        )

    return case


# --------------------------------------------------------------------------- ORM (aiosqlite)


class _Base(DeclarativeBase):
    pass


class _Doc(_Base):
    __tablename__ = "bench_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("bench-orm"))


class _RawDoc(_Base):
    __tablename__ = "bench_raw_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    # JSONB on PostgreSQL, like StoredObject itself
    file: Mapped[dict[str, Any] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))


if PEER_VERSION is not None:

    class _AADoc(_Base):
        __tablename__ = "bench_aa_docs"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[AAFileObject | None] = mapped_column(AAStoredObject("aa-orm"))


def _aa_sessions(engine: Any) -> Callable[[], Any]:
    """advanced-alchemy's own session maker: its listener queues files on flush and uploads
    them (gathered) in a task it starts after the commit."""
    config = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        enable_touch_updated_timestamp_listener=False,
    )
    return config.create_session_maker()


async def _aa_uploaded() -> None:
    """Wait for the upload tasks advanced-alchemy started after a commit (it does not await
    them, and it only logs their errors: `_check_aa_orm` counts the objects)."""
    await asyncio.gather(*list(_aa_uploads))


def _check_aa_orm(store: Any, expected: int) -> None:
    stored = sum(len(page) for page in obstore.list(store, "aa/orm/"))
    if stored != expected:
        raise RuntimeError(f"advanced-alchemy stored {stored} of {expected} ORM files")


ORM_PEER_NOTES = (
    "uploads (put + HEAD each, gathered) run in a task after the commit, awaited here; "
    "the row keeps no size/etag"
)


PG_URL = os.environ.get("SQLALCHEMY_OBSTORE_PG", "postgres@127.0.0.1:5432")


def _postgres_url() -> str | None:
    """An asyncpg URL of the test database when PostgreSQL answers there, else `None`."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return None
    url = f"postgresql+asyncpg://{PG_URL}/test"

    async def probe() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except Exception:
        return None
    return url


def _column_document(path: str, result: Any) -> dict[str, Any]:
    """What raw code stores to keep what a StoredObject column keeps (the same JSON)."""
    return {
        "v": 1,
        "backend": "bench-orm",
        "path": path,
        "filename": "a.bin",
        "content_type": "application/octet-stream",
        "size": len(PAYLOAD),
        "etag": result["e_tag"],
        "version": result.get("version"),
        "checksum": "sha256:" + hashlib.sha256(PAYLOAD).hexdigest(),
        "last_modified": datetime.now(timezone.utc).isoformat(),
        "metadata": {},
    }


def orm_cases(ctx: Context) -> Iterator[tuple[str, Callable[[], Result]]]:
    n = ctx.n

    async def run(select_case: bool, url: str | None = None) -> Pair:
        store = MemoryStore()
        _backend("bench-orm", store)
        base, doc, raw_doc = _Base, _Doc, _RawDoc
        db = tempfile.mktemp(suffix=".db", dir=ctx.workdir)
        engine = create_async_engine(url or f"sqlite+aiosqlite:///{db}")
        async with engine.begin() as conn:
            await conn.run_sync(base.metadata.drop_all)
            await conn.run_sync(base.metadata.create_all)
        session_factory = async_sessionmaker(engine, expire_on_commit=False)
        aa_sessions = _aa_sessions(engine) if PEER_VERSION is not None else None

        async def ours_insert(r: int) -> None:
            async with session_factory() as session:
                session.add_all(
                    doc(file=FileObject(filename="a.bin", content=PAYLOAD)) for _ in range(n)
                )
                await session.commit()

        async def raw_insert(r: int) -> None:
            paths = [f"raw/orm/{r}/{i}" for i in range(n)]
            results = await asyncio.gather(*(obstore.put_async(store, p, PAYLOAD) for p in paths))
            async with session_factory() as session:
                session.add_all(
                    raw_doc(file=_column_document(p, res))
                    for p, res in zip(paths, results, strict=True)
                )
                await session.commit()

        async def aa_insert(r: int) -> None:
            assert aa_sessions is not None
            async with aa_sessions() as session:
                session.add_all(
                    _AADoc(file=_aa_file("aa-orm", f"aa/orm/{r}/{i}.bin", PAYLOAD))
                    for i in range(n)
                )
                await session.commit()
            await _aa_uploaded()

        peer_insert = _peer("aa-orm", store, aa_insert)
        if not select_case:
            pair = await measure_async(ours_insert, raw_insert, ctx.rounds, peer_insert)
            if peer_insert is not None:
                _check_aa_orm(store, (ctx.rounds + 1) * n)
        else:
            await ours_insert(0)
            await raw_insert(0)
            if peer_insert is not None:
                await peer_insert(0)

            async def ours_select(r: int) -> None:
                async with session_factory() as session:
                    rows = (await session.scalars(select(doc))).all()
                    names = [row.file.filename for row in rows]
                    assert len(names) == n

            async def raw_select(r: int) -> None:
                async with session_factory() as session:
                    rows = (await session.scalars(select(raw_doc))).all()
                    names = [row.file["filename"] for row in rows]
                    assert len(names) == n

            async def aa_select(r: int) -> None:
                assert aa_sessions is not None
                async with aa_sessions() as session:
                    rows = (await session.scalars(select(_AADoc))).all()
                    names = [row.file.filename for row in rows]
                    assert len(names) == n

            peer = aa_select if peer_insert is not None else None
            pair = await measure_async(ours_select, raw_select, ctx.rounds, peer)
        async with engine.begin() as conn:
            await conn.run_sync(base.metadata.drop_all)
        await engine.dispose()
        return pair

    def insert() -> Result:
        return _ops(
            "orm/insert+commit",
            asyncio.run(run(False)),
            n,
            "memory store; raw = JSON column + gathered put_async",
            ORM_PEER_NOTES,
        )

    def select_() -> Result:
        return _ops(
            "orm/select+filename",
            asyncio.run(run(True)),
            n,
            "raw = plain JSON column",
            "StoredObject (JSON) rows",
        )

    def insert_pg() -> Result:
        url = _postgres_url()
        if url is None:
            raise SkipCase("PostgreSQL (asyncpg) not reachable at " + PG_URL)
        return _ops(
            "orm/insert+commit/asyncpg",
            asyncio.run(run(False, url)),
            n,
            "PostgreSQL; memory store; raw = JSONB column + gathered put_async",
            ORM_PEER_NOTES,
        )

    def select_pg() -> Result:
        url = _postgres_url()
        if url is None:
            raise SkipCase("PostgreSQL (asyncpg) not reachable at " + PG_URL)
        return _ops(
            "orm/select+filename/asyncpg",
            asyncio.run(run(True, url)),
            n,
            "PostgreSQL; raw = plain JSONB column",
            "StoredObject (JSONB) rows",
        )

    yield "orm/insert+commit", insert
    yield "orm/select+filename", select_
    yield "orm/insert+commit/asyncpg", insert_pg
    yield "orm/select+filename/asyncpg", select_pg


# --------------------------------------------------------------------------- signing


def _sign_store() -> S3Store:
    """An S3 store with static fake credentials: signing is pure CPU, no request is made."""
    return S3Store(
        "bench-bucket",
        endpoint="http://127.0.0.1:9",
        access_key_id="AKIDBENCHMARK",
        secret_access_key="bench-secret",
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def sign_cases(ctx: Context) -> Iterator[tuple[str, Callable[[], Result]]]:
    n = ctx.n

    def setup() -> tuple[S3Store, ObstoreBackend, list[str]]:
        store = _sign_store()
        backend = _backend("bench-sign", store)
        return store, backend, [f"objects/{i:06d}.bin" for i in range(n)]

    def aa_files(paths: list[str]) -> list[Any]:
        """advanced-alchemy files as loaded from rows (its FileObject is its path)."""
        return [_aa_file("aa-sign", p) for p in paths]

    def single() -> Result:
        store, _, paths = setup()
        # What an application signs: files it has just loaded from rows, each signed
        # for the first time. Every round gets new files, built untimed right before
        # the round (building them is the SELECT case's cost, not signing's).
        files: list[FileObject] = []

        def load(r: int) -> None:
            files[:] = [FileObject(filename="a.bin", path=p, backend="bench-sign") for p in paths]

        def ours(r: int) -> None:
            for f in files:
                f.sign()

        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        peer_files: list[Any] = []

        def aa_load(r: int) -> None:
            peer_files[:] = aa_files(paths)

        def aa(r: int) -> None:
            for f in peer_files:
                f.sign()

        peer = _peer("aa-sign", store, aa)
        pair = measure(ours, raw, ctx.rounds, prepare=load, peer=peer, prepare_peer=aa_load)
        return _ops("sign/single", pair, n, "first sign() of files just loaded")

    def single_built() -> Result:
        store, _, paths = setup()

        def ours(r: int) -> None:
            for p in paths:
                FileObject(filename="a.bin", path=p, backend="bench-sign").sign()

        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        def aa(r: int) -> None:
            for p in paths:
                _aa_file("aa-sign", p).sign()

        return _ops(
            "sign/single+build",
            measure(ours, raw, ctx.rounds, peer=_peer("aa-sign", store, aa)),
            n,
            "FileObject built and signed each time",
        )

    def batch() -> Result:
        store, backend, paths = setup()

        def ours(r: int) -> None:
            backend.sign(paths, expires_in=SIGN_EXPIRY)

        def raw(r: int) -> None:
            obstore.sign(store, "GET", paths, SIGN_EXPIRY)

        def aa(r: int) -> None:
            aa_storages.get_backend("aa-sign").sign(paths)

        return _ops(
            "sign/batch",
            measure(ours, raw, ctx.rounds, peer=_peer("aa-sign", store, aa)),
            n,
            "Backend.sign(list)",
            "ObstoreBackend.sign(list)",
        )

    def files() -> Result:
        store, _, paths = setup()
        loaded: list[FileObject] = []

        def load(r: int) -> None:
            loaded[:] = [FileObject(filename="a.bin", path=p, backend="bench-sign") for p in paths]

        def ours(r: int) -> None:
            sign_files(loaded, expires_in=SIGN_EXPIRY)

        def raw(r: int) -> None:
            obstore.sign(store, "GET", paths, SIGN_EXPIRY)

        return _ops(
            "sign/files",
            measure(ours, raw, ctx.rounds, prepare=load),
            n,
            "sign_files() of files just loaded; raw = obstore.sign(list)",
        )

    def cached() -> Result:
        store, _, paths = setup()
        files = [FileObject(filename="a.bin", path=p, backend="bench-sign") for p in paths]

        def ours(r: int) -> None:
            for f in files:
                f.sign()

        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        peer_files = aa_files(paths)

        def aa(r: int) -> None:
            for f in peer_files:
                f.sign()

        return _ops(
            "sign/cached",
            measure(ours, raw, ctx.rounds, peer=_peer("aa-sign", store, aa)),
            n,
            "same FileObjects, URL cache hit",
            "no URL cache, signs every time",
        )

    def async_() -> Result:
        store, _, paths = setup()

        async def ours(r: int) -> None:
            for p in paths:
                await FileObject(filename="a.bin", path=p, backend="bench-sign").sign_async()

        async def raw(r: int) -> None:
            for p in paths:
                await obstore.sign_async(store, "GET", p, SIGN_EXPIRY)

        async def aa(r: int) -> None:
            for p in paths:
                await _aa_file("aa-sign", p).sign_async()

        pair = asyncio.run(measure_async(ours, raw, ctx.rounds, _peer("aa-sign", store, aa)))
        return _ops("sign/async", pair, n, "sequential, fresh FileObject each")

    yield "sign/single", single
    yield "sign/single+build", single_built
    yield "sign/batch", batch
    yield "sign/files", files
    yield "sign/cached", cached
    yield "sign/async", async_


def all_cases(ctx: Context) -> list[tuple[str, Callable[[], Result]]]:
    return [*save_cases(ctx), *orm_cases(ctx), *sign_cases(ctx)]
