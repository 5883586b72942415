"""The registry's default backend, size strings and `info` (issue #18, items 6 and 8)."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.dialects import postgresql

from sqlalchemy_obstore import (
    BackendNotFoundError,
    BackendRegistry,
    FileObject,
    InvalidFileObjectError,
    InvalidSizeError,
    NoDefaultBackendError,
    ObstoreBackend,
    StoredObject,
    UntrustedReferenceError,
    storages,
)
from sqlalchemy_obstore.contrib.alembic import render_stored_object
from sqlalchemy_obstore.testing import memory_stand_in
from sqlalchemy_obstore.validation import SIZE_UNITS, UploadPolicy, parse_size


def memory(key: str) -> ObstoreBackend:
    return ObstoreBackend(key, "memory://")


# -- the registry ------------------------------------------------------------------------------
def test_there_is_no_implicit_default() -> None:
    registry = BackendRegistry()
    registry.register_backend(memory("a"))
    assert registry.default is None
    with pytest.raises(NoDefaultBackendError) as info:
        registry.resolve_key(None)
    message = str(info.value)
    assert "register_backend(backend, default=True)" in message
    assert "set_default" in message
    assert "'a'" in message  # what is registered
    assert isinstance(info.value, LookupError)
    assert registry.resolve_key("x") == "x"


def test_register_with_default_and_set_default() -> None:
    registry = BackendRegistry()
    registry.register_backend(memory("a"), default=True)
    registry.register_backend(memory("b"))
    assert registry.default == "a"
    assert "default='a'" in repr(registry)
    registry.set_default("b")
    assert registry.resolve_key(None) == "b"
    with pytest.raises(BackendNotFoundError):
        registry.set_default("nowhere")
    assert registry.default == "b"
    registry.set_default(None)
    assert registry.default is None


def test_unregistering_or_clearing_drops_the_default() -> None:
    registry = BackendRegistry()
    registry.register_backend(memory("a"), default=True)
    registry.unregister_backend("a")
    assert registry.default is None
    registry.register_backend(memory("a"), default=True)
    registry.clear()
    assert registry.default is None


def test_temporary_restores_the_default() -> None:
    registry = BackendRegistry()
    registry.register_backend(memory("a"), default=True)
    with registry.temporary(memory("b"), default="b"):
        assert registry.default == "b"
    assert registry.default == "a"
    with registry.temporary(clear=True):
        assert registry.default is None
        registry.register_backend(memory("c"), default=True)
    assert registry.default == "a"
    with pytest.raises(BackendNotFoundError), registry.temporary(default="zzz"):
        pass


def test_override_keeps_the_application_default_pointing_at_the_test_backend() -> None:
    registry = BackendRegistry()
    test_backend = memory("uploads")
    with registry.override(test_backend):
        registry.register_backend(memory("uploads"), default=True)  # the application
        assert registry.default == "uploads"
        assert registry.get_backend(registry.resolve_key(None)) is test_backend
    assert registry.default is None
    with registry.override(stand_in=memory_stand_in, every_key=True):
        registry.register_backend(ObstoreBackend("s3", "memory://"), default=True)
        assert registry.default == "s3"
    assert registry.default is None
    assert "s3" not in registry


# -- files and columns -------------------------------------------------------------------------
def test_a_file_without_a_backend_saves_to_the_default_and_records_it() -> None:
    storages.register_backend(memory("a"), default=True)
    storages.register_backend(memory("b"))
    file = FileObject(filename="x.txt", content=b"x")
    assert file.backend is None
    file.save()
    assert file.backend == "a"
    storages.set_default("b")
    assert file.get_content() == b"x"  # still in "a"
    assert FileObject(filename="y.txt", content=b"y").save().backend == "b"


async def test_async_save_and_signed_upload_record_the_default() -> None:
    storages.register_backend(memory("a"), default=True)
    file = await FileObject(filename="x.txt", content=b"x").save_async()
    assert file.backend == "a"
    unsigned = FileObject(filename="y.txt")
    unsigned.sign_upload()
    assert unsigned.backend == "a"
    assert unsigned.path is not None


def test_a_trusted_stored_file_without_a_backend_reads_from_the_default() -> None:
    storages.register_backend(memory("a"), default=True)
    saved = FileObject(filename="x.txt", content=b"x").save()
    assert saved.path is not None
    assert FileObject(path=saved.path).get_content() == b"x"
    assert FileObject.from_dict({"path": saved.path}, trusted=True).get_content() == b"x"


def test_an_untrusted_file_without_a_backend_is_never_resolved_to_the_default() -> None:
    storages.register_backend(memory("a"), default=True)
    saved = FileObject(filename="x.txt", content=b"x").save()
    forged = FileObject.from_dict({"path": saved.path})
    for read in (forged.get_content, forged.sign, forged.exists):
        with pytest.raises(UntrustedReferenceError, match="names no backend"):
            read()


def test_stored_object_without_a_backend() -> None:
    column = StoredObject()
    assert repr(column) == "StoredObject()"
    assert repr(StoredObject(multiple=True)) == "StoredObject(multiple=True)"
    assert column.backend_key is None
    assert column.resolved_backend is None
    with pytest.raises(NoDefaultBackendError):
        column.backend  # noqa: B018
    storages.register_backend(memory("a"), default=True)
    assert column.backend == column.resolved_backend == "a"
    assert StoredObject("b").backend == "b"  # an explicit key is never the default
    registry = BackendRegistry()
    registry.register_backend(memory("r"), default=True)
    assert StoredObject(registry=registry).backend == "r"  # the column's own registry


def test_a_row_written_through_a_default_column_names_its_backend() -> None:
    storages.register_backend(memory("a"), default=True)
    column = StoredObject()
    saved = FileObject(filename="x.txt", content=b"x").save()
    saved.__dict__["backend"] = None  # (as Core would bind a file built without one)
    bound = column.process_bind_param(saved, postgresql.dialect())
    assert bound["backend"] == "a"
    storages.unregister_backend("a")
    with pytest.raises(NoDefaultBackendError):
        column.process_bind_param(saved, postgresql.dialect())


def test_reading_rows_without_a_backend_uses_the_default_at_read_time() -> None:
    column = StoredObject()
    processor = column.result_processor(postgresql.dialect(), None)
    row = json.dumps({"path": "k/a.txt", "content_type": "text/plain"})
    assert processor(row).backend is None  # no default: nothing to name (no error on read)
    storages.register_backend(memory("a"), default=True)
    assert processor(row).backend == "a"
    assert processor(json.loads(row)).backend == "a"
    named = json.dumps({"backend": "b", "path": "k/a.txt", "content_type": "text/plain"})
    assert processor(named).backend == "b"


def test_alembic_renders_a_default_column_without_a_key() -> None:
    assert render_stored_object(StoredObject()) == "StoredObject()"
    assert render_stored_object(StoredObject(compress=True)).startswith("StoredObject(")


METADATA = MetaData()
Table(
    "plugin_keys",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("a", StoredObject()),
    Column("b", StoredObject("named")),
)


@pytest.fixture
def obstore_metadata() -> MetaData:
    """(the pytest plugin's fixture, overridden for this module's tests)"""
    return METADATA


def test_pytest_plugin_keys_leave_out_a_default_not_chosen(
    obstore_backend_keys: tuple[str, ...],
) -> None:
    assert obstore_backend_keys == ("named",)


def test_pytest_plugin_stand_ins_take_the_applications_default(
    obstore_memory_backends: object,
) -> None:
    storages.register_backend(ObstoreBackend("app", "s3://bucket"), default=True)  # the app
    saved = FileObject(filename="a.txt", content="hi").save()
    assert saved.backend == "app"
    assert storages.get_backend("app").kind == "memory"  # a stand-in, not S3


# -- sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("10", 10),
        ("10 B", 10),
        ("1KB", 1000),
        ("1 kB", 1000),
        ("1 KiB", 1024),
        ("5 MB", 5_000_000),
        ("5 MiB", 5 * 2**20),
        ("5mib", 5 * 2**20),
        ("2 GB", 2 * 10**9),
        ("2 GiB", 2 * 2**30),
        ("1 TiB", 2**40),
        ("1.5 KiB", 1536),
        ("0.5 MB", 500_000),
        ("  7 MiB  ", 7 * 2**20),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "MiB", "5 M", "5 K", "5 kbit", "-1 KiB", "1,5 KiB", "1.1 B", "0.3 KiB", "1e3", "\uff15"],
)
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidSizeError) as info:
        parse_size(text)
    assert isinstance(info.value, ValueError)


def test_size_units_are_the_standard_ones() -> None:
    for unit, factor in SIZE_UNITS.items():
        base = 1024 if "i" in unit else 1000
        assert factor == 1 if unit == "B" else factor in {base**n for n in range(1, 5)}
        assert parse_size(f"3 {unit}") == 3 * factor
    assert parse_size("1.25 GiB") == int(Decimal("1.25") * 2**30)


def test_policy_sizes_as_strings() -> None:
    policy = UploadPolicy(max_size="5 MiB", min_size="1 KB")
    assert (policy.max_size, policy.min_size) == (5 * 2**20, 1000)
    assert policy == UploadPolicy(max_size=5 * 2**20, min_size=1000)  # stored as ints
    assert policy.merge(UploadPolicy(max_size="1 MiB")).max_size == 2**20
    with pytest.raises(InvalidSizeError, match="5 M"):
        UploadPolicy(max_size="5 M")


# -- info --------------------------------------------------------------------------------------
def test_info_holds_nested_json_and_stays_out_of_metadata() -> None:
    file = FileObject(backend="b", path="k/a.pdf", info={"pages": 3})
    file.info["toc"] = [{"title": "Intro", "page": 1}]
    data = file.to_dict()
    assert data["info"] == {"pages": 3, "toc": [{"title": "Intro", "page": 1}]}
    assert data["metadata"] == {}
    assert "info" not in FileObject(backend="b", path="k/b").to_dict()  # written when set
    again = FileObject.from_dict(data, trusted=True)
    assert again.info == data["info"]
    assert pickle.loads(pickle.dumps(again)).info == data["info"]


def test_info_changes_mark_the_file_changed() -> None:
    file = FileObject(backend="b", path="k/a.pdf")
    seen: list[str] = []
    file.changed = lambda: seen.append("changed")  # type: ignore[method-assign]
    file.info["a"] = {"b": 1}
    file.info.update(c=[1])
    del file.info["c"]
    file.info = {"z": True}
    assert len(seen) == 4
    assert file.info == {"z": True}


@pytest.mark.parametrize(
    "value", [(1, 2), {1: "a"}, {"a": object()}, float("nan"), {"a": [float("inf")]}, b"x"]
)
def test_info_takes_json_values_only(value: object) -> None:
    with pytest.raises(InvalidFileObjectError):
        FileObject(backend="b", path="k", info={"x": value})
    with pytest.raises(InvalidFileObjectError):
        FileObject(backend="b", path="k").info["x"] = value


def test_info_is_copied_from_what_it_was_given() -> None:
    given = {"a": {"b": [1]}}
    file = FileObject(backend="b", path="k", info=given)
    given["a"]["b"].append(2)
    assert file.info == {"a": {"b": [1]}}
    loaded = FileObject.from_dict({"path": "k", "info": given}, trusted=True)
    given["a"]["b"].append(3)
    assert loaded.info == {"a": {"b": [1, 2]}}


def test_an_untrusted_echo_keeps_the_rows_info() -> None:
    stored = FileObject(backend="b", path="k/a", info={"owner": 1})
    echo = FileObject.from_dict({**stored.to_dict(), "info": {"owner": 2}})
    echo._take_stored_facts(stored)
    assert echo.info == {"owner": 1}
