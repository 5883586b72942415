"""The in-process benchmark cases: our library against raw obstore doing the same work.

Every case function returns one `Result`: the per-round wall and CPU times of each of
its contenders, measured by `timing.measure` (rotating order, one warm-up round).
The contenders, by name:

- ``ours``: sqlalchemy-obstore.
- ``raw``: raw obstore doing the same operations in the cheapest correct way for the
  store and the calling context. Inside a coroutine that means obstore's *sync* call on
  a `MemoryStore` (it never blocks: the library takes the same shortcut) and the
  ``*_async`` call on a store that does I/O.
- ``same``: raw obstore doing the same *work* as ours, the floor of its guarantees: a
  random key laid out as ours (`<32 hex>/a.bin`, one directory per object on a local
  store), the SHA-256 of the content, a create-only PUT, and the content type and
  disposition stored with the object (on stores that keep attributes; ours sends none
  to a local store either). No library code.
- ``bridge``: raw obstore through its async runtime (``put_async``/``sign_async``)
  where ``raw`` uses the sync call: the baseline of earlier rounds, kept as a second
  column because the library skips that round trip.
- ``aa``: advanced-alchemy's file objects, when it is installed.

Work per round is `n` operations (`fast_n`, at least 10,000, for cases that take a
few microseconds each); every contender writes fresh keys every round.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import obstore
from obstore.store import LocalStore, MemoryStore, S3Store
from sqlalchemy import JSON, Integer, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, mapped_column
from timing import Samples, measure, measure_async

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
FILENAME = "a.bin"
#: What ours stores with a 1 KiB `a.bin` on stores that keep attributes.
ATTRIBUTES = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": f'attachment; filename="{FILENAME}"',
}
SIGN_EXPIRY = timedelta(hours=1)
#: Uploads in flight during a flush (the library's `DEFAULT_UPLOAD_CONCURRENCY`); the raw
#: ORM baselines on a network store keep the same number in flight.
FLUSH_CONCURRENCY = 8
F = TypeVar("F", bound=Callable[..., Any])
#: Prefix of this process's raw, bridge and peer keys: servers outlive a case, and no
#: case may overwrite (or count) another one's objects.
TAG = os.urandom(4).hex()


class SkipCase(Exception):
    """A case that cannot run here (a server is missing); the runner notes and skips it."""


@dataclass
class Result:
    """Per-round times of every contender of one case (see `report.py` for the ratios)."""

    case: str
    unit: str  # "ops/s" or "MiB/s"
    ops: int  # operations (or MiB) per round
    contenders: dict[str, dict[str, Any]]
    """name -> {"label": what it does, "wall": [s per round], "cpu": [s per round]}."""
    notes: str = ""
    cpu_scope: str = ""
    """Whose CPU time the CPU column leaves out (a server process), "" when none."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    n: int  # operations per round, cases that take >= 10 microseconds each
    fast_n: int  # operations per round, cases under 10 microseconds each
    rounds: int
    workdir: Path
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """S3Store kwargs of each running S3 server, by name ("moto", "seaweed")."""
    pg_url: str | None = None  # asyncpg URL of the run's private PostgreSQL database
    orm_sizes: tuple[int, ...] = (100, 1000, 10_000)
    orm_rows: int = 1000  # rows per round at least: a round makes ceil(orm_rows / N) commits
    select_n: int = 1000  # rows per SELECT
    select_reads: int = 10_000  # rows read per round at least (repeated SELECTs)


SERVER_NOTES = {
    "moto": "moto (Python, single-threaded) on 127.0.0.1",
    "seaweed": "SeaweedFS `weed mini` on 127.0.0.1 (checks SigV4)",
}


def _result(
    case: str,
    samples: dict[str, Samples],
    labels: dict[str, str],
    ops: int,
    notes: str = "",
    cpu_scope: str = "",
) -> Result:
    contenders = {
        name: {"label": labels[name], "wall": s.wall, "cpu": s.cpu} for name, s in samples.items()
    }
    return Result(case, "ops/s", ops, contenders, notes, cpu_scope)


def _peer(key: str, store: Any, fn: F) -> dict[str, F]:
    """`{"aa": fn}` with an advanced-alchemy backend `key` on `store`; `{}` without it."""
    if PEER_VERSION is None:
        return {}
    aa_storages.register_backend(AAObstoreBackend(key, store))
    return {"aa": fn}


