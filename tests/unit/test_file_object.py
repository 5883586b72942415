"""`FileObject` as a value: construction, column shape, equality, pickling, change
tracking and signed URLs (fake-credential stores only, no network)."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sqlalchemy_obstore._sign as sign_module
from sqlalchemy_obstore import (
    BackendNotFoundError,
    BackendRegistry,
    FileObject,
    FileObjectError,
    InvalidExpiryError,
    InvalidFileObjectError,
    NoContentError,
    NoDefaultBackendError,
    ObstoreBackend,
    SignedURL,
    StoredObject,
    UnsupportedOperationError,
    storages,
)

AWS_SECRET = "fakeSecretAccessKey/With+Symbols0000000001"
AZURE_KEY = "ZmFrZS1henVyZS1hY2NvdW50LWtleS0wMDAwMDAwMDAwMDA="
UUID_KEY = re.compile(r"^[0-9a-f]{32}/")


def s3_backend(
    key: str = "s3", access_key_id: str = "AKIAFAKEKEYID0000001", **extra: Any
) -> ObstoreBackend:
    return ObstoreBackend(
        key,
        "s3://bucket/",
        region="eu-west-1",
        access_key_id=access_key_id,
        secret_access_key=AWS_SECRET,
        **extra,
    )


@pytest.fixture
def s3() -> ObstoreBackend:
    backend = s3_backend()
    storages.register_backend(backend)
    return backend


@pytest.fixture
def azure() -> ObstoreBackend:
    backend = ObstoreBackend(
        "azure", "az://container/", account_name="fakeacct", access_key=AZURE_KEY
    )
    storages.register_backend(backend)
    return backend


class FakeClock:
    """Stands in for the clock of the URL cache (`sqlalchemy_obstore._sign.now`)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sign_module, "now", fake.time)
    return fake


@pytest.fixture
def changes(monkeypatch: pytest.MonkeyPatch) -> list[FileObject]:
    """Records every `FileObject.changed()` call (the real method still runs)."""
    calls: list[FileObject] = []
    original = FileObject.changed

    def recording(self: FileObject) -> None:
        calls.append(self)
        original(self)

    monkeypatch.setattr(FileObject, "changed", recording)
    return calls


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# -- construction ---------------------------------------------------------------------------------
def test_pending_file() -> None:
    file = FileObject(filename="a.txt", content=b"hello")
    assert file.has_pending_content
    assert not file.is_saved
    assert file.path is None
    assert file.backend is None
    assert file.size is None
    assert file.metadata == {}


def test_stored_file() -> None:
    file = FileObject(backend="b", path="k/a.txt", size=3, etag='"e"', checksum="sha256:00")
    assert file.is_saved
    assert not file.has_pending_content
    assert (file.backend, file.path, file.size, file.etag) == ("b", "k/a.txt", 3, '"e"')


def test_content_and_path_are_exclusive() -> None:
    with pytest.raises(InvalidFileObjectError, match=r"either content= .* or path="):
        FileObject(content=b"x", path="a/b")


def test_str_content_is_stored_as_utf8_with_a_charset() -> None:
    file = FileObject(filename="a.txt", content="héllo")
    assert file.__dict__["_content"] == "héllo".encode()
    assert file.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        (None, None, "text/plain; charset=utf-8"),  # no name: text/plain
        ("notes", None, "text/plain; charset=utf-8"),  # a name without a known type
        ("page.html", None, "text/html; charset=utf-8"),
        ("data.json", None, "application/json; charset=utf-8"),
        ("logo.svg", None, "image/svg+xml; charset=utf-8"),
        ("a.csv", "text/csv; charset=UTF-8", "text/csv; charset=UTF-8"),  # kept as given
        ("a.txt", "text/markdown", "text/markdown; charset=utf-8"),  # charset added
        ("a.bin", "application/octet-stream", "application/octet-stream"),  # not textual
    ],
)
def test_str_content_type(filename: str | None, content_type: str | None, expected: str) -> None:
    file = FileObject(filename=filename, content="x", content_type=content_type)
    assert file.content_type == expected


