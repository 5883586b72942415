"""`sqlalchemy_obstore.contrib.msgspec`: structs with `FileObject` fields round-trip."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

msgspec = pytest.importorskip("msgspec")

from sqlalchemy_obstore import (  # noqa: E402
    FileObject,
    FileObjectList,
    InvalidFileObjectError,
    ObstoreBackend,
)
from sqlalchemy_obstore.contrib.msgspec import (  # noqa: E402
    FileObjectDict,
    dec_hook,
    enc_hook,
    schema_hook,
)


class Document(msgspec.Struct):
    title: str
    file: FileObject
    cover: FileObject | None = None
    pages: list[FileObject] = msgspec.field(default_factory=list)


def stored(path: str = "docs/k/report.pdf", **kwargs: Any) -> FileObject:
    return FileObject(backend="uploads", path=path, **kwargs)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_struct_round_trips(codec: str) -> None:
    module = getattr(msgspec, codec)
    when = datetime(2025, 7, 1, 9, 30, tzinfo=timezone.utc)
    doc = Document(
        title="q3",
        file=stored(size=3, last_modified=when, metadata={"by": "42"}),
        cover=None,
        pages=[stored("p1.png"), stored("p2.png")],
    )

    data = module.encode(doc, enc_hook=enc_hook)
    back = module.decode(data, type=Document, dec_hook=dec_hook)

    assert back.file == doc.file
    assert back.file.size == 3
    assert back.file.last_modified == when
    assert back.file.metadata == {"by": "42"}
    assert back.cover is None
    assert back.pages == doc.pages
    assert all(isinstance(p, FileObject) for p in back.pages)


def test_json_is_the_column_shape() -> None:
    file = stored(last_modified=datetime(2025, 7, 1, tzinfo=timezone.utc))
    doc = Document(title="q3", file=file, cover=stored("c.png"))
    decoded = msgspec.json.decode(msgspec.json.encode(doc, enc_hook=enc_hook))
    assert decoded["file"] == file.to_dict()
    assert decoded["file"]["last_modified"] == "2025-07-01T00:00:00+00:00"
    assert decoded["cover"]["path"] == "c.png"


def test_fileobjectlist_encodes_as_an_array() -> None:
    pages = FileObjectList([stored("p1.png"), stored("p2.png")])
    doc = Document(title="q3", file=stored(), pages=pages)
    decoded = msgspec.json.decode(msgspec.json.encode(doc, enc_hook=enc_hook))
    assert [p["path"] for p in decoded["pages"]] == ["p1.png", "p2.png"]
    assert enc_hook(pages) == list(pages)


def test_unknown_fields_and_renditions_survive() -> None:
    raw = (
        b'{"title": "a", "file": {"path": "img/a.png", "x-extra": 1,'
        b' "renditions": {"thumb": {"path": "img/a.thumb.webp"}}}}'
    )
    doc = msgspec.json.decode(raw, type=Document, dec_hook=dec_hook)
    assert doc.file.renditions["thumb"].path == "img/a.thumb.webp"
    again = msgspec.json.decode(msgspec.json.encode(doc, enc_hook=enc_hook))
    assert again["file"]["x-extra"] == 1
    assert again["file"]["renditions"]["thumb"]["path"] == "img/a.thumb.webp"


def test_pending_file_is_refused() -> None:
    doc = Document(title="q3", file=FileObject(filename="a.txt", content=b"hi"))
    with pytest.raises(InvalidFileObjectError, match="has not been saved"):
        msgspec.json.encode(doc, enc_hook=enc_hook)


def test_saved_file_encodes(memory_backend: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", content=b"hi", backend=memory_backend.key).save()
    assert enc_hook(file)["checksum"] == file.checksum


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"title": "a", "file": {"path": ""}}', "non-empty 'path'"),
        (b'{"title": "a", "file": 3}', "column shape"),
        (b'{"title": "a", "file": {"path": "a", "size": "big"}}', "size"),
    ],
)
def test_invalid_values_are_validation_errors_with_location(raw: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message) as info:
        msgspec.json.decode(raw, type=Document, dec_hook=dec_hook)
    assert "$.file" in str(info.value)


def test_invalid_list_item_names_its_index() -> None:
    raw = b'{"title": "a", "file": {"path": "a"}, "pages": [{"path": "b"}, {"path": ""}]}'
    with pytest.raises(msgspec.ValidationError, match=r"\$\.pages\[1\]"):
        msgspec.json.decode(raw, type=Document, dec_hook=dec_hook)


def test_convert_passes_fileobjects_through() -> None:
    file = stored()
    doc = msgspec.convert({"title": "a", "file": file}, Document, dec_hook=dec_hook)
    assert doc.file is file


def test_hooks_refuse_other_types() -> None:
    with pytest.raises(NotImplementedError):
        enc_hook(object())
    with pytest.raises(NotImplementedError):
        dec_hook(complex, {})
    with pytest.raises(NotImplementedError):
        schema_hook(complex)


def test_json_schema_with_schema_hook() -> None:
    schema = msgspec.json.schema(Document, schema_hook=schema_hook)
    document = schema["$defs"]["Document"]
    assert document["properties"]["file"]["required"] == ["path"]
    assert document["properties"]["pages"]["items"]["required"] == ["path"]


def test_fileobjectdict_describes_the_shape() -> None:
    decoded = msgspec.json.decode(
        b'{"path": "a.txt", "size": 2, "metadata": {"k": "v"}}', type=FileObjectDict
    )
    assert decoded == {"path": "a.txt", "size": 2, "metadata": {"k": "v"}}
    assert FileObject.from_dict(decoded).size == 2
    with pytest.raises(msgspec.ValidationError, match="path"):
        msgspec.json.decode(b'{"size": 2}', type=FileObjectDict)
    full = stored(size=1).to_dict()
    assert msgspec.convert(full, FileObjectDict) == full
