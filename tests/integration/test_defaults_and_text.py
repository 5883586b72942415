"""The default backend, text content, size strings, `info` and gzip, on real stores.

* A `StoredObject()` column and a `FileObject` without `backend=` use the registry's
  default; rows record the key they resolved to (PostgreSQL), so changing the default
  later leaves them where they are; an untrusted value naming no backend cannot reach
  the default backend on its own.
* `compress=True` stores textual content gzip-compressed with `Content-Encoding: gzip`
  on S3 (moto and SeaweedFS): the object's header is set, `size` and `checksum` are
  those of the stored bytes, and a plain HTTP GET of a signed URL (httpx, as a browser)
  decodes to the original text.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    NoDefaultBackendError,
    ObstoreBackend,
    StoredObject,
    UntrustedReferenceError,
    UploadPolicy,
    storages,
)
from sqlalchemy_obstore.errors import FileTooLargeError
from sqlalchemy_obstore.file_object import SaveOptions
from tests.integration.backends import s3_backend
from tests.integration.web_scenarios import asgi_lifespan
from tests.servers import S3Server

TEXT = "Grüße, " + "lorem ipsum dolor sit amet " * 400  # compressible, not ASCII


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "defaults_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject())
    zipped: Mapped[FileObject | None] = mapped_column(StoredObject(compress=True))


@pytest.fixture
def engine(pg_engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(pg_engine)
    yield pg_engine
    Base.metadata.drop_all(pg_engine)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(params=["seaweed", "moto"])
def s3(request: pytest.FixtureRequest) -> ObstoreBackend:
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return s3_backend(server, key="s3", prefix=f"defaults-{uuid.uuid4().hex[:10]}")


# -- the default backend -----------------------------------------------------------------------
def test_rows_record_the_default_they_were_written_with(engine: Engine) -> None:
    first, second = ObstoreBackend("first", "memory://"), ObstoreBackend("second", "memory://")
    storages.register_backend(first, default=True)
    storages.register_backend(second)
    with Session(engine) as session:
        note = Note(file=FileObject(filename="a.txt", content="one"))
        session.add(note)
        session.commit()
        note_id = note.id
        stored = (
            session.connection()
            .exec_driver_sql("SELECT file->>'backend' FROM defaults_notes")
            .scalar_one()
        )
    assert stored == "first"

    storages.set_default("second")  # later rows go elsewhere; this one stays
    with Session(engine) as session:
        note = session.get_one(Note, note_id)
        assert note.file is not None
        assert note.file.backend == "first"
        assert note.file.get_content() == b"one"
        session.add(Note(file=FileObject(filename="b.txt", content="two")))
        session.commit()
        backends = sorted(n.file.backend for n in session.scalars(select(Note)) if n.file)
    assert backends == ["first", "second"]


def test_no_default_is_a_typed_error_and_nothing_is_written(engine: Engine) -> None:
    storages.register_backend(ObstoreBackend("uploads", "memory://"))  # not the default
    with Session(engine) as session:
        session.add(Note(file=FileObject(filename="a.txt", content="x")))
        with pytest.raises(NoDefaultBackendError, match="set_default"):
            session.commit()
        session.rollback()
        assert session.scalars(select(Note)).all() == []


def test_an_untrusted_value_without_a_backend_does_not_reach_the_default(
    engine: Engine,
) -> None:
    uploads = ObstoreBackend("uploads", "memory://")
    storages.register_backend(uploads, default=True)
    secret = FileObject(filename="s.txt", content=b"secret", backend="uploads").save()
    assert secret.path is not None
    forged = FileObject.from_dict({"path": secret.path})  # a request body
    with pytest.raises(UntrustedReferenceError):
        forged.get_content()
    with Session(engine) as session:
        session.add(Note(file=forged))
        with pytest.raises(UntrustedReferenceError):
            session.commit()


# -- text content, size strings, info ----------------------------------------------------------
def test_text_info_and_size_strings_on_postgresql(engine: Engine) -> None:
    storages.register_backend(ObstoreBackend("uploads", "memory://"), default=True)
    with Session(engine) as session:
        note = Note(
            file=FileObject(
                filename="notes.md", content="# Über", info={"toc": [{"h": "Über", "line": 1}]}
            )
        )
        session.add(note)
        session.commit()
        session.expire_all()
        assert note.file is not None
        assert note.file.content_type == "text/markdown; charset=utf-8"
        assert note.file.get_content().decode("utf-8") == "# Über"
        assert note.file.info == {"toc": [{"h": "Über", "line": 1}]}
        assert "toc" not in note.file.metadata  # row-only: not object metadata
        note.file.info["pages"] = 2  # a top-level change marks the row dirty
        session.commit()
        session.expire_all()
        assert note.file.info["pages"] == 2

    big = FileObject(filename="big.txt", content="x" * 2000, backend="uploads")
    with pytest.raises(FileTooLargeError):
        big.save(policy=UploadPolicy(max_size="1 KiB"))
    small = FileObject(filename="ok.txt", content="x" * 1024, backend="uploads")
    assert small.save(policy=UploadPolicy(max_size="1 KiB")).size == 1024


# -- gzip --------------------------------------------------------------------------------------
def test_gzip_on_s3_is_decoded_by_an_http_client(s3: ObstoreBackend, http: httpx.Client) -> None:
    storages.register_backend(s3, default=True)
    file = FileObject(filename="report.csv", content=TEXT)
    file.save(options=SaveOptions(compress=True))
    stored = s3.get_bytes(file.path or "")

    assert file.content_encoding == "gzip"
    assert file.to_dict()["content_encoding"] == "gzip"
    assert s3.head(file.path or "").attributes.get("Content-Encoding") == "gzip"
    # size, checksum and the library's reads describe the stored (compressed) bytes
    assert gzip.decompress(stored) == TEXT.encode()
    assert file.size == len(stored) < len(TEXT.encode())
    assert file.checksum == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert file.get_content() == stored
    assert file.verify()

    response = http.get(file.sign())  # what a browser does with a signed URL
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text == TEXT  # httpx undoes Content-Encoding, as browsers do


def test_gzip_column_leaves_binary_content_alone(s3: ObstoreBackend, engine: Engine) -> None:
    storages.register_backend(s3, default=True)
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    with Session(engine) as session:
        note = Note(
            zipped=FileObject(filename="a.png", content=png),
            file=FileObject(filename="b.txt", content="plain"),
        )
        session.add(note)
        session.commit()
        assert note.zipped is not None
        assert note.file is not None
        assert note.zipped.content_encoding is None
        assert note.zipped.get_content() == png
        assert note.file.content_encoding is None  # (the column without compress)
        note.zipped = FileObject(filename="c.json", content='{"a": [' + "1," * 500 + "1]}")
        session.commit()
        assert note.zipped.content_encoding == "gzip"
        assert s3.head(note.zipped.path or "").attributes.get("Content-Encoding") == "gzip"


def test_gzip_is_skipped_where_no_header_could_say_so(local_backend: ObstoreBackend) -> None:
    storages.set_default(local_backend.key)  # (the fixture registered it)
    file = FileObject(filename="a.txt", content=TEXT).save(options=SaveOptions(compress=True))
    assert file.content_encoding is None
    assert file.get_content() == TEXT.encode()


async def test_gzip_through_the_librarys_own_routes_is_decoded_by_the_client() -> None:
    """`file_response` and the HMAC-signed route send `Content-Encoding: gzip`."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    from sqlalchemy_obstore.contrib.starlette import (
        file_response,
        storage_lifespan,
        storage_routes,
    )

    secret = "s" * 32
    memory = ObstoreBackend("uploads", "memory://")
    files: dict[str, FileObject] = {}

    async def download(request: Request) -> Response:
        return file_response(files["report"], request)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        async with storage_lifespan([memory], signing_secret=secret):
            yield

    app = Starlette(
        routes=[
            Route("/report", download),
            Mount("/_storage", app=storage_routes(signing_secret=secret)),
        ],
        lifespan=lifespan,
    )
    async with asgi_lifespan(app):
        storages.set_default("uploads")
        report = FileObject(filename="report.csv", content=TEXT)
        await report.save_async(options=SaveOptions(compress=True))
        assert report.content_encoding == "gzip"
        files["report"] = report
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            streamed = await client.get("/report")
            signed = await client.get(await report.sign_async())
    for response in (streamed, signed):
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert response.text == TEXT