def test_str_content_refuses_another_charset() -> None:
    with pytest.raises(InvalidFileObjectError, match="UTF-8") as info:
        FileObject(content="x", content_type="text/plain; charset=latin-1")
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidFileObjectError, match="UTF-8"):
        FileObject(content="\ud800")  # a lone surrogate cannot be encoded


def test_str_content_round_trips_through_a_backend() -> None:
    with storages.temporary(ObstoreBackend("uploads", "memory://")):
        file = FileObject(filename="a.md", content="# Ünïcode", backend="uploads").save()
        assert file.get_content().decode("utf-8") == "# Ünïcode"
        assert file.size == len("# Ünïcode".encode())
        assert file.content_type == "text/markdown; charset=utf-8"
        assert storages.get_backend("uploads").head(file.path).content_type == (
            "text/markdown; charset=utf-8"
        )


def test_text_file_object_is_refused() -> None:
    with pytest.raises(InvalidFileObjectError, match="'rb'"):
        FileObject(content=io.StringIO("text"))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [42, 4.2, 3j, object()])
def test_unsupported_content_is_refused(bad: object) -> None:
    with pytest.raises(InvalidFileObjectError):
        FileObject(content=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content",
    [b"x", bytearray(b"x"), memoryview(b"x"), io.BytesIO(b"x"), iter([b"x"]), [b"x", b"y"]],
    ids=["bytes", "bytearray", "memoryview", "file", "iterator", "iterable"],
)
def test_accepted_content_kinds(content: Any) -> None:
    assert FileObject(content=content).has_pending_content


def test_async_iterator_content_is_accepted() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    assert FileObject(content=chunks()).has_pending_content


def test_filename_defaults_from_path_content(tmp_path: Path) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF")
    file = FileObject(content=source)
    assert file.filename == "report.pdf"
    assert file.content_type == "application/pdf"


def test_filename_defaults_from_file_object(tmp_path: Path) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(b"\x89PNG")
    with source.open("rb") as handle:
        file = FileObject(content=handle)
        assert file.filename == "photo.png"  # not the full path
        assert file.content_type == "image/png"


def test_filename_defaults_from_windows_style_file_name() -> None:
    upload = io.BytesIO(b"x")
    upload.name = "C:\\Users\\me\\photo.JPG"  # type: ignore[attr-defined]
    file = FileObject(content=upload)
    assert file.filename == "photo.JPG"
    assert file.content_type == "image/jpeg"


def test_filename_defaults_from_object_path() -> None:
    file = FileObject(backend="b", path="a/b/c.json")
    assert file.filename == "c.json"
    assert file.content_type == "application/json"


def test_filename_default_without_any_hint() -> None:
    file = FileObject(content=b"x")
    assert file.filename == "file"
    assert file.content_type == "application/octet-stream"


def test_explicit_filename_wins_and_is_kept_verbatim(tmp_path: Path) -> None:
    file = FileObject(filename="../../Überblick ‮.txt", content=tmp_path / "x.bin")
    assert file.filename == "../../Überblick ‮.txt"  # display data, kept as given
    assert file.safe_filename == "Überblick.txt"


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("a.txt", "text/plain"),
        ("a.PDF", "application/pdf"),
        ("a.png", "image/png"),
        ("a.html", "text/html"),
        ("a.unknownext", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_type_is_guessed(filename: str, content_type: str) -> None:
    assert FileObject(filename=filename, content=b"x").content_type == content_type


def test_explicit_content_type_wins() -> None:
    file = FileObject(filename="a.txt", content=b"x", content_type="text/csv")
    assert file.content_type == "text/csv"


def test_filename_must_be_a_string() -> None:
    with pytest.raises(InvalidFileObjectError, match="filename must be a string"):
        FileObject(filename=b"a.txt", content=b"x")  # type: ignore[arg-type]
    file = FileObject(filename="a.txt", content=b"x")
    with pytest.raises(InvalidFileObjectError, match="filename must be a string"):
        file.filename = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    "metadata",
    [{"k": 1}, {1: "v"}, {"k": None}, {"k": b"v"}, [("k", "v")], "k=v"],
)
def test_metadata_must_map_str_to_str(metadata: Any) -> None:
    with pytest.raises(InvalidFileObjectError, match="metadata"):
        FileObject(content=b"x", metadata=metadata)


