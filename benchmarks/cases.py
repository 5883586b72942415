"""The in-process benchmark cases: each measures our library against raw obstore.

Every case function takes a `Context` and returns one `Result`. Work per round is `n`
operations; `ours` and `raw` get fresh keys every round, so no round overwrites or
re-reads an earlier one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store
from sqlalchemy import JSON, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from timing import Pair, measure, measure_async

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages

PAYLOAD = b"x" * 1024
SIGN_EXPIRY = timedelta(hours=1)


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


@dataclass
class Context:
    n: int
    rounds: int
    workdir: Path
    s3_kwargs: dict[str, Any] | None = None  # S3Store kwargs of the running moto server


def _ops(case: str, pair: Pair, n: int, notes: str = "") -> Result:
    return Result(case, "ops/s", n / pair.ours, n / pair.raw, pair.ours / pair.raw, notes)


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

            return _ops(f"save/{target}/sync", measure(ours, raw, ctx.rounds), n, note)

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

            pair = asyncio.run(measure_async(ours, raw, ctx.rounds))
            return _ops(f"save/{target}/async-seq", pair, n, note)

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

            pair = asyncio.run(measure_async(ours, raw, ctx.rounds))
            return _ops(f"save/{target}/async-gather", pair, n, note)

        yield f"save/{target}/sync", sync
        yield f"save/{target}/async-seq", seq
        yield f"save/{target}/async-gather", conc


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

        if not select_case:
            pair = await measure_async(ours_insert, raw_insert, ctx.rounds)
        else:
            await ours_insert(0)
            await raw_insert(0)

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

            pair = await measure_async(ours_select, raw_select, ctx.rounds)
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
        )

    def select_() -> Result:
        return _ops("orm/select+filename", asyncio.run(run(True)), n, "raw = plain JSON column")

    def insert_pg() -> Result:
        url = _postgres_url()
        if url is None:
            raise SkipCase("PostgreSQL (asyncpg) not reachable at " + PG_URL)
        return _ops(
            "orm/insert+commit/asyncpg",
            asyncio.run(run(False, url)),
            n,
            "PostgreSQL; memory store; raw = JSONB column + gathered put_async",
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

        return _ops(
            "sign/single",
            measure(ours, raw, ctx.rounds, prepare=load),
            n,
            "first sign() of files just loaded",
        )

    def single_built() -> Result:
        store, _, paths = setup()

        def ours(r: int) -> None:
            for p in paths:
                FileObject(filename="a.bin", path=p, backend="bench-sign").sign()

        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        return _ops(
            "sign/single+build",
            measure(ours, raw, ctx.rounds),
            n,
            "FileObject built and signed each time",
        )

    def batch() -> Result:
        store, backend, paths = setup()

        def ours(r: int) -> None:
            backend.sign(paths, expires_in=SIGN_EXPIRY)

        def raw(r: int) -> None:
            obstore.sign(store, "GET", paths, SIGN_EXPIRY)

        return _ops("sign/batch", measure(ours, raw, ctx.rounds), n, "Backend.sign(list)")

    def cached() -> Result:
        store, _, paths = setup()
        files = [FileObject(filename="a.bin", path=p, backend="bench-sign") for p in paths]

        def ours(r: int) -> None:
            for f in files:
                f.sign()

        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        return _ops(
            "sign/cached", measure(ours, raw, ctx.rounds), n, "same FileObjects, URL cache hit"
        )

    def async_() -> Result:
        store, _, paths = setup()

        async def ours(r: int) -> None:
            for p in paths:
                await FileObject(filename="a.bin", path=p, backend="bench-sign").sign_async()

        async def raw(r: int) -> None:
            for p in paths:
                await obstore.sign_async(store, "GET", p, SIGN_EXPIRY)

        pair = asyncio.run(measure_async(ours, raw, ctx.rounds))
        return _ops("sign/async", pair, n, "sequential, fresh FileObject each")

    yield "sign/single", single
    yield "sign/single+build", single_built
    yield "sign/batch", batch
    yield "sign/cached", cached
    yield "sign/async", async_


def all_cases(ctx: Context) -> list[tuple[str, Callable[[], Result]]]:
    return [*save_cases(ctx), *orm_cases(ctx), *sign_cases(ctx)]
