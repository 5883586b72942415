"""Key prefixes derived from the row: every row value is one checked segment, or refused."""

from __future__ import annotations

import enum
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlalchemy_obstore import (
    ConfigurationError,
    InvalidFileObjectError,
    InvalidKeySegmentError,
    KeyContext,
    StoredObject,
)
from sqlalchemy_obstore.contrib.alembic import render_stored_object
from sqlalchemy_obstore.keys import (
    MAX_SEGMENT_BYTES,
    build_key,
    check_object_path,
    join_key,
    key_segment,
    row_key_prefix,
)
from sqlalchemy_obstore.uploads import error_status


class Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def by_tenant(ctx: KeyContext) -> tuple[Any, ...]:
    return ("tenants", ctx.instance.tenant_id, "invoices")


def prefix_of(value: Any) -> str:
    return row_key_prefix(by_tenant, KeyContext(Row(tenant_id=value), "pdf", None))


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


# -- key_segment ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("acme", "acme"),
        ("acme-corp_2.v1", "acme-corp_2.v1"),
        ("zürich", "zürich"),
        (42, "42"),
        (-1, "-1"),
        (0, "0"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "red"),
        (Level.HIGH, "3"),
    ],
)
def test_safe_values_become_one_segment_unchanged(value: Any, segment: str) -> None:
    assert key_segment(value) == segment


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/abs",
        "a\\b",
        "a b",
        " ",
        "a\x00b",
        "line\nbreak",
        "\u202etxt",
        ".hidden",
        "CON",
        "nul.txt",
        "a%2Fb",
        "a?b",
        "a#b",
        "e\u0301",  # not NFC
        "x" * (MAX_SEGMENT_BYTES + 1),
        1.5,
        b"bytes",
        object(),
        ["a"],
    ],
)
def test_unsafe_values_are_refused_never_rewritten(value: Any) -> None:
    with pytest.raises(InvalidKeySegmentError):
        key_segment(value)


def test_the_error_is_a_422_value_error() -> None:
    with pytest.raises(InvalidKeySegmentError) as caught:
        key_segment("../x")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidFileObjectError)
    assert error_status(caught.value) == 422


def test_none_says_the_database_has_not_assigned_it_yet() -> None:
    with pytest.raises(InvalidKeySegmentError, match="autoincrement"):
        key_segment(None)


@given(st.text(max_size=40) | st.integers() | st.none() | st.booleans() | st.uuids())
def test_whatever_the_row_holds_the_key_stays_under_the_prefix(value: Any) -> None:
    try:
        prefix = prefix_of(value)
    except InvalidKeySegmentError:
        return
    # Exactly three segments: the row's value never added or removed one.
    parts = prefix.split("/")
    assert len(parts) == 3
    assert parts[0] == "tenants"
    assert parts[2] == "invoices"
    key = build_key("../../etc/passwd", prefix=join_key("managed", prefix))
    assert key.startswith("managed/tenants/")
    assert check_object_path(key) == key
    assert ".." not in key.split("/")


# -- row_key_prefix -------------------------------------------------------------------------------
def test_the_function_gets_the_row_the_attribute_and_the_column() -> None:
    seen: list[KeyContext] = []
    column = StoredObject("uploads")

    def record(ctx: KeyContext) -> tuple[str, ...]:
        seen.append(ctx)
        return ("x",)

    row = Row()
    assert row_key_prefix(record, KeyContext(row, "file", column)) == "x"
    assert seen == [KeyContext(row, "file", column)]


@pytest.mark.parametrize(
    ("result", "prefix"),
    [
        (("tenants", 7), "tenants/7"),
        (["a", "b"], "a/b"),
        ("single", "single"),
        (7, "7"),
        ((), ""),
    ],
)
def test_segments_a_single_value_or_none_at_all(result: Any, prefix: str) -> None:
    assert row_key_prefix(lambda ctx: result, KeyContext(Row(), "f", None)) == prefix


def test_a_string_with_slashes_is_one_segment_and_so_refused_with_a_hint() -> None:
    with pytest.raises(InvalidKeySegmentError, match=r"Row\.pdf.*tuple of segments"):
        row_key_prefix(lambda ctx: "tenants/7/invoices", KeyContext(Row(), "pdf", None))


@pytest.mark.parametrize("bad", [None, "", "../x", "a/b", True])
def test_the_message_names_the_class_and_attribute(bad: Any) -> None:
    with pytest.raises(InvalidKeySegmentError, match=r"^The key prefix function of Row\.pdf"):
        prefix_of(bad)


def test_errors_of_the_function_itself_are_the_applications() -> None:
    def broken(ctx: KeyContext) -> tuple[str, ...]:
        raise LookupError("no tenant")

    with pytest.raises(LookupError):
        row_key_prefix(broken, KeyContext(Row(), "f", None))


# -- the column -----------------------------------------------------------------------------------
def test_a_column_resolves_its_options_per_row() -> None:
    column = StoredObject("uploads", key_prefix=by_tenant, cache_control="no-cache")
    options = column.save_options_for(Row(tenant_id=5), "pdf")
    assert options.key_prefix == "tenants/5/invoices"
    assert options.cache_control == "no-cache"
    nothing = StoredObject("u", key_prefix=lambda ctx: ())
    assert nothing.save_options_for(Row(), "f").key_prefix is None


def test_a_static_prefix_is_the_same_for_every_row() -> None:
    column = StoredObject("uploads", key_prefix="scans", chunk_size=1024)
    assert column.save_options_for(Row(), "f") == column.save_options
    assert column.save_options.key_prefix == "scans"
    assert column.save_options.chunk_size == 1024


def test_the_row_free_options_of_a_row_keyed_column_are_refused() -> None:
    column = StoredObject("uploads", key_prefix=by_tenant)
    with pytest.raises(ConfigurationError, match="save_options_for"):
        _ = column.save_options


@pytest.mark.parametrize("bad", [42, b"tenants", ("tenants",)])
def test_key_prefix_takes_a_string_or_a_function(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="key_prefix"):
        StoredObject("uploads", key_prefix=bad)


def test_repr_and_alembic_name_the_function() -> None:
    column = StoredObject("uploads", key_prefix=by_tenant)
    assert repr(column) == "StoredObject('uploads', key_prefix=by_tenant)"
    imports: set[str] = set()
    rendered = render_stored_object(column, imports)
    # a module-level function by its import path, a lambda left out (named in a comment)
    assert rendered == f"StoredObject('uploads', key_prefix={__name__}.by_tenant)"
    assert f"import {__name__}" in imports
    lam = render_stored_object(StoredObject("uploads", key_prefix=lambda ctx: ()))
    assert re.search(r"not rendered.*key_prefix=<.*<lambda>>", lam), lam
    assert render_stored_object(StoredObject("u", key_prefix="scans")) == (
        "StoredObject('u', key_prefix='scans')"
    )


def test_tickets_refuse_a_row_keyed_column() -> None:
    from sqlalchemy_obstore import ObstoreBackend
    from sqlalchemy_obstore.registry import BackendRegistry
    from sqlalchemy_obstore.tickets import UploadTickets

    registry = BackendRegistry()
    registry.register_backend(ObstoreBackend("uploads", "memory://"))
    tickets = UploadTickets(secret=b"k" * 32, registry=registry)
    with pytest.raises(ConfigurationError, match="derives its key prefix from the row"):
        tickets.issue(StoredObject("uploads", key_prefix=by_tenant), filename="a.pdf")