def _aa_file(backend: str, path: str, content: bytes | None = None) -> Any:
    """An advanced-alchemy FileObject: the caller picks its (unique) path, the name is the path."""
    return AAFileObject(backend=backend, filename=path, content=content)


def _backend(key: str, store: Any) -> ObstoreBackend:
    backend = ObstoreBackend(key, store)
    storages.register_backend(backend, replace=True)
    return backend


# --------------------------------------------------------------------------- the floor


def random_keys(n: int) -> list[str]:
    """`n` keys laid out as ours, `<32 hex>/a.bin`, from one `os.urandom` call."""
    text = os.urandom(16 * n).hex()
    return [f"{text[i : i + 32]}/{FILENAME}" for i in range(0, 32 * n, 32)]


def checksum() -> str:
    """What ours records: the SHA-256 of the content."""
    return "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


def floor_put(store: Any, key: str, attributes: dict[str, str] | None) -> Any:
    """The work behind `save()`'s guarantees, with no library code (sync)."""
    digest = checksum()
    result = obstore.put(store, key, PAYLOAD, mode="create", attributes=attributes)
    return result, digest


async def floor_put_async(store: Any, key: str, attributes: dict[str, str] | None) -> Any:
    """`floor_put` through obstore's async runtime (for stores that do I/O)."""
    digest = checksum()
    result = await obstore.put_async(store, key, PAYLOAD, mode="create", attributes=attributes)
    return result, digest


# --------------------------------------------------------------------------- save N x 1 KiB


@dataclass(frozen=True)
class Target:
    """A store the save (and ORM) cases write to."""

    name: str
    factory: Callable[[], Any]
    note: str
    blocking: bool
    """Whether its calls do I/O: inside a coroutine raw then awaits `put_async`; a
    `MemoryStore` never blocks, so raw calls the sync `put` there, as the library does."""
    keeps_attributes: bool
    server: str = ""  # the server process (its CPU is not in the CPU column)

    @property
    def fast(self) -> bool:
        return not self.blocking


def targets(ctx: Context) -> Iterator[Target]:
    """Every place the save cases write to."""
    yield Target("memory", MemoryStore, "", blocking=False, keeps_attributes=True)
    shm = Path("/dev/shm")
    if shm.is_dir():
        yield Target(
            "local-tmpfs",
            lambda: _local(shm),
            "LocalStore in /dev/shm",
            blocking=True,
            keeps_attributes=False,
        )
    yield Target(
        "local-disk",
        lambda: _local(ctx.workdir),
        "LocalStore in the temp directory",
        blocking=True,
        keeps_attributes=False,
    )
    for name, kwargs in ctx.servers.items():
        yield Target(
            name,
            lambda kwargs=kwargs: S3Store(**kwargs),
            SERVER_NOTES[name],
            blocking=True,
            keeps_attributes=True,
            server=name,
        )


def _local(parent: Path) -> LocalStore:
    return LocalStore(Path(tempfile.mkdtemp(dir=parent)), mkdir=True)


SAVE_PEER_NOTES = "aa: put + HEAD each, key made by the caller, no checksum"


def _labels(target: Target, mode: str) -> dict[str, str]:
    """What each contender of a save case does."""
    what = "random key, SHA-256, create-only PUT"
    if target.keeps_attributes:
        what += " with content type and disposition"
    if mode == "sync":
        put, same = "obstore.put", f"{what}; obstore.put"
    elif target.blocking:
        put, same = "await obstore.put_async", f"{what}; await obstore.put_async"
    else:
        put, same = "obstore.put (sync) in the coroutine", f"{what}; sync put in the coroutine"
    gather = mode == "async-gather"
    if gather and target.blocking:
        put, same = f"asyncio.gather of n x {put}", f"asyncio.gather of n x ({same})"
    elif gather:  # gathering calls that never block only adds tasks: one after another
        put, same = f"n x {put}, one after another", f"n x ({same}), one after another"
    ours = {
        "sync": "FileObject(content=1 KiB).save()",
        "async-seq": "await FileObject(...).save_async(), one after another",
        "async-gather": "asyncio.gather of n x FileObject(...).save_async()",
    }[mode]
    labels = {"ours": ours, "raw": put, "same": same}
    labels["bridge"] = (
        "asyncio.gather of n x await obstore.put_async" if gather else "await obstore.put_async"
    )
    labels["aa"] = "advanced-alchemy FileObject.save" + ("" if mode == "sync" else "_async")
    return labels


