"""The column format is defined once (`_column.ColumnRow`); everything else agrees with it.

Each test walks the Struct's field list and checks one place that reads or writes the
format: the encoder, both decoders (the fast msgspec path and the general one), the JSON
schema, the msgspec `TypedDict`, the `FileObject` constructor and attributes, the facts
an upload writes (which the session restores when it undoes one), and the walkers of raw
column JSON in `gc` and `migration`. A field added to the Struct but missed somewhere
fails here.
"""

from __future__ import annotations

import inspect
import json
import typing
from datetime import datetime, timezone
from types import SimpleNamespace

import msgspec
import msgspec.inspect
import pytest
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.dialects import postgresql

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages
from sqlalchemy_obstore._column import (
    ATTRIBUTES,
    FIELDS,
    KNOWN_KEYS,
    UPLOAD_FACTS,
    ColumnRow,
    column_json_schema,
    stored_files,
)
from sqlalchemy_obstore._fields import FIELD_CHECKS
from sqlalchemy_obstore._migration import _rewritten, _source_entries
from sqlalchemy_obstore._migration_copy import job_of
from sqlalchemy_obstore._session_io import _snapshot
from sqlalchemy_obstore.contrib.msgspec import FileObjectDict
from sqlalchemy_obstore.gc import FileColumn

RENDITION = {
    "v": 1,
    "backend": "uploads",
    "path": "k/thumb.png",
    "filename": "thumb.png",
    "content_type": "image/png",
    "content_encoding": "gzip",
    "size": 3,
    "etag": "e-thumb",
    "version": "v-thumb",
    "checksum": "sha256:" + "1" * 64,
    "last_modified": "2024-05-06T07:08:09+00:00",
    "metadata": {"role": "thumbnail"},
    "image": {"width": 4, "height": 3, "spec": "fit 4x4 PNG q80"},
    "info": {"crop": [0, 0, 10, 10]},
}
FULL = {
    "v": 1,
    "backend": "uploads",
    "path": "k/photo.png",
    "filename": "photo.png",
    "content_type": "image/png",
    "content_encoding": "gzip",
    "size": 10,
    "etag": "e-1",
    "version": "v-1",
    "checksum": "sha256:" + "0" * 64,
    "last_modified": "2024-01-02T03:04:05+00:00",
    "metadata": {"k": "v"},
    "info": {"pages": 3, "toc": [{"title": "Intro", "page": 1}], "ok": True, "x": None},
    "renditions": {"thumb": RENDITION},
    "image": {"width": 40, "height": 30},
}
"""A column value with a non-default value in every field of the format."""

OTHER = {
    "backend": "elsewhere",
    "path": "k/other.txt",
    "filename": "other.txt",
    "content_type": "text/plain",
    "content_encoding": None,
    "size": 11,
    "etag": "e-2",
    "version": "v-2",
    "checksum": "md5:" + "2" * 32,
    "last_modified": datetime(2025, 1, 1, tzinfo=timezone.utc),
}
"""Another valid value for each attribute."""


def test_the_samples_cover_every_field() -> None:
    # When this fails, a field was added to ColumnRow: give it a sample value here.
    assert tuple(FULL) == FIELDS
    assert set(RENDITION) == KNOWN_KEYS - {"renditions"}
    assert set(OTHER) == set(ATTRIBUTES)
    msgspec.convert(FULL, ColumnRow)  # the samples are in the format


def test_derived_field_lists() -> None:
    assert set(FIELDS) == KNOWN_KEYS
    assert set(ATTRIBUTES) < KNOWN_KEYS
    assert set(UPLOAD_FACTS) < set(ATTRIBUTES)
    assert "path" in UPLOAD_FACTS
    assert "filename" not in UPLOAD_FACTS


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_is_written_and_read_back(name: str) -> None:
    file = FileObject.from_dict(FULL, trusted=True)
    assert file.to_dict()[name] == FULL[name]
    assert FileObject.from_dict(file.to_dict(), trusted=True).to_dict()[name] == FULL[name]


def test_fast_and_general_decoders_agree() -> None:
    class Subclass(FileObject):  # not the codec's own type: the general path
        pass

    text = json.dumps(FULL)
    processor = StoredObject(backend="uploads").result_processor(postgresql.dialect(), None)
    fast_text = FileObject._codec.from_json(text, "uploads", None)
    fast_dict = FileObject._codec.from_builtins(FULL, "uploads", None)
    assert fast_text is not None
    assert fast_dict is not None
    for file in (
        fast_text,
        fast_dict,
        processor(text),
        processor(json.loads(text)),
        FileObject.from_dict(FULL),
        Subclass.from_dict(FULL),
    ):
        assert file.to_dict() == FULL
        assert set(file.renditions) == {"thumb"}