def test_metadata_mutations_check_types() -> None:
    file = FileObject(content=b"x", metadata={"a": "1"})
    with pytest.raises(InvalidFileObjectError):
        file.metadata["b"] = 2  # type: ignore[assignment]
    with pytest.raises(InvalidFileObjectError):
        file.metadata.update({"c": 3})
    with pytest.raises(InvalidFileObjectError):
        file.metadata.setdefault("d", 4)  # type: ignore[arg-type]
    with pytest.raises(InvalidFileObjectError):
        file.metadata = {"e": 5}  # type: ignore[dict-item]
    assert file.metadata == {"a": "1"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", "5"), ("size", True), ("size", 1.5), ("etag", 5), ("backend", 3), ("path", 3)],
)
def test_field_types_are_checked(field: str, value: object) -> None:
    with pytest.raises(InvalidFileObjectError, match=field):
        FileObject(**{"backend": "b", "path": "k", field: value})


def test_bad_last_modified_is_an_invalid_file_object_error() -> None:
    with pytest.raises(InvalidFileObjectError, match="last_modified"):
        FileObject(backend="b", path="k", last_modified="yesterday-ish")
    with pytest.raises(InvalidFileObjectError, match="last_modified"):
        FileObject(backend="b", path="k", last_modified=1700000000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_modified", 1234567890.0),
        ("last_modified", "yesterday-ish"),
        ("size", "5"),
        ("size", True),
        ("etag", 5),
        ("backend", 3),
        ("path", 3),
        ("content_type", 3),
        ("filename", b"a.txt"),
    ],
)
def test_an_assignment_is_checked_as_the_constructor_checks_it(field: str, value: Any) -> None:
    """Issue #16: `file.last_modified = 1234567890.0` was accepted and the next commit
    failed with `AttributeError: 'float' object has no attribute 'isoformat'`."""
    with pytest.raises(InvalidFileObjectError) as by_constructor:
        FileObject(**{"backend": "b", "path": "k", field: value})
    file = stored()
    before = file.to_dict()
    with pytest.raises(InvalidFileObjectError) as by_assignment:
        setattr(file, field, value)
    assert type(by_assignment.value) is type(by_constructor.value)
    assert str(by_assignment.value) == str(by_constructor.value)
    assert file.to_dict() == before  # nothing was assigned


def test_an_assigned_timestamp_is_parsed_and_committed() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Attachment(id=1, file=stored()))
        session.commit()
        row = session.get(Attachment, 1)
        assert row is not None
        assert row.file is not None
        with pytest.raises(InvalidFileObjectError, match="last_modified"):
            row.file.last_modified = 1234567890.0  # type: ignore[assignment]
        row.file.last_modified = "2009-02-13T23:31:30Z"  # type: ignore[assignment]
        assert row.file.last_modified == datetime(2009, 2, 13, 23, 31, 30, tzinfo=timezone.utc)
        session.commit()  # (the float never reached the flush)
        session.expire_all()
        reloaded = session.get(Attachment, 1)
        assert reloaded is not None
        assert reloaded.file is not None
        assert reloaded.file.last_modified == datetime(2009, 2, 13, 23, 31, 30, tzinfo=timezone.utc)
    engine.dispose()


# -- column shape -------------------------------------------------------------------------------
def stored(**overrides: Any) -> FileObject:
    values: dict[str, Any] = {
        "backend": "b",
        "path": "k/0123/a.txt",
        "filename": "a.txt",
        "content_type": "text/plain",
        "size": 3,
        "etag": '"etag"',
        "version": "v1",
        "checksum": "sha256:abc",
        "last_modified": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "metadata": {"owner": "alice"},
    }
    values.update(overrides)
    return FileObject(**values)


