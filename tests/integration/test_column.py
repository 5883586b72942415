"""`StoredObject` columns on SQLite and PostgreSQL, with sync and async sessions.

Each behaviour is a scenario function taking a sync `Session`. The `db` fixture runs it
on four engines: SQLite (stdlib driver), SQLite (aiosqlite, through
`AsyncSession.run_sync`), PostgreSQL (psycopg) and PostgreSQL (asyncpg, through
`AsyncSession.run_sync`). Inside `run_sync` the session's flush hooks use obstore's
async calls through SQLAlchemy's greenlet bridge, so both executors are exercised. A
few tests are written natively async (awaiting `commit()` on an `AsyncSession`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    FileObjectList,
    InvalidFileObjectError,
    ObstoreBackend,
    StoredObject,
    UntrustedReferenceError,
)

T = TypeVar("T")
TABLE = "column_documents"


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = TABLE
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("memory"))
    files: Mapped[list[FileObject] | None] = mapped_column(
        StoredObject("memory", multiple=True), default=list
    )


@dataclass
class Db:
    """One engine, and how to run a scenario and raw SQL on it."""

    name: str
    engine: Engine | AsyncEngine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_async(self) -> bool:
        return isinstance(self.engine, AsyncEngine)

    async def run(self, scenario: Callable[[Session], T]) -> T:
        """Run `scenario` in a fresh session (an `AsyncSession` on async engines)."""
        if isinstance(self.engine, AsyncEngine):
            async with AsyncSession(self.engine) as session:
                return await session.run_sync(scenario)
        with Session(self.engine) as session:
            return scenario(session)

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        """Run raw SQL in its own committed transaction; return the rows."""
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.begin() as conn:
                result = await conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    async def reset(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
                await conn.run_sync(Base.metadata.create_all)
        else:
            Base.metadata.drop_all(self.engine)
            Base.metadata.create_all(self.engine)

    async def insert_raw(self, id_: int, column: str, value: str) -> None:
        """Insert a row whose `column` holds the JSON text `value`, bypassing the type."""
        cast = "CAST(CAST(:v AS TEXT) AS JSONB)" if self.dialect == "postgresql" else ":v"
        await self.sql(f"INSERT INTO {TABLE} (id, {column}) VALUES (:id, {cast})", id=id_, v=value)

    async def raw_json(self, id_: int, column: str) -> Any:
        rows = await self.sql(f"SELECT CAST({column} AS TEXT) FROM {TABLE} WHERE id = :id", id=id_)
        return None if rows[0][0] is None else json.loads(rows[0][0])

    async def is_sql_null(self, id_: int, column: str) -> bool:
        rows = await self.sql(
            f"SELECT CASE WHEN {column} IS NULL THEN 1 ELSE 0 END FROM {TABLE} WHERE id = :id",
            id=id_,
        )
        return bool(rows[0][0])


ENGINES = {
    "sqlite": "sqlite_engine",
    "sqlite-async": "sqlite_async_engine",
    "postgresql": "pg_engine",
    "postgresql-async": "pg_async_engine",
}


@pytest.fixture(params=list(ENGINES))
def engine_under_test(request: pytest.FixtureRequest) -> Db:
    return Db(request.param, request.getfixturevalue(ENGINES[request.param]))


@pytest.fixture
async def db(engine_under_test: Db, memory_backend: ObstoreBackend) -> Db:
    """Each engine in turn, with fresh tables and the "memory" backend registered."""
    await engine_under_test.reset()
    return engine_under_test


@pytest.fixture(params=["sqlite-async", "postgresql-async"])
def async_engine_under_test(request: pytest.FixtureRequest) -> Db:
    return Db(request.param, request.getfixturevalue(ENGINES[request.param]))


@pytest.fixture
async def async_engine(async_engine_under_test: Db, memory_backend: ObstoreBackend) -> AsyncEngine:
    await async_engine_under_test.reset()
    assert isinstance(async_engine_under_test.engine, AsyncEngine)
    return async_engine_under_test.engine


def pending(name: str, data: bytes | None = None, **kwargs: Any) -> FileObject:
    return FileObject(filename=name, content=data if data is not None else name.encode(), **kwargs)


def paths(files: list[FileObject] | None) -> list[str | None]:
    return [f.path for f in files or []]


async def seed(db: Db, **values: Any) -> None:
    """Insert document 1 with `values` through the ORM (uploading pending files)."""

    def insert(session: Session) -> None:
        session.add(Document(id=1, **values))
        session.commit()

    await db.run(insert)


async def load(db: Db, check: Callable[[Document], T]) -> T:
    """Load document 1 in a fresh session and run `check` on it."""

    def scenario(session: Session) -> T:
        doc = session.get(Document, 1)
        assert doc is not None
        return check(doc)

    return await db.run(scenario)


# -- the column type -------------------------------------------------------------------------
async def test_column_is_jsonb_on_postgresql_and_json_on_sqlite(db: Db) -> None:
    if db.dialect == "postgresql":
        rows = await db.sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = :t AND column_name IN ('file', 'files') ORDER BY column_name",
            t=TABLE,
        )
        assert [tuple(r) for r in rows] == [("file", "jsonb"), ("files", "jsonb")]
    else:
        rows = await db.sql(
            f"SELECT name, type FROM pragma_table_info('{TABLE}') "
            "WHERE name IN ('file', 'files') ORDER BY name"
        )
        assert [tuple(r) for r in rows] == [("file", "JSON"), ("files", "JSON")]


# -- round trips --------------------------------------------------------------------------------
async def test_single_round_trip(db: Db, memory_backend: ObstoreBackend) -> None:
    def write(session: Session) -> dict[str, Any]:
        file = pending("report.pdf", b"%PDF-1.7", metadata={"owner": "alice"})
        session.add(Document(id=1, file=file))
        session.commit()
        assert file.is_saved  # uploaded during flush
        return file.to_dict()

    written = await db.run(write)
    assert written["backend"] == "memory"
    assert written["size"] == 8

    def check(doc: Document) -> None:
        assert isinstance(doc.file, FileObject)
        assert doc.file.to_dict() == written
        assert isinstance(doc.file.last_modified, datetime)
        assert doc.file.last_modified.tzinfo is not None
        assert doc.file.metadata == {"owner": "alice"}
        assert doc.file.get_content() == b"%PDF-1.7"
        assert isinstance(doc.files, FileObjectList)
        assert list(doc.files) == []

    await load(db, check)
    assert await db.raw_json(1, "file") == written


async def test_list_round_trip(db: Db) -> None:
    def write(session: Session) -> list[dict[str, Any]]:
        doc = Document(id=1, files=[pending("a.txt"), pending("b.png"), pending("c.bin")])
        session.add(doc)
        session.commit()
        assert doc.files is not None
        return [f.to_dict() for f in doc.files]

    written = await db.run(write)
    assert [d["filename"] for d in written] == ["a.txt", "b.png", "c.bin"]

    def check(doc: Document) -> None:
        assert isinstance(doc.files, FileObjectList)
        assert [f.to_dict() for f in doc.files] == written
        assert [f.get_content() for f in doc.files] == [b"a.txt", b"b.png", b"c.bin"]

    await load(db, check)
    assert await db.raw_json(1, "files") == written


async def test_none_round_trips_as_sql_null(db: Db) -> None:
    await seed(db, file=None)
    assert await db.is_sql_null(1, "file")
    # The ORM leaves a None out of the INSERT when the column has a default (list).
    assert await db.raw_json(1, "files") == []

    def clear_list(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is None
        doc.files = None
        session.commit()

    await db.run(clear_list)
    assert await db.is_sql_null(1, "files")

    def check(doc: Document) -> None:
        assert doc.file is None
        assert doc.files is None

    await load(db, check)


async def test_assigning_none_stores_sql_null(db: Db) -> None:
    await seed(db, file=pending("a.txt"), files=[pending("b.txt")])
    assert not await db.is_sql_null(1, "file")

    def clear(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        doc.file = None
        doc.files = None
        session.commit()

    await db.run(clear)
    assert await db.is_sql_null(1, "file")
    assert await db.is_sql_null(1, "files")


async def test_json_null_is_read_as_none(db: Db) -> None:
    await db.insert_raw(1, "file", "null")
    assert not await db.is_sql_null(1, "file")  # JSON null, not SQL NULL
    assert await load(db, lambda doc: doc.file) is None


async def test_unknown_fields_are_preserved(db: Db) -> None:
    await seed(db, file=pending("a.txt"))
    stored = await db.raw_json(1, "file")
    await db.sql(f"DELETE FROM {TABLE}")
    future = {**stored, "v": 2, "renditions": {"thumb": "t/a.png"}}
    await db.insert_raw(1, "file", json.dumps(future))

    def rename(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        doc.file.filename = "renamed.txt"
        session.commit()

    await db.run(rename)
    after = await db.raw_json(1, "file")
    assert after["renditions"] == {"thumb": "t/a.png"}
    assert after["filename"] == "renamed.txt"


# -- list mutations ---------------------------------------------------------------------------
Mutation = Callable[[list[FileObject], FileObject], Any]


def _setitem(files: list[FileObject], new: FileObject) -> None:
    files[1] = new


def _setslice(files: list[FileObject], new: FileObject) -> None:
    files[0:2] = [new]


def _delitem(files: list[FileObject], new: FileObject) -> None:
    del files[1]


def _delslice(files: list[FileObject], new: FileObject) -> None:
    del files[:2]


def _iadd(files: list[FileObject], new: FileObject) -> None:
    files += [new]


LIST_MUTATIONS: dict[str, Mutation] = {
    "append": lambda files, new: files.append(new),
    "remove": lambda files, new: files.remove(files[1]),
    "setitem": _setitem,
    "setitem-slice": _setslice,
    "extend": lambda files, new: files.extend([new]),
    "iadd": _iadd,
    "pop": lambda files, new: files.pop(),
    "pop-index": lambda files, new: files.pop(0),
    "clear": lambda files, new: files.clear(),
    "insert": lambda files, new: files.insert(1, new),
    "del": _delitem,
    "del-slice": _delslice,
    "sort": lambda files, new: files.sort(key=lambda f: f.filename, reverse=True),
    "reverse": lambda files, new: files.reverse(),
}


@pytest.mark.parametrize("mutation", list(LIST_MUTATIONS))
async def test_list_mutation_marks_dirty_and_persists(db: Db, mutation: str) -> None:
    await seed(db, files=[pending("a.txt"), pending("b.txt"), pending("c.txt")])
    mutate = LIST_MUTATIONS[mutation]

    def change(session: Session) -> list[str | None]:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.files is not None
        assert not session.is_modified(doc)
        expected = list(doc.files)  # a plain list gets the same operation
        new = pending("new.txt")
        mutate(doc.files, new)
        mutate(expected, new)
        assert doc in session.dirty
        assert session.is_modified(doc)
        session.commit()
        return paths(expected)

    expected = await db.run(change)
    assert None not in expected  # the new file was uploaded by the flush
    assert await load(db, lambda doc: paths(doc.files)) == expected
    assert [item["path"] for item in await db.raw_json(1, "files")] == expected


async def test_list_mutations_on_a_new_row(db: Db) -> None:
    def write(session: Session) -> list[str | None]:
        doc = Document(id=1, files=[pending("a.txt")])
        assert doc.files is not None
        doc.files.append(pending("b.txt"))
        doc.files.insert(0, pending("c.txt"))
        session.add(doc)
        session.commit()
        return paths(doc.files)

    written = await db.run(write)
    assert len(written) == 3
    assert await load(db, lambda doc: paths(doc.files)) == written


async def test_in_place_change_of_a_list_item_persists(db: Db) -> None:
    await seed(db, files=[pending("a.txt"), pending("b.txt")])

    def change(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.files is not None
        doc.files[1].metadata["k"] = "v"
        assert session.is_modified(doc)
        session.commit()

    await db.run(change)
    metadata = await load(db, lambda doc: [f.metadata for f in doc.files or []])
    assert metadata == [{}, {"k": "v"}]


# -- in-place changes of a single file ------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    ["metadata-set", "metadata-update", "metadata-delete", "filename", "content_type"],
)
async def test_in_place_change_persists(db: Db, change: str) -> None:
    await seed(db, file=pending("a.txt", metadata={"keep": "1", "drop": "2"}))

    def modify(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        file = doc.file
        assert file is not None
        assert not session.is_modified(doc)
        if change == "metadata-set":
            file.metadata["k"] = "v"
        elif change == "metadata-update":
            file.metadata.update({"k": "v"})
        elif change == "metadata-delete":
            del file.metadata["drop"]
        elif change == "filename":
            file.filename = "renamed.txt"
        else:
            file.content_type = "text/markdown"
        assert doc in session.dirty
        assert session.is_modified(doc)
        session.commit()

    await db.run(modify)
    stored = await db.raw_json(1, "file")
    expected_metadata = {"keep": "1", "drop": "2"}
    if change in {"metadata-set", "metadata-update"}:
        expected_metadata["k"] = "v"
    elif change == "metadata-delete":
        del expected_metadata["drop"]
    assert stored["metadata"] == expected_metadata
    assert stored["filename"] == ("renamed.txt" if change == "filename" else "a.txt")
    expected_type = "text/markdown" if change == "content_type" else "text/plain"
    assert stored["content_type"] == expected_type
    assert await load(db, lambda doc: doc.file and doc.file.to_dict()) == stored


async def test_reading_does_not_dirty_the_row(db: Db) -> None:
    await seed(db, file=pending("a.txt"), files=[pending("b.txt")])

    def read(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        assert doc.files is not None
        _ = doc.file.metadata.get("x"), doc.file.filename, list(doc.files), doc.files[0].size
        assert not session.is_modified(doc)
        assert doc not in session.dirty

    await db.run(read)


# -- assignment rules ---------------------------------------------------------------------------
async def test_file_without_backend_takes_the_columns(db: Db) -> None:
    def write(session: Session) -> None:
        file = pending("a.txt")
        assert file.backend is None
        doc = Document(id=1, file=file, files=[pending("b.txt")])
        assert file.backend == "memory"  # adopted on assignment
        assert doc.files is not None
        doc.files.append(pending("c.txt"))
        session.add(doc)
        session.commit()

    await db.run(write)
    assert (await db.raw_json(1, "file"))["backend"] == "memory"
    assert [f["backend"] for f in await db.raw_json(1, "files")] == ["memory", "memory"]


async def test_file_with_its_own_backend_keeps_it(db: Db) -> None:
    from sqlalchemy_obstore import storages

    other = ObstoreBackend("other", "memory://")
    storages.register_backend(other)

    def write(session: Session) -> str | None:
        doc = Document(id=1, file=pending("a.txt", backend="other"))
        session.add(doc)
        session.commit()
        assert doc.file is not None
        return doc.file.path

    path = await db.run(write)
    assert path is not None
    assert other.exists(path)
    assert (await db.raw_json(1, "file"))["backend"] == "other"


async def test_dict_assigned_is_coerced_but_untrusted(
    db: Db, memory_backend: ObstoreBackend
) -> None:
    memory_backend.put("existing/a.txt", b"already there")
    shape = {"path": "existing/a.txt", "filename": "a.txt", "size": 13}

    def refused(session: Session) -> None:
        doc = Document(id=1)
        doc.file = shape  # type: ignore[assignment]
        doc.files = [{"path": "existing/a.txt"}, pending("c.txt")]  # type: ignore[list-item]
        assert isinstance(doc.file, FileObject)
        assert doc.file.backend == "memory"  # takes the column's backend
        assert not doc.file.is_trusted  # a dict is outside data
        assert isinstance(doc.files, FileObjectList)
        assert all(isinstance(f, FileObject) for f in doc.files)
        session.add(doc)
        with pytest.raises(UntrustedReferenceError):
            session.commit()
        session.rollback()

    await db.run(refused)
    assert memory_backend.get_bytes("existing/a.txt") == b"already there"
    assert [o.path for o in memory_backend.list_objects()] == ["existing/a.txt"]

    def trusted(session: Session) -> None:
        doc = Document(id=1)
        doc.file = FileObject.from_dict(shape, trusted=True)
        doc.files = [pending("c.txt")]
        doc.files.append(FileObject.from_dict({"path": "existing/a.txt"}, trusted=True))
        session.add(doc)
        session.commit()

    await db.run(trusted)

    def echo(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        # an edit form sends the row's value back, renamed and with forged facts
        body = {**doc.file.to_dict(), "filename": "renamed.txt", "size": 1, "checksum": None}
        doc.file = body  # type: ignore[assignment]
        doc.files = [FileObject.from_dict(f.to_dict()) for f in doc.files]
        session.commit()

    await db.run(echo)

    def check(doc: Document) -> None:
        assert doc.file is not None
        assert doc.file.is_trusted
        assert doc.file.get_content() == b"already there"
        assert doc.file.size == 13  # the row's facts, not the body's
        assert doc.file.filename == "renamed.txt"  # the body's name
        assert [f.filename for f in doc.files or []] == ["c.txt", "a.txt"]

    await load(db, check)


@pytest.mark.parametrize("value", ["a.txt", 5, b"bytes", ["a"], object()])
def test_wrong_type_assigned_to_single_column(value: Any) -> None:
    doc = Document()
    with pytest.raises(ValueError, match="FileObject"):
        doc.file = value


@pytest.mark.parametrize("value", ["abc", 5, {"path": "x"}, [5], ["a.txt"], [None]])
def test_wrong_type_assigned_to_list_column(value: Any) -> None:
    doc = Document()
    with pytest.raises(ValueError, match=r"FileObject|list"):
        doc.files = value


def test_wrong_type_added_to_a_list() -> None:
    doc = Document(files=[])
    assert doc.files is not None
    with pytest.raises(ValueError, match="FileObject"):
        doc.files.append("a.txt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FileObject"):
        doc.files.extend([5])  # type: ignore[list-item]


def test_malformed_dict_assigned() -> None:
    doc = Document()
    with pytest.raises(ValueError, match="path"):
        doc.file = {"no": "path"}  # type: ignore[assignment]


# -- malformed data in the column ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("file", '{"no": "path"}', "path"),
        ("file", "42", "int"),
        ("file", '"just a string"', "str"),
        ("file", '[{"path": "a"}]', "array"),
        ("file", '{"path": "k", "size": "big"}', "size"),
        ("file", '{"path": "k", "metadata": {"n": 1}}', "metadata"),
        ("file", '{"path": "k", "last_modified": "not a date"}', "last_modified"),
        ("files", '{"path": "a"}', "array"),
        ("files", "7", "int"),
        ("files", '[{"path": "ok"}, {"no": "path"}]', "path"),
        ("files", "[3]", "int"),
    ],
)
async def test_malformed_column_json(db: Db, column: str, value: str, detail: str) -> None:
    await db.insert_raw(1, column, value)

    def read(session: Session) -> None:
        session.get(Document, 1)

    with pytest.raises(InvalidFileObjectError) as info:
        await db.run(read)
    message = str(info.value)
    assert f"{TABLE}.{column}" in message
    assert detail in message
    assert isinstance(info.value, ValueError)


@pytest.fixture(params=["sqlite", "sqlite-async"])
def sqlite_under_test(request: pytest.FixtureRequest) -> Db:
    return Db(request.param, request.getfixturevalue(ENGINES[request.param]))


@pytest.fixture
async def sqlite_db(sqlite_under_test: Db, memory_backend: ObstoreBackend) -> Db:
    """SQLite only: its JSON column holds any text (PostgreSQL's JSONB refuses non-JSON)."""
    await sqlite_under_test.reset()
    return sqlite_under_test


async def test_column_text_that_is_not_json(sqlite_db: Db) -> None:
    db = sqlite_db
    await db.insert_raw(1, "file", '{"path": "k", "size": ')

    def read(session: Session) -> None:
        session.get(Document, 1)

    with pytest.raises(InvalidFileObjectError, match=f"{TABLE}.file: not JSON"):
        await db.run(read)


@pytest.mark.parametrize(
    ("stored", "check"),
    [
        (  # the usual shape, written by to_dict()
            '{"v": 1, "backend": "memory", "path": "k/a.txt", "filename": "a.txt", '
            '"content_type": "text/plain", "size": 3, "etag": "e", "version": null, '
            '"checksum": "sha256:00", "last_modified": "2024-05-06T07:08:09.123456+00:00", '
            '"metadata": {}}',
            {"size": 3, "last_modified": "2024-05-06T07:08:09.123456+00:00"},
        ),
        (  # a timestamp without a zone is UTC; "Z" is read on every Python
            '{"path": "k/b.txt", "content_type": "text/plain", "last_modified": '
            '"2024-05-06T07:08:09"}',
            {
                "filename": "b.txt",
                "backend": "memory",
                "last_modified": "2024-05-06T07:08:09+00:00",
            },
        ),
        (
            '{"path": "k/c.txt", "content_type": "text/plain", "last_modified": '
            '"2024-05-06T07:08:09Z"}',
            {"last_modified": "2024-05-06T07:08:09+00:00"},
        ),
        (  # metadata takes the fast path too, and stays tracked
            '{"path": "k/d.txt", "content_type": "text/plain", "metadata": {"a": "1"}}',
            {"metadata": {"a": "1"}},
        ),
        (  # no content type: guessed from the name (the general path)
            '{"path": "k/e.json"}',
            {"content_type": "application/json"},
        ),
        (  # a wrong type: the general path names the field
            '{"path": "k/f.txt", "content_type": "text/plain", "size": 1.5}',
            {"error": "size"},
        ),
    ],
)
async def test_stored_text_is_read_like_the_driver_decoded_value(
    db: Db, stored: str, check: dict[str, Any]
) -> None:
    """The ORM path (column text, fast decoder) and a driver-decoded value agree."""
    await db.insert_raw(1, "file", stored)
    plain = Document.__table__.c.file.type

    def orm(session: Session) -> dict[str, Any]:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        return doc.file.to_dict()

    def untyped(session: Session) -> dict[str, Any]:
        # text() with a StoredObject result column: PostgreSQL drivers decode JSONB
        # themselves here (no CAST), SQLite gives the text.
        statement = text(f"SELECT file FROM {TABLE} WHERE id = 1").columns(file=plain)
        file = session.execute(statement).scalar_one()
        assert isinstance(file, FileObject)
        return file.to_dict()

    if "error" in check:
        for read in (orm, untyped):
            with pytest.raises(InvalidFileObjectError, match=check["error"]):
                await db.run(read)
        return
    via_orm = await db.run(orm)
    assert via_orm == await db.run(untyped)
    for key, expected in check.items():
        assert via_orm[key] == expected, key


def test_postgresql_selects_the_column_as_text() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    pg = str(select(Document).compile(dialect=postgresql.dialect()))
    assert f"CAST({TABLE}.file AS TEXT) AS file" in pg
    assert f"CAST({TABLE}.files AS TEXT) AS files" in pg
    assert "CAST" not in str(select(Document).compile(dialect=sqlite.dialect()))
    # the WHERE clause still sees JSONB
    where = select(Document.id).where(Document.file["path"].as_string() == "k")
    assert f"CAST({TABLE}.file AS TEXT)" not in str(where.compile(dialect=postgresql.dialect()))


async def test_column_in_other_statement_shapes(db: Db) -> None:
    """Subqueries, CTEs, unions, INSERT ... SELECT and RETURNING keep the column's type.

    (On PostgreSQL only the outermost SELECT list reads the column as text; a nested
    SELECT must hand JSONB on, or INSERT ... SELECT would insert text into JSONB.)
    """
    from sqlalchemy import insert, union_all, update

    await seed(db, file=pending("a.txt"))

    def shapes(session: Session) -> list[Any]:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        path = doc.file.path
        copy = insert(Document).from_select(["id", "file"], select(Document.id + 1, Document.file))
        session.execute(copy)
        latest = select(Document.file).where(Document.id == 1).scalar_subquery()
        session.execute(update(Document).where(Document.id == 2).values(file=latest))
        cte = select(Document.id, Document.file).cte()
        both = union_all(select(Document.file), select(Document.file))
        returned = session.execute(
            update(Document).where(Document.id == 1).values(file=doc.file).returning(Document.file)
        ).scalar_one()
        session.commit()
        return [
            path,
            [f.path for f in session.scalars(select(cte.c.file).order_by(cte.c.id))],
            [f.path for f in session.scalars(both)],
            returned.path,
        ]

    path, via_cte, via_union, returned = await db.run(shapes)
    assert via_cte == [path, path]
    assert via_union == [path] * 4
    assert returned == path
    assert (await db.raw_json(2, "file"))["path"] == path


async def test_metadata_read_from_text_is_tracked(db: Db) -> None:
    await db.insert_raw(
        1, "file", '{"path": "k/d.txt", "content_type": "text/plain", "metadata": {"a": "1"}}'
    )

    def change(session: Session) -> None:
        doc = session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        doc.file.metadata["b"] = "2"
        assert doc in session.dirty
        session.commit()

    await db.run(change)
    assert (await db.raw_json(1, "file"))["metadata"] == {"a": "1", "b": "2"}


async def test_malformed_row_does_not_break_other_rows(db: Db) -> None:
    await seed(db, file=pending("good.txt"))
    await db.insert_raw(2, "file", '{"no": "path"}')
    assert await load(db, lambda doc: doc.file and doc.file.filename) == "good.txt"

    def select_all(session: Session) -> None:
        session.scalars(select(Document)).all()

    with pytest.raises(InvalidFileObjectError, match=f"{TABLE}.file"):
        await db.run(select_all)


# -- genuinely async ------------------------------------------------------------------------------
async def test_async_session_commit_uploads_pending_files(
    async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    async with AsyncSession(async_engine) as session:
        single = pending("single.txt", b"one")
        listed = [pending("l1.txt", b"l1"), pending("l2.txt", b"l2")]
        session.add(Document(id=1, file=single, files=listed))
        await session.commit()
        assert single.is_saved
        assert all(f.is_saved for f in listed)
        assert single.path is not None
        assert await memory_backend.exists_async(single.path)
        assert await single.get_content_async() == b"one"

    async with AsyncSession(async_engine) as session:
        doc = await session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        assert doc.files is not None
        assert await doc.file.get_content_async() == b"one"
        assert [await f.get_content_async() for f in doc.files] == [b"l1", b"l2"]
        doc.files.append(pending("l3.txt", b"l3"))
        doc.file.metadata["seen"] = "yes"
        assert session.is_modified(doc)
        await session.commit()

    async with AsyncSession(async_engine) as session:
        result = await session.scalars(select(Document))
        doc = result.one()
        assert doc.file is not None
        assert doc.file.metadata == {"seen": "yes"}
        assert [f.filename for f in doc.files or []] == ["l1.txt", "l2.txt", "l3.txt"]
        assert await (doc.files or [])[2].get_content_async() == b"l3"


async def test_async_session_streams_async_iterator_content(
    async_engine: AsyncEngine, memory_backend: ObstoreBackend
) -> None:
    async def chunks() -> Any:
        for i in range(4):
            yield bytes([i]) * 1000

    async with AsyncSession(async_engine) as session:
        file = FileObject(filename="stream.bin", content=chunks())
        session.add(Document(id=1, file=file))
        await session.commit()
        assert file.size == 4000
        assert file.path is not None

    async with AsyncSession(async_engine) as session:
        doc = await session.get(Document, 1)
        assert doc is not None
        assert doc.file is not None
        data = b"".join([c async for c in doc.file.iter_chunks_async(1024)])
        assert data == b"".join(bytes([i]) * 1000 for i in range(4))
