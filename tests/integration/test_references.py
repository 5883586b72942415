"""Client-chosen references: a request body cannot point a row at an object it does not hold.

Two tenants share a backend. Tenant B's row holds a private object; tenant A sends request
bodies naming it, through every decoding path the docs present for request bodies
(`FileObject.from_dict`, a dict assigned to a column, Pydantic, msgspec's `dec_hook`, a
Litestar handler, a FastAPI handler). Each attack fails with `UntrustedReferenceError`
(403 through `error_status`), nothing is written and B's object survives A's deletes. The
edit-form round trip (a row's own value sent back) keeps working, and server code builds
references on purpose through the documented trusted path.

Whatever a row or a caller names, a backend writes and deletes only under its prefix
(memory, local files and S3): every write entry point refuses any other path, in every
spelling, before a request, while reads of old paths outside it keep working.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pydantic
import pytest
from sqlalchemy import String, create_engine, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    InvalidFileObjectError,
    InvalidObjectPathError,
    ObstoreBackend,
    StoredObject,
    UntrustedReferenceError,
    storages,
)
from sqlalchemy_obstore.contrib.msgspec import dec_hook
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.uploads import error_status
from tests.conftest import PG_SERVER
from tests.integration.backends import s3_backend

T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "reference_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(20))
    file: Mapped[FileObject | None] = mapped_column(StoredObject("uploads"), nullable=True)
    files: Mapped[list[FileObject]] = mapped_column(
        StoredObject("uploads", multiple=True), default=list
    )


class NoteIn(pydantic.BaseModel):
    file: FileObject


class NoteStruct(msgspec.Struct):
    file: FileObject


@pytest.fixture
def uploads() -> ObstoreBackend:
    backend = ObstoreBackend("uploads", "memory://", prefix="app")
    storages.register_backend(backend)
    return backend


@pytest.fixture
def elsewhere() -> ObstoreBackend:
    backend = ObstoreBackend("elsewhere", "memory://")
    storages.register_backend(backend)
    return backend


# -- the database, sync (SQLite) or async (PostgreSQL via asyncpg) ------------------------------
class Db:
    """Runs a sync scenario in a `Session`, or in an `AsyncSession` through `run_sync`."""

    def __init__(self, engine: Engine | None = None, async_engine: AsyncEngine | None = None):
        self.engine = engine
        self.async_engine = async_engine

    async def run(self, scenario: Callable[[Session], T]) -> T:
        if self.engine is not None:
            with Session(self.engine, expire_on_commit=False) as session:
                return scenario(session)
        assert self.async_engine is not None
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            return await session.run_sync(scenario)


@pytest.fixture(params=["sqlite", "postgresql-async"])
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, uploads: ObstoreBackend
) -> AsyncIterator[Db]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'refs.sqlite'}")
        Base.metadata.create_all(engine)
        yield Db(engine=engine)
        engine.dispose()
        return
    database = request.getfixturevalue("pg_database")
    async_engine = create_async_engine(f"postgresql+asyncpg://{PG_SERVER}/{database}")
    async with async_engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield Db(async_engine=async_engine)
    await async_engine.dispose()


@dataclass
class World:
    db: Db
    uploads: ObstoreBackend
    secret: dict[str, Any]  # tenant B's stored file, as a body would spell it
    mine: dict[str, Any]  # tenant A's stored file


async def _world(db: Db, uploads: ObstoreBackend) -> World:
    def seed(session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
        b = Note(id=2, tenant="b", file=FileObject(filename="payroll.pdf", content=b"B only"))
        a = Note(id=1, tenant="a", file=FileObject(filename="mine.txt", content=b"A's"))
        session.add_all([a, b])
        session.commit()
        assert a.file is not None
        assert b.file is not None
        return b.file.to_dict(), a.file.to_dict()

    secret, mine = await db.run(seed)
    return World(db, uploads, secret, mine)


@pytest.fixture
async def world(db: Db, uploads: ObstoreBackend) -> World:
    return await _world(db, uploads)


def _secret_is_intact(world: World) -> None:
    assert world.uploads.get_bytes(world.secret["path"]) == b"B only"


async def _row(world: World, id_: int) -> dict[str, Any] | None:
    def read(session: Session) -> dict[str, Any] | None:
        note = session.get(Note, id_)
        return None if note is None or note.file is None else note.file.to_dict()

    return await world.db.run(read)


# -- every decoding path, on a new row and on an edited row --------------------------------------
DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "from_dict": FileObject.from_dict,
    "dict": lambda body: body,  # assigned as it is: the column coerces it
    "pydantic": lambda body: NoteIn.model_validate({"file": body}).file,
    "pydantic-json": lambda body: (
        NoteIn.model_validate_json(msgspec.json.encode({"file": body})).file
    ),
    "msgspec": lambda body: (
        msgspec.json.decode(
            msgspec.json.encode({"file": body}), type=NoteStruct, dec_hook=dec_hook
        ).file
    ),
}


DECODE_ERRORS = (InvalidFileObjectError, pydantic.ValidationError, msgspec.ValidationError)
"""What each decoding path raises for a malformed value (Pydantic and msgspec wrap ours)."""


def _assign(decoded: Any) -> None:
    Note(file=decoded)  # a plain dict is decoded by the column on assignment


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("target", ["new row", "edited row", "list append"])
async def test_a_body_cannot_name_another_tenants_object(
    world: World, decoder: str, target: str
) -> None:
    decoded = DECODERS[decoder](world.secret)

    def attack(session: Session) -> None:
        if target == "new row":
            note = Note(id=3, tenant="a", file=decoded)
            session.add(note)
        else:
            note = session.get(Note, 1)  # type: ignore[assignment]
            assert note is not None
            if target == "edited row":
                note.file = decoded
            else:
                note.files.append(decoded)
        with pytest.raises(UntrustedReferenceError) as raised:
            session.commit()
        assert error_status(raised.value) == 403
        assert raised.value.path == world.secret["path"]
        session.rollback()

    await world.db.run(attack)
    assert await _row(world, 3) is None
    assert await _row(world, 1) == world.mine
    _secret_is_intact(world)


async def test_deleting_the_attackers_row_never_deletes_the_victims_object(world: World) -> None:
    def attack_then_delete(session: Session) -> None:
        note = session.get(Note, 1)
        assert note is not None
        note.file = FileObject.from_dict(world.secret)
        with pytest.raises(UntrustedReferenceError):
            session.flush()
        session.rollback()
        session.delete(session.get(Note, 1))
        session.commit()

    await world.db.run(attack_then_delete)
    _secret_is_intact(world)
    assert not world.uploads.exists(world.mine["path"])  # A's own file went with A's row


async def test_a_nested_rendition_cannot_reach_another_backend(
    world: World, elsewhere: ObstoreBackend
) -> None:
    elsewhere.put("precious.bin", b"keep me")
    body = {
        **world.mine,
        "renditions": {"thumb": {"backend": "elsewhere", "path": "precious.bin"}},
    }
    for decode in DECODERS.values():
        with pytest.raises(DECODE_ERRORS):
            _assign(decode(body))
    assert elsewhere.get_bytes("precious.bin") == b"keep me"


async def test_an_echo_with_smuggled_renditions_keeps_the_rows_own(world: World) -> None:
    # Same backend, but the rendition names tenant B's object: the echo keeps what the
    # row held (no renditions), so deleting A's row cannot reach B's object.
    body = {**world.mine, "renditions": {"thumb": {"path": world.secret["path"]}}}

    def edit_then_delete(session: Session) -> None:
        note = session.get(Note, 1)
        assert note is not None
        note.file = FileObject.from_dict(body)
        session.commit()
        assert note.file is not None
        assert dict(note.file.renditions) == {}
        session.delete(note)
        session.commit()

    await world.db.run(edit_then_delete)
    _secret_is_intact(world)


# -- what keeps working --------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", list(DECODERS))
async def test_the_edit_form_round_trip_keeps_working(world: World, decoder: str) -> None:
    # The client got its row's value (Pydantic/msgspec output), renamed it and sent it
    # back with forged facts: the name is taken, the facts stay the row's.
    forged = {**world.mine, "filename": "renamed.txt", "size": 999, "content_type": "text/html"}
    decoded = DECODERS[decoder](forged)

    def edit(session: Session) -> None:
        note = session.get(Note, 1)
        assert note is not None
        note.file = decoded
        session.commit()

    await world.db.run(edit)
    stored = await _row(world, 1)
    assert stored is not None
    assert stored["filename"] == "renamed.txt"
    assert (stored["size"], stored["content_type"]) == (world.mine["size"], "text/plain")
    assert stored["checksum"] == world.mine["checksum"]
    assert world.uploads.get_bytes(stored["path"]) == b"A's"  # not deleted as "replaced"


async def test_server_code_builds_references_on_purpose(world: World) -> None:
    def attach(session: Session) -> None:
        # an admin tool or a migration: explicit, documented trusted paths
        session.add(Note(id=4, tenant="b", file=FileObject.from_dict(world.secret, trusted=True)))
        session.add(
            Note(id=5, tenant="b", file=FileObject(backend="uploads", path=world.secret["path"]))
        )
        session.commit()

    await world.db.run(attach)
    assert (await _row(world, 4) or {}).get("path") == world.secret["path"]
    assert (await _row(world, 5) or {}).get("path") == world.secret["path"]


async def test_core_statements_refuse_untrusted_files(world: World) -> None:
    def core(session: Session) -> None:
        statement = insert(Note).values(id=6, tenant="a", file=FileObject.from_dict(world.secret))
        with pytest.raises(StatementError) as raised:  # (SQLAlchemy wraps bind errors)
            session.execute(statement)
        assert isinstance(raised.value.orig, UntrustedReferenceError)
        session.rollback()
        # a dict written by the application's own statement is its own doing
        session.execute(insert(Note).values(id=6, tenant="b", file=world.secret, files=[]))
        session.commit()

    await world.db.run(core)
    assert (await _row(world, 6) or {}).get("path") == world.secret["path"]


# -- malformed paths -----------------------------------------------------------------------------
BAD_PATHS = ["../etc/passwd", "app/../other", "/app/x", "app//x", "app/./x", "app/x/", "a\x00b"]


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_malformed_paths_are_typed_errors(decoder: str, path: str) -> None:
    with pytest.raises(DECODE_ERRORS):
        _assign(DECODERS[decoder]({"backend": "uploads", "path": path}))


@pytest.mark.parametrize("path", BAD_PATHS)
def test_a_malformed_path_in_an_old_row_is_a_typed_error_at_use(
    path: str, uploads: ObstoreBackend, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO reference_notes (id, tenant, file, files) VALUES (1, 'a', :f, '[]')"),
            {"f": msgspec.json.encode({"backend": "uploads", "path": path}).decode()},
        )
    try:
        with Session(engine) as session:
            try:
                note = session.scalars(select(Note)).one()
            except InvalidFileObjectError:
                return  # refused while reading the row: typed, and names the column
            assert note.file is not None
            for use in (note.file.get_content, note.file.exists, note.file.delete):
                with pytest.raises(InvalidObjectPathError):
                    use()
    finally:
        engine.dispose()


# -- deletes never leave the managed prefix ------------------------------------------------------
def test_an_old_row_outside_the_prefix_cannot_delete_there(
    uploads: ObstoreBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # written by another backend of the same store (or this one before it had a prefix)
    ObstoreBackend("before", uploads.store).put("billing/ledger.csv", b"outside the prefix")
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:  # a row from an older version, or written by hand
        conn.execute(
            text("INSERT INTO reference_notes (id, tenant, file, files) VALUES (1, 'a', :f, '[]')"),
            {"f": '{"backend": "uploads", "path": "billing/ledger.csv"}'},
        )
    with Session(engine) as session, caplog.at_level(logging.WARNING, "sqlalchemy_obstore"):
        session.delete(session.scalars(select(Note)).one())
        session.commit()
    assert uploads.get_bytes("billing/ledger.csv") == b"outside the prefix"
    assert "never leaves that prefix" in caplog.text
    with pytest.raises(InvalidObjectPathError):
        uploads.delete("billing/ledger.csv")
    engine.dispose()


# -- writes never leave the managed prefix either --------------------------------------------------
@dataclass
class Confined:
    """A backend whose prefix is `<root>/app`; `root` is this test's own (the S3 bucket is
    shared by the whole run), and every spelling of a path tried lies below it."""

    backend: ObstoreBackend
    root: str

    @property
    def source(self) -> str:
        return f"{self.root}/app/source.txt"

    def stored(self) -> list[str]:
        """Everything under the test's root, in the store itself (inside the prefix or not)."""
        return sorted(info.path for info in self.backend.list_objects(self.root))