def test_to_dict_shape() -> None:
    assert stored().to_dict() == {
        "v": 1,
        "backend": "b",
        "path": "k/0123/a.txt",
        "filename": "a.txt",
        "content_type": "text/plain",
        "size": 3,
        "etag": '"etag"',
        "version": "v1",
        "checksum": "sha256:abc",
        "last_modified": "2024-01-02T03:04:05+00:00",
        "metadata": {"owner": "alice"},
    }


def test_round_trip() -> None:
    original = stored()
    copy = FileObject.from_dict(original.to_dict())
    assert copy.to_dict() == original.to_dict()
    assert copy == original
    assert copy.last_modified == original.last_modified


def test_round_trip_preserves_unknown_keys() -> None:
    data = {**stored().to_dict(), "v": 2, "renditions": {"thumb": "k/t.png"}, "x_custom": [1, 2]}
    file = FileObject.from_dict(data)
    out = file.to_dict()
    assert out["renditions"] == {"thumb": "k/t.png"}
    assert out["x_custom"] == [1, 2]
    # Known fields are written in the current shape.
    assert out["v"] == 1
    file.filename = "renamed.txt"
    assert file.to_dict()["renditions"] == {"thumb": "k/t.png"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2024-01-02T03:04:05+00:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (
            "2024-01-02T05:04:05.123456+02:00",
            datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
        ),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),  # naive: UTC
    ],
)
def test_last_modified_iso_strings(text: str, expected: datetime) -> None:
    file = FileObject.from_dict({"path": "k", "last_modified": text})
    assert file.last_modified == expected
    assert file.last_modified is not None
    assert file.last_modified.tzinfo is not None
    assert FileObject.from_dict(file.to_dict()).last_modified == expected


def test_from_dict_minimal_and_defaults() -> None:
    file = FileObject.from_dict({"path": "a/b/c.txt"}, default_backend="col")
    assert file.backend == "col"
    assert file.filename == "c.txt"
    assert file.content_type == "text/plain"
    assert FileObject.from_dict({"path": "p", "backend": "own"}, default_backend="col").backend == (
        "own"
    )


def test_from_dict_uses_given_registry() -> None:
    registry = BackendRegistry()
    backend = ObstoreBackend("private", "memory://")
    registry.register_backend(backend)
    backend.put("k", b"data")
    file = FileObject.from_dict({"path": "k", "backend": "private"}, registry=registry)
    assert file.get_content() == b"data"
    assert "private" not in storages


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"path": ""},
        {"path": None},
        {"path": 5},
        {"path": "k", "size": "big"},
        {"path": "k", "metadata": "x"},
        {"path": "k", "metadata": {"a": 1}},
        {"path": "k", "last_modified": "garbage"},
        {"path": "k", "filename": 3},
        {"path": "k", "backend": ["x"]},
        [],
        "k",
        5,
    ],
)
def test_from_dict_refuses_malformed_data(data: Any) -> None:
    with pytest.raises(InvalidFileObjectError):
        FileObject.from_dict(data)


# -- equality, hashing, repr --------------------------------------------------------------------
def test_equality_by_backend_and_path() -> None:
    assert stored() == stored(filename="other.txt", size=99, metadata={})
    assert stored() != stored(path="k/other")
    assert stored() != stored(backend="other")
    assert stored() != "k/0123/a.txt"
    assert stored() != stored().to_dict()


def test_pending_files_are_equal_only_to_themselves() -> None:
    a = FileObject(filename="a.txt", content=b"x")
    b = FileObject(filename="a.txt", content=b"x")
    assert a == a
    assert a != b
    assert a != stored()


def test_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(stored())
    with pytest.raises(TypeError):
        {stored()}


def test_repr_shows_no_content_and_no_secrets(s3: ObstoreBackend) -> None:
    pending = FileObject(filename="a.txt", content=b"TOPSECRETCONTENT", metadata={"k": "hidden"})
    text = repr(pending)
    assert "TOPSECRETCONTENT" not in text
    assert "pending=True" in text
    assert "a.txt" in text
    saved = FileObject(backend="s3", path="k/a.txt", size=3)
    url = saved.sign(expires_in=60)  # cached on the object
    text = repr(saved)
    for secret in (AWS_SECRET, query(url)["X-Amz-Signature"][0], "X-Amz"):
        assert secret not in text
    assert "k/a.txt" in text
    assert "size=3" in text
    assert AWS_SECRET not in str(saved.to_dict())


