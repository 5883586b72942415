"""Content types, metadata and unknown fields: stored as given or refused with a typed error.

The filenames of issue 13 (item 10) are not the only text a client can put into a file:
the declared content type (a form part's `Content-Type`, a ticket request), metadata
taken from a form, and the unknown fields of a request body. What no store or database
can keep used to fail deep inside a save: a content type with a control character or a
line break made obstore stop with an internal error on S3 and Azure (and on moto a
non-ASCII one was stored, then could not be read back), NUL or a lone surrogate in
metadata made PostgreSQL refuse the JSONB row at commit, after the upload, and a lone
surrogate in a body's key raised `UnicodeEncodeError` from `FileObject.from_dict`. Each
is now an `InvalidFileObjectError` (a `ValueError`, 422 through `error_status`) before
any I/O, and a declared type that is not a type at all counts as not declared.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import msgspec
import pydantic
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    InvalidFileObjectError,
    ObstoreBackend,
    StoredObject,
    storages,
)
from sqlalchemy_obstore.contrib.msgspec import dec_hook
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.uploads import error_status, file_from_stream
from tests.conftest import PG_SERVER
from tests.integration.backends import azurite_backend, s3_backend
from tests.servers import AzuriteServer, MotoServer

KEY = "texts"
SECRET = "t" * 32

BAD_TYPES = [
    "text/plain\r\nX-Amz-Meta-Injected: 1",
    "text/plain\n",
    "text/plain\x00",
    "text/plain\x01",
    "text/plain\x7f",
    "t\u00ebxt/plain",
    "text/plain\ud800",
    "image/" + "x" * 300,
]
GOOD_TYPES = ["text/plain", "text/plain; charset=utf-8", "image/png", "application/x-custom+json"]
BAD_METADATA = [{"k": "a\x00b"}, {"a\x00": "v"}, {"k": "\udc80"}, {"\ud800": "v"}]


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "stored_text_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(KEY))


class DocIn(pydantic.BaseModel):
    file: FileObject


@pytest.fixture(scope="module")
def engine(pg_database: str) -> Iterator[Engine]:
    engine = create_engine(f"postgresql+psycopg://{PG_SERVER}/{pg_database}")
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["moto", "azurite"])
def store(request: pytest.FixtureRequest) -> ObstoreBackend:
    """The backend on a real server that sends the content type as a header."""
    prefix = f"texts-{uuid.uuid4().hex[:10]}"
    if request.param == "moto":
        server: MotoServer = request.getfixturevalue("moto_server")
        backend = s3_backend(server, key=KEY, prefix=prefix)
    else:
        azurite: AzuriteServer = request.getfixturevalue("azurite_server")
        backend = azurite_backend(azurite, key=KEY, prefix=prefix)
    storages.register_backend(backend, replace=True)
    return backend


@pytest.fixture
def memory() -> ObstoreBackend:
    backend = ObstoreBackend(KEY, "memory://", url_signer=HmacUrlSigner(SECRET))
    storages.register_backend(backend, replace=True)
    return backend


def refused(make: object) -> InvalidFileObjectError:
    assert callable(make)
    with pytest.raises(InvalidFileObjectError) as info:
        make()
    assert error_status(info.value) == 422
    assert isinstance(info.value, ValueError)
    return info.value


# -- content types --------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", BAD_TYPES)
def test_a_content_type_no_header_can_carry_is_refused_before_the_store(
    store: ObstoreBackend, content_type: str
) -> None:
    refused(lambda: FileObject(filename="a.txt", content=b"x", content_type=content_type))
    refused(lambda: FileObject(filename="a.txt", content="text", content_type=content_type))
    refused(lambda: file_from_stream(iter([b"x"]), filename="a.txt", content_type=content_type))
    file = FileObject(filename="a.txt", content=b"x", backend=KEY)

    def assign() -> None:
        file.content_type = content_type

    refused(assign)
    assert file.content_type == "text/plain"  # unchanged
    assert list(store.list_objects(store.prefix)) == []  # nothing reached the store (its prefix)


@pytest.mark.parametrize("content_type", GOOD_TYPES)
def test_well_formed_content_types_are_stored_as_given(
    store: ObstoreBackend, content_type: str
) -> None:
    file = FileObject(filename="a.bin", content=b"x", content_type=content_type, backend=KEY)
    file.save()
    assert file.content_type == content_type
    assert store.head(str(file.path)).content_type == content_type


@pytest.mark.parametrize("declared", BAD_TYPES)
def test_a_form_part_declaring_no_real_type_counts_as_undeclared(
    store: ObstoreBackend, declared: str
) -> None:
    # Starlette and Litestar give the part's header as text; a client can send anything.
    upload = SimpleNamespace(
        file=io.BytesIO(b"%PDF-1.7\n"), filename="r.pdf", content_type=declared
    )
    file = FileObject.from_upload(upload, backend=KEY).save()
    assert file.content_type == "application/pdf"  # from the name, as with no type
    assert store.head(str(file.path)).content_type == "application/pdf"


def test_a_bad_content_type_never_reaches_a_jsonb_row(
    engine: Engine, memory: ObstoreBackend
) -> None:
    refused(lambda: Doc(file=FileObject(filename="a", content=b"x", content_type="a/b\x00")))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Doc)) == 0
    assert list(memory.list_objects()) == []


# -- metadata -------------------------------------------------------------------------------------
@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_metadata_no_database_can_keep_is_refused_everywhere(
    engine: Engine, memory: ObstoreBackend, metadata: dict[str, str]
) -> None:
    refused(lambda: FileObject(filename="a.txt", content=b"x", metadata=metadata))
    file = FileObject(filename="a.txt", content=b"x", backend=KEY)
    ((key, value),) = metadata.items()

    def set_item() -> None:
        file.metadata[key] = value

    def update() -> None:
        file.metadata.update(metadata)

    def assign() -> None:
        file.metadata = metadata

    for change in (set_item, update, assign):
        refused(change)
    assert dict(file.metadata) == {}
    refused(lambda: UploadTickets(SECRET).issue(KEY, "a.txt", metadata=metadata))
    # Before this, PostgreSQL refused the row at commit, after the upload.
    with Session(engine) as session:
        session.add(Doc(file=FileObject(filename="a.txt", content=b"x", metadata={"k": "v"})))
        session.commit()
        row = session.scalars(select(Doc)).one()
        assert row.file is not None
        refused(set_item)  # a loaded file's metadata refuses it the same way
        session.commit()
        session.delete(row)
        session.commit()
    assert list(memory.list_objects()) == []


def test_metadata_of_any_other_text_is_kept(engine: Engine, memory: ObstoreBackend) -> None:
    metadata = {"title": "R\u00e9sum\u00e9 \u202e\U0001f4be", "note": "line\nbreak\ttab"}
    with Session(engine) as session:
        doc = Doc(file=FileObject(filename="a.txt", content=b"x", metadata=metadata))
        session.add(doc)
        session.commit()
        doc_id = doc.id
    with Session(engine) as session:
        loaded = session.get(Doc, doc_id)
        assert loaded is not None
        assert loaded.file is not None
        assert dict(loaded.file.metadata) == metadata
        session.delete(loaded)
        session.commit()


# -- unknown fields of a request body -------------------------------------------------------------
def test_a_lone_surrogate_in_a_bodys_key_is_a_validation_error(memory: ObstoreBackend) -> None:
    # json.loads (Starlette's request.json(), FastAPI's body parsing) decodes a \ud800
    # escape to a lone surrogate, in keys too.
    body = json.loads('{"backend": "texts", "path": "a/b.txt", "x\\ud800": 1}')
    refused(lambda: FileObject.from_dict(body))
    refused(lambda: Doc(file=body))  # a dict assigned to a column
    with pytest.raises(pydantic.ValidationError):
        DocIn.model_validate({"file": body})
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, type=FileObject, dec_hook=dec_hook)