@pytest.fixture(params=["memory", "local", "moto"])
def confined(request: pytest.FixtureRequest, tmp_path: Path) -> Confined:
    root = f"confined-{uuid.uuid4().hex[:12]}"
    prefix = f"{root}/app"
    backend: ObstoreBackend
    if request.param == "memory":
        backend = ObstoreBackend("confined", "memory://", prefix=prefix)
    elif request.param == "local":
        signer = HmacUrlSigner("confined-test-secret-0123456789abcdef")  # local files sign so
        backend = ObstoreBackend("confined", tmp_path / "store", prefix=prefix, url_signer=signer)
    else:
        backend = s3_backend(request.getfixturevalue("moto_server"), key="confined", prefix=prefix)
    confined = Confined(backend, root)
    backend.put(confined.source, b"inside")
    return confined


#: Paths outside the prefix `<root>/app`, in the spellings a caller may use.
OUTSIDE = {
    "sibling": "{root}/billing/ledger.csv",
    "dot-dot": "{root}/app/../billing/ledger.csv",  # looks inside, resolves outside
    "absolute": "/{root}/billing/ledger.csv",  # obstore would drop the leading '/'
}
WRITES = [
    "put",
    "put_async",
    "put_buffer",
    "put_buffer_async",
    "copy",
    "copy_async",
    "sign PUT",
    "sign_async PUT",
    "sign DELETE",
]