# -- pickling -------------------------------------------------------------------------------------
class Base(DeclarativeBase):
    pass


class Attachment(Base):
    __tablename__ = "unit_attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("memory"))


def test_pickle_saved_file(changes: list[FileObject]) -> None:
    original = stored()
    Attachment(file=original)  # gives the file a parent (a weak reference)
    copy = pickle.loads(pickle.dumps(original))
    assert copy == original
    assert copy.to_dict() == original.to_dict()
    assert copy.is_saved
    changes.clear()
    copy.metadata["k"] = "v"  # metadata tracking survives
    assert changes == [copy]
    assert copy.metadata == {"owner": "alice", "k": "v"}


def test_pickle_pending_bytes(memory_backend: ObstoreBackend) -> None:
    for content in (b"payload", bytearray(b"payload"), memoryview(b"payload")):
        copy = pickle.loads(pickle.dumps(FileObject(filename="p.bin", content=content)))
        assert copy.has_pending_content
        copy.backend = "memory"
        assert copy.save().get_content() == b"payload"


def test_pickle_pending_path(tmp_path: Path, memory_backend: ObstoreBackend) -> None:
    source = tmp_path / "p.txt"
    source.write_bytes(b"from disk")
    copy = pickle.loads(pickle.dumps(FileObject(content=source, backend="memory")))
    assert copy.filename == "p.txt"
    assert copy.save().get_content() == b"from disk"


def test_pickle_drops_cached_urls(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k")
    file.sign()
    assert b"X-Amz-Signature" not in pickle.dumps(file)


def test_pickle_stream_content_refuses() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    def gen() -> Iterator[bytes]:
        yield b"x"

    for content in (io.BytesIO(b"x"), iter([b"x"]), gen(), chunks()):
        with pytest.raises(FileObjectError, match="cannot be pickled; save it first"):
            pickle.dumps(FileObject(content=content))


# -- change tracking ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.__setitem__("new", "v"),
        lambda m: m.__delitem__("a"),
        lambda m: m.pop("a"),
        lambda m: m.pop("missing", None),
        lambda m: m.popitem(),
        lambda m: m.clear(),
        lambda m: m.update({"b": "2"}),
        lambda m: m.update(b="2"),
        lambda m: m.setdefault("new", "v"),
        lambda m: m.__ior__({"b": "2"}),
    ],
    ids=[
        "setitem",
        "delitem",
        "pop",
        "pop-default",
        "popitem",
        "clear",
        "update",
        "update-kwargs",
        "setdefault",
        "ior",
    ],
)
def test_metadata_in_place_change_calls_changed(mutate: Any, changes: list[FileObject]) -> None:
    file = stored(metadata={"a": "1"})
    changes.clear()
    mutate(file.metadata)
    assert file in changes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filename", "renamed.txt"),
        ("content_type", "text/csv"),
        ("metadata", {"x": "y"}),
        ("size", 10),
        ("etag", '"new"'),
        ("path", "k/other"),
    ],
)
def test_attribute_change_calls_changed(
    field: str, value: object, changes: list[FileObject]
) -> None:
    file = stored()
    changes.clear()
    setattr(file, field, value)
    assert changes == [file]


def test_replaced_metadata_is_still_tracked(changes: list[FileObject]) -> None:
    file = stored()
    file.metadata = {"x": "y"}
    changes.clear()
    file.metadata["z"] = "1"
    assert changes == [file]
    assert file.to_dict()["metadata"] == {"x": "y", "z": "1"}


def test_construction_does_not_call_changed(changes: list[FileObject]) -> None:
    stored()
    FileObject.from_dict(stored().to_dict())
    changes.clear()
    FileObject(filename="a", content=b"x", metadata={"a": "b"})
    assert changes == []


def test_in_place_change_marks_the_owning_row_dirty() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Attachment(id=1, file=stored()))
        session.commit()
        row = session.get(Attachment, 1)
        assert row is not None
        assert row.file is not None
        assert row not in session.dirty
        row.file.metadata["k"] = "v"
        assert row in session.dirty
    engine.dispose()