def _save_case(ctx: Context, target: Target, mode: str) -> Result:
    store = target.factory()
    key = f"bench-{target.name}"
    _backend(key, store)
    attrs = ATTRIBUTES if target.keeps_attributes else None
    n = ctx.fast_n if target.fast else ctx.n

    def new_file() -> FileObject:
        return FileObject(filename=FILENAME, content=PAYLOAD, backend=key)

    contenders: dict[str, Callable[[int], Any]]
    if mode == "sync":

        def ours(r: int) -> None:
            for _ in range(n):
                new_file().save()

        def raw(r: int) -> None:
            for i in range(n):
                obstore.put(store, f"{TAG}/raw/{r}/{i}", PAYLOAD)

        def same(r: int) -> None:
            for k in random_keys(n):
                floor_put(store, k, attrs)

        def aa(r: int) -> None:
            for i in range(n):
                _aa_file(f"aa-{target.name}", f"{TAG}/aa/{r}/{i}.bin", PAYLOAD).save()

        contenders = {"ours": ours, "raw": raw, "same": same}
        contenders |= _peer(f"aa-{target.name}", store, aa)
        samples = measure(contenders, ctx.rounds)
    else:
        gather = mode == "async-gather"

        async def a_ours(r: int) -> None:
            if gather:
                await asyncio.gather(*(f.save_async() for f in [new_file() for _ in range(n)]))
            else:
                for _ in range(n):
                    await new_file().save_async()

        # A store that never blocks: sync calls straight in the coroutine, one after another
        # (gathering them would only add tasks). A store that does I/O: awaited, one after
        # another or gathered like ours.
        async def a_raw(r: int) -> None:
            paths = [f"{TAG}/raw/{r}/{i}" for i in range(n)]
            if not target.blocking:
                for p in paths:
                    obstore.put(store, p, PAYLOAD)
            elif gather:
                await asyncio.gather(*(obstore.put_async(store, p, PAYLOAD) for p in paths))
            else:
                for p in paths:
                    await obstore.put_async(store, p, PAYLOAD)

        async def a_same(r: int) -> None:
            keys = random_keys(n)
            if not target.blocking:
                for k in keys:
                    floor_put(store, k, attrs)
            elif gather:
                await asyncio.gather(*(floor_put_async(store, k, attrs) for k in keys))
            else:
                for k in keys:
                    await floor_put_async(store, k, attrs)

        async def a_bridge(r: int) -> None:
            paths = [f"{TAG}/bridge/{r}/{i}" for i in range(n)]
            if gather:
                await asyncio.gather(*(obstore.put_async(store, p, PAYLOAD) for p in paths))
            else:
                for p in paths:
                    await obstore.put_async(store, p, PAYLOAD)

        async def a_aa(r: int) -> None:
            files = [
                _aa_file(f"aa-{target.name}", f"{TAG}/aa/{r}/{i}.bin", PAYLOAD) for i in range(n)
            ]
            if gather:
                await asyncio.gather(*(f.save_async() for f in files))
            else:
                for f in files:
                    await f.save_async()

        async_contenders: dict[str, Callable[[int], Awaitable[None]]] = {
            "ours": a_ours,
            "raw": a_raw,
            "same": a_same,
        }
        if not target.blocking:
            async_contenders["bridge"] = a_bridge
        async_contenders |= _peer(f"aa-{target.name}", store, a_aa)
        samples = asyncio.run(measure_async(async_contenders, ctx.rounds))
    notes = "; ".join(filter(None, [target.note, SAVE_PEER_NOTES if "aa" in samples else ""]))
    return _result(
        f"save/{target.name}/{mode}",
        samples,
        _labels(target, mode),
        n,
        notes,
        target.server,
    )


def save_cases(ctx: Context) -> Iterator[tuple[str, Callable[[], Result]]]:
    for target in targets(ctx):
        for mode in ("sync", "async-seq", "async-gather"):
            yield (
                f"save/{target.name}/{mode}",
                lambda target=target, mode=mode: _save_case(ctx, target, mode),
            )