def _streamed() -> Iterator[bytes]:
    yield b"leaked "
    yield b"bytes"


async def _write(backend: ObstoreBackend, operation: str, path: str, source: str) -> object:
    if operation == "put":
        return backend.put(path, _streamed())
    if operation == "put_async":
        return await backend.put_async(path, b"leaked bytes", attributes={"Content-Type": "a/b"})
    if operation == "put_buffer":
        return backend.put_buffer(path, b"leaked bytes", {"Content-Type": "text/plain"})
    if operation == "put_buffer_async":
        return await backend.put_buffer_async(path, bytearray(b"leaked bytes"))
    if operation == "copy":
        return backend.copy(source, path)
    if operation == "copy_async":
        return await backend.copy_async(source, path, overwrite=True)
    if operation == "sign PUT":
        return backend.sign(path, method="PUT", expires_in=60)
    if operation == "sign_async PUT":
        return await backend.sign_async([source, path], method="PUT", expires_in=60)
    assert operation == "sign DELETE"
    return backend.sign(path, method="DELETE", expires_in=60)


@pytest.mark.parametrize("spelling", list(OUTSIDE))
@pytest.mark.parametrize("operation", WRITES)
async def test_a_write_never_leaves_the_prefix(
    confined: Confined, operation: str, spelling: str
) -> None:
    """Like a delete, every write (and every URL that would write or delete) is refused
    for a path outside the prefix, before any request: neither a delete nor garbage
    collection could ever remove what it wrote."""
    path = OUTSIDE[spelling].format(root=confined.root)
    with pytest.raises(InvalidObjectPathError) as raised:
        await _write(confined.backend, operation, path, confined.source)
    error = raised.value
    assert error.backend == "confined"
    assert f"{confined.root}/app/" in str(error)  # names the prefix it keeps to
    assert confined.stored() == [confined.source]  # nothing written, anywhere