# -- signed URLs ----------------------------------------------------------------------------------
def test_sign_needs_a_saved_file(s3: ObstoreBackend) -> None:
    with pytest.raises(NoContentError, match="not been saved"):
        FileObject(filename="a.txt", content=b"x", backend="s3").sign()


def test_sign_needs_a_backend() -> None:
    # (the registry's default would do: there is none here)
    with pytest.raises(NoDefaultBackendError, match="set_default"):
        FileObject(path="k").sign()


def test_sign_unknown_backend() -> None:
    with pytest.raises(BackendNotFoundError):
        FileObject(backend="nowhere", path="k").sign()


def test_sign_on_memory_backend_uses_the_development_signer(
    memory_backend: ObstoreBackend,
) -> None:
    file = FileObject(backend="memory", content=b"x").save()
    assert file.sign().startswith(f"/_storage/memory/{file.path}?")


def test_sign_on_local_backend_without_a_signer_is_unsupported(
    local_backend: ObstoreBackend,
) -> None:
    file = FileObject(backend="local", content=b"x").save()
    with pytest.raises(UnsupportedOperationError, match="signing_secret"):
        file.sign()


def test_sign_returns_the_same_url_twice(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    first = file.sign(expires_in=600)
    assert "X-Amz-Signature" in query(first)
    assert query(first)["X-Amz-Expires"] == ["600"]
    assert file.sign(expires_in=600) == first
    assert file.sign(expires_in=timedelta(minutes=10)) == first  # same lifetime


async def test_sign_async_shares_the_cache(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    first = await file.sign_async(expires_in=600)
    assert await file.sign_async(expires_in=600) == first
    assert file.sign(expires_in=600) == first


def test_different_expiry_gives_a_different_url(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    short, long = file.sign(expires_in=60), file.sign(expires_in=3600)
    assert short != long
    assert query(short)["X-Amz-Expires"] == ["60"]
    assert query(long)["X-Amz-Expires"] == ["3600"]


def test_sign_expiry_is_validated(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    with pytest.raises(InvalidExpiryError):
        file.sign(expires_in=timedelta(days=8))
    with pytest.raises(InvalidExpiryError):
        file.sign(expires_in=0)


def credential_key(url: str) -> str:
    return query(url)["X-Amz-Credential"][0].split("/")[0]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_cache_renews_after_half_the_lifetime(clock: FakeClock, use_async: bool) -> None:
    # Swapping the backend under the same key (new access key id) makes a fresh
    # signature visible in the URL, so we can tell a cached URL from a new one.
    storages.register_backend(s3_backend(access_key_id="AKIAFIRSTKEY00000001"))
    file = FileObject(backend="s3", path="k/a.txt")

    async def sign() -> str:
        return await file.sign_async(expires_in=1000) if use_async else file.sign(expires_in=1000)

    first = await sign()
    assert credential_key(first) == "AKIAFIRSTKEY00000001"
    storages.register_backend(s3_backend(access_key_id="AKIASECONDKEY0000001"), replace=True)

    clock.now += 499  # less than half the lifetime elapsed: cached
    assert await sign() == first
    clock.now += 2  # 501 s of 1000: more than half elapsed, renewed
    renewed = await sign()
    assert credential_key(renewed) == "AKIASECONDKEY0000001"
    clock.now += 499  # the renewed URL is cached from its own signing time
    assert await sign() == renewed


def test_changing_the_file_drops_cached_urls(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    first = file.sign(expires_in=600)
    file.path = "k/b.txt"
    second = file.sign(expires_in=600)
    assert second != first
    assert urlsplit(second).path.endswith("/k/b.txt")


# -- signed uploads -------------------------------------------------------------------------------
def test_sign_for_upload_on_a_stored_file_is_refused(s3: ObstoreBackend) -> None:
    file = FileObject(backend="s3", path="k/a.txt")
    with pytest.raises(FileObjectError, match="immutable"):
        file.sign(for_upload=True)
    assert file.path == "k/a.txt"


def test_sign_for_upload_on_pending_content_is_refused(s3: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", content=b"x", backend="s3")
    with pytest.raises(FileObjectError, match="immutable"):
        file.sign(for_upload=True)
    assert file.path is None


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_sign_for_upload_assigns_a_fresh_key(s3: ObstoreBackend, use_async: bool) -> None:
    file = FileObject(filename="../My Photo.jpg", backend="s3")
    if use_async:
        url = await file.sign_async(expires_in=300, for_upload=True)
    else:
        url = file.sign(expires_in=300, for_upload=True)
    assert file.path is not None
    assert UUID_KEY.match(file.path)
    assert file.path.endswith("/My_Photo.jpg")
    assert urlsplit(url).path.endswith(file.path)
    assert query(url)["X-Amz-Expires"] == ["300"]
    # A signed PUT is not a signed GET for the same key.
    assert query(url)["X-Amz-Signature"] != query(file.sign(expires_in=300))["X-Amz-Signature"]
    # The key is now taken: no second upload URL.
    with pytest.raises(FileObjectError, match="immutable"):
        file.sign(for_upload=True)


def test_two_upload_urls_for_the_same_name_get_different_keys(s3: ObstoreBackend) -> None:
    a = FileObject(filename="same.txt", backend="s3")
    b = FileObject(filename="same.txt", backend="s3")
    a.sign(for_upload=True)
    b.sign(for_upload=True)
    assert a.path != b.path


def test_sign_for_upload_uses_backend_prefix_and_key_function() -> None:
    storages.register_backend(
        s3_backend("pre", prefix="incoming", key_function=lambda leaf: f"fixed/{leaf}")
    )
    file = FileObject(filename="a.txt", backend="pre")
    file.sign(for_upload=True)
    assert file.path == "incoming/fixed/a.txt"


def test_failed_upload_signing_leaves_the_file_unchanged(s3: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", backend="s3")
    with pytest.raises(InvalidExpiryError):
        file.sign(expires_in=timedelta(days=30), for_upload=True)
    assert file.path is None
    url = file.sign(expires_in=60, for_upload=True)  # retry works
    assert file.path is not None
    assert urlsplit(url).path.endswith(file.path)


def test_sign_for_upload_on_local_is_unsupported(local_backend: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", backend="local")
    with pytest.raises(UnsupportedOperationError, match="Azure"):
        file.sign(for_upload=True)
    assert file.path is None


def test_sign_upload_s3(s3: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", backend="s3")
    before = datetime.now(timezone.utc)
    signed = file.sign_upload(expires_in=300)
    assert isinstance(signed, SignedURL)
    assert signed.method == "PUT"
    assert dict(signed.headers) == {}
    assert str(signed) == signed.url
    assert file.path is not None
    assert urlsplit(signed.url).path.endswith(file.path)
    lifetime = signed.expires_at - before
    assert timedelta(seconds=299) <= lifetime <= timedelta(seconds=302)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_sign_upload_azure_needs_blob_type_header(
    azure: ObstoreBackend, use_async: bool
) -> None:
    file = FileObject(filename="a.txt", backend="azure")
    if use_async:
        signed = await file.sign_upload_async(expires_in=timedelta(days=30))
    else:
        signed = file.sign_upload(expires_in=timedelta(days=30))
    assert dict(signed.headers) == {"x-ms-blob-type": "BlockBlob"}
    assert signed.method == "PUT"
    assert query(signed.url)["sp"] != ["r"]  # write permission
    assert "sig" in query(signed.url)
    assert AZURE_KEY not in signed.url


def test_sign_upload_default_expiry_is_short(s3: ObstoreBackend) -> None:
    signed = FileObject(filename="a.txt", backend="s3").sign_upload()
    assert query(signed.url)["X-Amz-Expires"] == ["300"]


def test_public_url() -> None:
    storages.register_backend(
        ObstoreBackend("pub", "memory://", public_base_url="https://cdn.example.com/")
    )
    assert FileObject(backend="pub", path="a b/c.txt").url == "https://cdn.example.com/a%20b/c.txt"
    assert FileObject(backend="pub", filename="x", content=b"x").url is None