# --------------------------------------------------------------------------- ORM


class _Base(DeclarativeBase):
    pass


class _Doc(_Base):
    __tablename__ = "bench_docs"
    id = mapped_column(Integer, primary_key=True)
    file = mapped_column(StoredObject("bench-orm"))


def _plain_table(name: str) -> Any:
    """A mapped class with a plain JSON column (JSONB on PostgreSQL, like StoredObject)."""
    return type(
        f"_Plain_{name}",
        (_Base,),
        {
            "__tablename__": f"bench_{name}_docs",
            "id": mapped_column(Integer, primary_key=True),
            "file": mapped_column(JSON().with_variant(JSONB(), "postgresql")),
        },
    )


#: One table per baseline, so every contender's table grows at the same pace.
_PLAIN = {name: _plain_table(name) for name in ("raw", "same", "bridge")}

if PEER_VERSION is not None:

    class _AADoc(_Base):
        __tablename__ = "bench_aa_docs"
        id = mapped_column(Integer, primary_key=True)
        file = mapped_column(AAStoredObject("aa-orm"))


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
    stored = sum(len(page) for page in obstore.list(store, f"{TAG}/aa/orm/"))
    if stored != expected:
        raise RuntimeError(f"advanced-alchemy stored {stored} of {expected} ORM files")


ORM_PEER_NOTES = (
    "aa: uploads (put + HEAD each, gathered) run in a task after the commit, awaited here; "
    "the row keeps no size/etag"
)


def _column_document(path: str, result: Any, digest: str) -> dict[str, Any]:
    """What raw code stores to keep what a StoredObject column keeps (the same JSON)."""
    return {
        "v": 1,
        "backend": "bench-orm",
        "path": path,
        "filename": FILENAME,
        "content_type": "application/octet-stream",
        "size": len(PAYLOAD),
        "etag": result["e_tag"],
        "version": result.get("version"),
        "checksum": digest,
        "last_modified": datetime.now(timezone.utc).isoformat(),
        "metadata": {},
    }


def _database_url(ctx: Context, database: str) -> str:
    if database == "postgres":
        if ctx.pg_url is None:
            raise SkipCase("PostgreSQL (asyncpg) not reachable (see SQLALCHEMY_OBSTORE_PG)")
        return ctx.pg_url
    return f"sqlite+aiosqlite:///{tempfile.mktemp(suffix='.db', dir=ctx.workdir)}"


async def _engine(url: str) -> Any:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
        await conn.run_sync(_Base.metadata.create_all)
    return engine