async def test_a_refused_streamed_put_closes_its_body(confined: Confined) -> None:
    body = _streamed()
    with pytest.raises(InvalidObjectPathError):
        confined.backend.put(f"{confined.root}/billing/ledger.csv", body)
    assert inspect.getgeneratorstate(body) == inspect.GEN_CLOSED
    assert confined.stored() == [confined.source]


async def test_reads_outside_the_prefix_keep_working(confined: Confined) -> None:
    """Rows written before the prefix changed keep their old paths: those objects stay
    readable (and may be copied into the prefix), while writes there stay refused."""
    old = f"{confined.root}/legacy/old.txt"
    before = ObstoreBackend("before", confined.backend.store)  # the backend before the change
    before.put(old, b"from before the prefix changed")
    backend = confined.backend
    assert backend.get_bytes(old) == b"from before the prefix changed"
    assert await backend.get_bytes_async(old) == b"from before the prefix changed"
    assert backend.get_range(old, 5, 6) == b"before"
    assert b"".join(backend.iter_chunks(old)) == b"from before the prefix changed"
    assert backend.head(old).size == 30
    assert backend.exists(old)
    assert await backend.exists_async(old)
    assert isinstance(backend.sign(old, expires_in=60), str)
    assert isinstance((await backend.sign_download_async(old, 60))[0], str)
    moved = f"{confined.root}/app/moved.txt"
    backend.copy(old, moved)  # a copy may come from anywhere: its destination is what counts
    assert backend.get_bytes(moved) == b"from before the prefix changed"
    with pytest.raises(InvalidObjectPathError):
        backend.put(old, b"overwritten")
    assert backend.get_bytes(old) == b"from before the prefix changed"