def test_other_shapes_take_the_general_path() -> None:
    data = {**FULL, "future": {"x": 1}}
    assert FileObject._codec.from_builtins(data, None, None) is None
    assert FileObject.from_dict(data).to_dict() == data  # unknown fields are kept
    # What to_dict never writes (here: no content type) is checked by the general path.
    assert FileObject._codec.from_builtins({"path": "k/a.txt"}, None, None) is None
    assert FileObject.from_dict({"path": "k/a.txt"}).content_type == "text/plain"


def test_json_schema_describes_every_field() -> None:
    schema = column_json_schema()
    assert tuple(schema["properties"]) == FIELDS
    assert schema["required"] == ["path"]
    assert schema["additionalProperties"] is True
    assert "$ref" not in json.dumps(schema)  # self-contained: embeddable in any API schema


def test_msgspec_typed_dict_has_every_field() -> None:
    hints = typing.get_type_hints(FileObjectDict)
    assert tuple(hints) == FIELDS
    info = msgspec.inspect.type_info(FileObjectDict)
    assert isinstance(info, msgspec.inspect.TypedDictType)
    assert [f.name for f in info.fields if f.required] == ["path"]
    assert msgspec.convert(FULL, FileObjectDict) == FULL


def test_every_attribute_is_a_checked_constructor_keyword_that_marks_changes() -> None:
    parameters = inspect.signature(FileObject.__init__).parameters
    annotations = typing.get_type_hints(FileObject)
    checks = FIELD_CHECKS
    for name in ATTRIBUTES:
        assert name in parameters, name
        assert name in annotations, name
        assert name in checks, name
    assert "metadata" in parameters

    file = FileObject.from_dict(FULL, trusted=True)
    seen: list[str] = []
    file.changed = lambda: seen.append("changed")  # type: ignore[method-assign]
    for name in ATTRIBUTES:
        setattr(file, name, OTHER[name])
        assert seen.pop() == "changed", name
        assert getattr(file, name) == OTHER[name]


def test_upload_facts_are_what_a_save_writes_and_what_a_session_restores() -> None:
    with storages.temporary(ObstoreBackend("uploads", "memory://")):
        file = FileObject(filename="a.txt", content=b"hello", backend="uploads")
        before = {name: getattr(file, name) for name in ATTRIBUTES}
        snapshot = _snapshot(file)
        file.save()
        changed = {name for name in ATTRIBUTES if getattr(file, name) != before[name]}
    assert changed <= set(UPLOAD_FACTS)
    assert {"path", "size", "last_modified"} <= changed
    assert set(UPLOAD_FACTS) <= set(snapshot)


def _file_column() -> FileColumn:
    stored = StoredObject(backend="uploads", cache_control="max-age=60")
    table = Table("docs", MetaData(), Column("id", Integer, primary_key=True))
    column = Column("file", stored)
    table.append_column(column)
    return FileColumn(table, column, stored)


def test_raw_walkers_find_every_reference() -> None:
    value = [FULL, {**FULL, "backend": None, "path": "k/other.png"}, {"junk": 1}]
    found = [(entry["path"], backend) for entry, backend in stored_files(value, "column")]
    assert found == [
        ("k/photo.png", "uploads"),
        ("k/thumb.png", "uploads"),
        ("k/other.png", "column"),
        ("k/thumb.png", "uploads"),
    ]
    assert [e["path"] for e in _source_entries(value, "column", "column")] == ["k/other.png"]


def test_migration_reads_and_rewrites_fields_of_the_format() -> None:
    job = job_of(FULL, _file_column())
    for name in ("path", "size", "checksum", "filename", "content_type", "metadata"):
        assert getattr(job, name) == FULL[name], name

    info = SimpleNamespace(
        etag="e-new", version="v-new", last_modified=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
    moved = _rewritten(FULL, "uploads", "uploads", "elsewhere", {"k/photo.png": info})
    assert set(moved) == KNOWN_KEYS  # nothing written outside the format
    file = FileObject.from_dict(moved, trusted=True)  # still a valid column value
    assert (file.backend, file.etag, file.version) == ("elsewhere", "e-new", "v-new")
    assert file.last_modified == info.last_modified
    assert file.renditions["thumb"].backend == "elsewhere"
    assert file.to_dict()["size"] == FULL["size"]