async def _drop(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
    await engine.dispose()


DATABASE_NOTES = {
    "sqlite": "SQLite (aiosqlite) file in the temp directory",
    "postgres": "PostgreSQL (asyncpg) on 127.0.0.1",
}


def _orm_target(ctx: Context, store_name: str) -> Target:
    for target in targets(ctx):
        if target.name == store_name:
            return target
    raise SkipCase(f"store {store_name!r} not running")


async def _orm_insert(ctx: Context, database: str, store_name: str, size: int) -> Result:
    target = _orm_target(ctx, store_name)
    store = target.factory()
    _backend("bench-orm", store)
    engine = await _engine(_database_url(ctx, database))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    aa_sessions = _aa_sessions(engine) if PEER_VERSION is not None else None
    commits = max(1, math.ceil(ctx.orm_rows / size))
    attrs = ATTRIBUTES if target.keeps_attributes else None
    limit = asyncio.Semaphore(FLUSH_CONCURRENCY)

    async def bounded(work: Awaitable[Any]) -> Any:
        async with limit:
            return await work

    async def ours(r: int) -> None:
        for _ in range(commits):
            async with sessions() as session:
                session.add_all(
                    _Doc(file=FileObject(filename=FILENAME, content=PAYLOAD)) for _ in range(size)
                )
                await session.commit()

    async def plain_puts(paths: list[str]) -> list[tuple[Any, str]]:
        if target.blocking:
            results = await asyncio.gather(
                *(bounded(obstore.put_async(store, p, PAYLOAD)) for p in paths)
            )
        else:
            results = [obstore.put(store, p, PAYLOAD) for p in paths]
        return [(res, checksum()) for res in results]

    async def floor_puts(paths: list[str]) -> list[tuple[Any, str]]:
        if target.blocking:
            return list(
                await asyncio.gather(*(bounded(floor_put_async(store, p, attrs)) for p in paths))
            )
        return [floor_put(store, p, attrs) for p in paths]

    async def bridge_puts(paths: list[str]) -> list[tuple[Any, str]]:
        results = await asyncio.gather(*(obstore.put_async(store, p, PAYLOAD) for p in paths))
        return [(res, checksum()) for res in results]

    def baseline(
        name: str, puts: Callable[[list[str]], Awaitable[list[tuple[Any, str]]]], keyed: bool
    ) -> Callable[[int], Awaitable[None]]:
        model = _PLAIN[name]

        async def run(r: int) -> None:
            for c in range(commits):
                paths = (
                    random_keys(size)
                    if keyed
                    else [f"{TAG}/{name}/{r}/{c}/{i}" for i in range(size)]
                )
                done = await puts(paths)
                async with sessions() as session:
                    session.add_all(
                        model(file=_column_document(p, res, digest))
                        for p, (res, digest) in zip(paths, done, strict=True)
                    )
                    await session.commit()

        return run

    async def aa(r: int) -> None:
        assert aa_sessions is not None
        for c in range(commits):
            async with aa_sessions() as session:
                session.add_all(
                    _AADoc(file=_aa_file("aa-orm", f"{TAG}/aa/orm/{r}/{c}/{i}.bin", PAYLOAD))
                    for i in range(size)
                )
                await session.commit()
            await _aa_uploaded()

    put = "await put_async (8 in flight)" if target.blocking else "sync obstore.put"
    floor = "random key, SHA-256, create-only PUT" + (
        " with content type and disposition" if target.keeps_attributes else ""
    )
    contenders: dict[str, Callable[[int], Awaitable[None]]] = {
        "ours": ours,
        "raw": baseline("raw", plain_puts, keyed=False),
        "same": baseline("same", floor_puts, keyed=True),
    }
    labels = {
        "ours": f"rows with a pending FileObject, one commit per {size} rows",
        "raw": f"{put} each, then rows with the same JSON document, one commit",
        "same": f"{floor}; {put} each, then the same rows and commit",
        "bridge": "asyncio.gather of put_async, then the same rows and commit (round-3 baseline)",
        "aa": "advanced-alchemy rows (its uploads awaited after the commit)",
    }
    if not target.blocking:
        contenders["bridge"] = baseline("bridge", bridge_puts, keyed=False)
    contenders |= _peer("aa-orm", store, aa)
    samples = await measure_async(contenders, ctx.rounds)
    if "aa" in samples:
        _check_aa_orm(store, (ctx.rounds + 1) * commits * size)
    await _drop(engine)
    notes = [DATABASE_NOTES[database], target.note or f"{target.name} store"]
    if commits > 1:
        notes.append(f"{commits} commits of {size} rows per round")
    if "aa" in samples:
        notes.append(ORM_PEER_NOTES)
    scope = ", ".join(filter(None, [target.server, "PostgreSQL" if database == "postgres" else ""]))
    return _result(
        f"orm/insert+commit/{database}/{store_name}/{size}",
        samples,
        labels,
        commits * size,
        "; ".join(notes),
        scope,
    )


async def _orm_select(ctx: Context, database: str) -> Result:
    store = MemoryStore()
    _backend("bench-orm", store)
    engine = await _engine(_database_url(ctx, database))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    aa_sessions = _aa_sessions(engine) if PEER_VERSION is not None else None
    n = ctx.select_n
    reads = max(1, math.ceil(ctx.select_reads / n))
    plain = _PLAIN["raw"]
    async with sessions() as session:
        session.add_all(_Doc(file=FileObject(filename=FILENAME, content=PAYLOAD)) for _ in range(n))
        await session.commit()
    async with sessions() as session:
        session.add_all(
            plain(file=_column_document(k, res, digest))
            for k, (res, digest) in ((k, floor_put(store, k, ATTRIBUTES)) for k in random_keys(n))
        )
        await session.commit()

    async def read(make: Callable[[], Any], model: Any, name: Callable[[Any], str]) -> None:
        for _ in range(reads):
            async with make() as session:
                rows = (await session.scalars(select(model))).all()
                names = [name(row) for row in rows]
                assert len(names) == n

    async def ours(r: int) -> None:
        await read(sessions, _Doc, lambda row: row.file.filename)

    async def raw(r: int) -> None:
        await read(sessions, plain, lambda row: row.file["filename"])

    async def aa(r: int) -> None:
        assert aa_sessions is not None
        await read(aa_sessions, _AADoc, lambda row: row.file.filename)

    contenders: dict[str, Callable[[int], Awaitable[None]]] = {"ours": ours, "raw": raw}
    if PEER_VERSION is not None:
        aa_storages.register_backend(AAObstoreBackend("aa-orm", store))
        assert aa_sessions is not None
        async with aa_sessions() as session:
            session.add_all(
                _AADoc(file=_aa_file("aa-orm", f"{TAG}/aa/select/{i}.bin", PAYLOAD))
                for i in range(n)
            )
            await session.commit()
        await _aa_uploaded()
        contenders["aa"] = aa
    column = "JSONB" if database == "postgres" else "JSON"
    labels = {
        "ours": "SELECT the rows, read row.file.filename (StoredObject column)",
        "raw": f"the same documents from a plain {column} column, read row.file['filename']",
        "aa": f"advanced-alchemy StoredObject ({column}) rows, read row.file.filename",
    }
    samples = await measure_async(contenders, ctx.rounds)
    await _drop(engine)
    notes = f"{DATABASE_NOTES[database]}; {reads} SELECTs of {n} rows per round"
    return _result(
        f"orm/select+filename/{database}/{n}",
        samples,
        labels,
        reads * n,
        notes,
        "PostgreSQL" if database == "postgres" else "",
    )


def orm_cases(ctx: Context) -> Iterator[tuple[str, Callable[[], Result]]]:
    for database in ("sqlite", "postgres"):
        for size in ctx.orm_sizes:
            yield (
                f"orm/insert+commit/{database}/memory/{size}",
                lambda database=database, size=size: asyncio.run(
                    _orm_insert(ctx, database, "memory", size)
                ),
            )
    for server in ctx.servers:
        if server == "seaweed":  # the network store that behaves like one
            for size in ctx.orm_sizes[:2]:
                yield (
                    f"orm/insert+commit/sqlite/{server}/{size}",
                    lambda size=size, server=server: asyncio.run(
                        _orm_insert(ctx, "sqlite", server, size)
                    ),
                )
    for database in ("sqlite", "postgres"):
        yield (
            f"orm/select+filename/{database}/{ctx.select_n}",
            lambda database=database: asyncio.run(_orm_select(ctx, database)),
        )


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
    n = ctx.fast_n
    raw_label = "obstore.sign(store, 'GET', path, 1 h)"

    def setup() -> tuple[S3Store, ObstoreBackend, list[str]]:
        store = _sign_store()
        backend = _backend("bench-sign", store)
        return store, backend, [f"objects/{i:06d}.bin" for i in range(n)]

    def loaded(paths: list[str]) -> list[FileObject]:
        """Files as an application holds them right after loading rows."""
        return [FileObject(filename=FILENAME, path=p, backend="bench-sign") for p in paths]

    def raw_each(store: S3Store, paths: list[str]) -> Callable[[int], None]:
        def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        return raw

    def single() -> Result:
        store, _, paths = setup()
        # Every round signs files just loaded, each for the first time; they are built
        # untimed right before the round (building them is the SELECT case's cost).
        files: list[FileObject] = []
        peer_files: list[Any] = []

        def load(r: int) -> None:
            files[:] = loaded(paths)

        def aa_load(r: int) -> None:
            peer_files[:] = [_aa_file("aa-sign", p) for p in paths]

        def ours(r: int) -> None:
            for f in files:
                f.sign()

        def aa(r: int) -> None:
            for f in peer_files:
                f.sign()

        contenders = {"ours": ours, "raw": raw_each(store, paths)} | _peer("aa-sign", store, aa)
        samples = measure(contenders, ctx.rounds, prepare={"ours": load, "aa": aa_load})
        labels = {"ours": "f.sign() of files just loaded", "raw": raw_label, "aa": "f.sign()"}
        return _result("sign/single", samples, labels, n, "first sign() of files just loaded")

    def single_built() -> Result:
        store, _, paths = setup()

        def ours(r: int) -> None:
            for p in paths:
                FileObject(filename=FILENAME, path=p, backend="bench-sign").sign()

        def aa(r: int) -> None:
            for p in paths:
                _aa_file("aa-sign", p).sign()

        contenders = {"ours": ours, "raw": raw_each(store, paths)} | _peer("aa-sign", store, aa)
        labels = {
            "ours": "FileObject(path=...).sign(), built each time",
            "raw": raw_label,
            "aa": "FileObject(path=...).sign()",
        }
        return _result("sign/single+build", measure(contenders, ctx.rounds), labels, n)

    def batch() -> Result:
        store, backend, paths = setup()

        def ours(r: int) -> None:
            backend.sign(paths, expires_in=SIGN_EXPIRY)

        def raw(r: int) -> None:
            obstore.sign(store, "GET", paths, SIGN_EXPIRY)

        def aa(r: int) -> None:
            aa_storages.get_backend("aa-sign").sign(paths)

        contenders = {"ours": ours, "raw": raw} | _peer("aa-sign", store, aa)
        labels = {
            "ours": "backend.sign([n paths])",
            "raw": "obstore.sign(store, 'GET', [n paths], 1 h)",
            "aa": "ObstoreBackend.sign([n paths])",
        }
        return _result("sign/batch", measure(contenders, ctx.rounds), labels, n)

    def files() -> Result:
        store, _, paths = setup()
        held: list[FileObject] = []

        def load(r: int) -> None:
            held[:] = loaded(paths)

        def ours(r: int) -> None:
            sign_files(held, expires_in=SIGN_EXPIRY)

        def raw(r: int) -> None:
            obstore.sign(store, "GET", paths, SIGN_EXPIRY)

        labels = {
            "ours": "sign_files(files just loaded)",
            "raw": "obstore.sign(store, 'GET', [n paths], 1 h)",
        }
        samples = measure({"ours": ours, "raw": raw}, ctx.rounds, prepare={"ours": load})
        return _result("sign/files", samples, labels, n)

    def cached() -> Result:
        store, _, paths = setup()
        held = loaded(paths)
        peer_files = [_aa_file("aa-sign", p) for p in paths]

        def ours(r: int) -> None:
            for f in held:
                f.sign()

        def aa(r: int) -> None:
            for f in peer_files:
                f.sign()

        contenders = {"ours": ours, "raw": raw_each(store, paths)} | _peer("aa-sign", store, aa)
        labels = {
            "ours": "f.sign() again on the same files (URL cache hit)",
            "raw": raw_label,
            "aa": "f.sign() again (no URL cache: signs every time)",
        }
        return _result("sign/cached", measure(contenders, ctx.rounds), labels, n)

    def async_() -> Result:
        store, _, paths = setup()

        async def ours(r: int) -> None:
            for p in paths:
                await FileObject(filename=FILENAME, path=p, backend="bench-sign").sign_async()

        async def raw(r: int) -> None:
            for p in paths:
                obstore.sign(store, "GET", p, SIGN_EXPIRY)

        async def bridge(r: int) -> None:
            for p in paths:
                await obstore.sign_async(store, "GET", p, SIGN_EXPIRY)

        async def aa(r: int) -> None:
            for p in paths:
                await _aa_file("aa-sign", p).sign_async()

        contenders: dict[str, Callable[[int], Awaitable[None]]] = {
            "ours": ours,
            "raw": raw,
            "bridge": bridge,
        }
        contenders |= _peer("aa-sign", store, aa)
        labels = {
            "ours": "await FileObject(path=...).sign_async(), one after another",
            "raw": "obstore.sign (sync) in the coroutine: static credentials, pure CPU",
            "bridge": "await obstore.sign_async",
            "aa": "await FileObject(path=...).sign_async()",
        }
        samples = asyncio.run(measure_async(contenders, ctx.rounds))
        return _result("sign/async", samples, labels, n, "static credentials")

    yield "sign/single", single
    yield "sign/single+build", single_built
    yield "sign/batch", batch
    yield "sign/files", files
    yield "sign/cached", cached
    yield "sign/async", async_


def all_cases(ctx: Context) -> list[tuple[str, Callable[[], Result]]]:
    return [*save_cases(ctx), *orm_cases(ctx), *sign_cases(ctx)]