# -- web handlers --------------------------------------------------------------------------------
@pytest.fixture
def web_world(tmp_path: Path, uploads: ObstoreBackend) -> Iterator[tuple[Engine, dict[str, Any]]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'web.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        victim = Note(id=2, tenant="b", file=FileObject(filename="payroll.pdf", content=b"B only"))
        session.add_all([victim, Note(id=1, tenant="a")])
        session.commit()
        assert victim.file is not None
        yield engine, victim.file.to_dict()
    engine.dispose()


def _update_note(engine: Engine, file: FileObject) -> dict[str, Any]:
    with Session(engine) as session:
        note = session.get(Note, 1)
        assert note is not None
        note.file = file
        session.commit()
        return {"ok": True}


async def test_litestar_handler_refuses_a_foreign_reference(
    web_world: tuple[Engine, dict[str, Any]], uploads: ObstoreBackend
) -> None:
    from litestar import Litestar, Request, Response, put
    from litestar.params import JSONBody
    from litestar.testing import AsyncTestClient

    engine, secret = web_world

    @put("/notes/1", sync_to_thread=False)
    def update(data: JSONBody[NoteStruct]) -> dict[str, Any]:
        return _update_note(engine, data.file)

    def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return Response({"error": type(exc).__name__}, status_code=error_status(exc) or 500)

    app = Litestar(
        [update],
        type_decoders=[(lambda t: isinstance(t, type) and issubclass(t, FileObject), dec_hook)],
        exception_handlers={UntrustedReferenceError: handler},
    )
    async with AsyncTestClient(app) as client:
        response = await client.put("/notes/1", json={"file": secret})
    assert response.status_code == 403, response.text
    assert response.json() == {"error": "UntrustedReferenceError"}
    assert uploads.get_bytes(secret["path"]) == b"B only"


async def test_fastapi_handler_refuses_a_foreign_reference(
    web_world: tuple[Engine, dict[str, Any]], uploads: ObstoreBackend
) -> None:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    engine, secret = web_world
    app = FastAPI()

    @app.put("/notes/1")
    def update(body: NoteIn) -> dict[str, Any]:
        return _update_note(engine, body.file)

    @app.exception_handler(UntrustedReferenceError)
    async def handler(request: Request, exc: UntrustedReferenceError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__}, status_code=error_status(exc) or 500)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.put("/notes/1", json={"file": secret})
        traversal = await client.put("/notes/1", json={"file": {"path": "../../etc/passwd"}})
    assert response.status_code == 403, response.text
    assert traversal.status_code == 422  # Pydantic's own validation error
    assert uploads.get_bytes(secret["path"]) == b"B only"
