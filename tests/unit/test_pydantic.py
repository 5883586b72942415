"""`FileObject` as a Pydantic v2 field type: validation, serialisation, JSON schema."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

pydantic = pytest.importorskip("pydantic")

from pydantic import BaseModel, ConfigDict, TypeAdapter  # noqa: E402
from pydantic_core import PydanticSerializationError  # noqa: E402

from sqlalchemy_obstore import FileObject, FileObjectList, ObstoreBackend  # noqa: E402
from sqlalchemy_obstore.file_object import COLUMN_FORMAT_VERSION  # noqa: E402


class Document(BaseModel):
    title: str
    file: FileObject
    cover: FileObject | None = None
    pages: list[FileObject] = []


def stored(path: str = "docs/k/report.pdf", **kwargs: Any) -> FileObject:
    return FileObject(backend="uploads", path=path, **kwargs)


def test_validates_from_column_shape_dict() -> None:
    doc = Document(
        title="q3",
        file={"v": 1, "backend": "uploads", "path": "docs/k/report.pdf", "size": 18},
    )
    assert isinstance(doc.file, FileObject)
    assert doc.file.path == "docs/k/report.pdf"
    assert doc.file.filename == "report.pdf"
    assert doc.file.size == 18
    assert doc.cover is None
    assert doc.pages == []


def test_fileobject_instance_passes_through_unchanged() -> None:
    file = stored()
    doc = Document(title="q3", file=file, pages=[file])
    assert doc.file is file
    assert doc.pages[0] is file


def test_serialises_to_the_column_shape() -> None:
    file = stored(size=3, metadata={"by": "42"})
    doc = Document(title="q3", file=file, pages=[stored("docs/k/p1.png")])

    dumped = doc.model_dump()

    assert dumped["file"] == file.to_dict()
    assert dumped["file"]["v"] == COLUMN_FORMAT_VERSION
    assert dumped["cover"] is None
    assert dumped["pages"] == [stored("docs/k/p1.png").to_dict()]


def test_json_mode_gives_iso_datetimes_and_round_trips() -> None:
    when = datetime(2025, 7, 1, 9, 30, 12, tzinfo=timezone.utc)
    file = stored(last_modified=when, etag='"abc"', checksum="sha256:00")
    doc = Document(title="q3", file=file, cover=stored("c.png"), pages=[stored("p.png")])

    raw = doc.model_dump_json()
    assert json.loads(raw)["file"]["last_modified"] == "2025-07-01T09:30:12+00:00"
    assert doc.model_dump(mode="json")["file"] == json.loads(raw)["file"]

    back = Document.model_validate_json(raw)
    assert back.file == file
    assert back.file.last_modified == when
    assert back.file.etag == '"abc"'
    assert back.cover == stored("c.png")
    assert back.pages == [stored("p.png")]


def test_unknown_fields_and_renditions_survive_a_round_trip() -> None:
    data = {
        "path": "img/a.png",
        "backend": "uploads",
        "future_field": {"x": 1},
        "renditions": {"thumb": {"path": "img/a.thumb.webp"}},
    }
    file = TypeAdapter(FileObject).validate_python(data)
    assert file.renditions["thumb"].path == "img/a.thumb.webp"
    dumped = TypeAdapter(FileObject).dump_python(file)
    assert dumped["future_field"] == {"x": 1}
    assert dumped["renditions"]["thumb"]["path"] == "img/a.thumb.webp"


def test_pending_file_is_refused_on_serialisation() -> None:
    doc = Document(title="q3", file=FileObject(filename="a.txt", content=b"hi"))
    with pytest.raises(PydanticSerializationError, match="has not been saved"):
        doc.model_dump()
    with pytest.raises(PydanticSerializationError, match="has not been saved"):
        doc.model_dump_json()


def test_saved_file_serialises(memory_backend: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", content=b"hi", backend=memory_backend.key).save()
    dumped = TypeAdapter(FileObject).dump_python(file)
    assert dumped["path"] == file.path
    assert dumped["size"] == 2
    assert dumped["checksum"] == file.checksum


@pytest.mark.parametrize(
    "value",
    [
        {"path": ""},
        {"backend": "uploads"},
        {"path": "a", "size": "big"},
        {"path": "a", "metadata": {"n": 1}},
        "docs/a.txt",
        42,
    ],
)
def test_invalid_input_is_a_validation_error(value: object) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Document(title="q3", file=value)  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"] == ("file",)


def test_invalid_list_item_names_its_index() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Document(title="q3", file=stored(), pages=[stored(), {"path": ""}])
    assert info.value.errors()[0]["loc"] == ("pages", 1)


def test_from_orm_attributes_accepts_a_fileobjectlist() -> None:
    class Row:
        title = "q3"
        file = stored()
        cover = None
        pages = FileObjectList([stored("p1.png"), {"path": "p2.png"}])

    class DocumentOut(Document):
        model_config = ConfigDict(from_attributes=True)

    doc = DocumentOut.model_validate(Row(), from_attributes=True)
    assert [p.path for p in doc.pages] == ["p1.png", "p2.png"]


def test_json_schema_describes_the_column_shape() -> None:
    schema = TypeAdapter(FileObject).json_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["path"]
    assert schema["additionalProperties"] is True
    assert set(schema["properties"]) >= {
        "v",
        "backend",
        "path",
        "filename",
        "content_type",
        "size",
        "etag",
        "version",
        "checksum",
        "last_modified",
        "metadata",
    }
    assert schema["properties"]["last_modified"]["anyOf"][0]["format"] == "date-time"
    for mode in ("validation", "serialization"):
        model_schema = Document.model_json_schema(mode=mode)
        json.dumps(model_schema)
        assert model_schema["properties"]["pages"]["type"] == "array"


def test_works_without_registered_backend() -> None:
    # Validation never resolves the backend: serialisers stay I/O-free.
    doc = Document(title="q3", file={"backend": "nowhere", "path": "a.txt"})
    assert doc.model_dump()["file"]["backend"] == "nowhere"
