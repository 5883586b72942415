"""The framework-neutral HTTP decisions behind downloads: ranges, conditions, headers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sqlalchemy_obstore.contrib._http import (
    ByteRange,
    FileMeta,
    RangeNotSatisfiable,
    download_headers,
    format_etag,
    http_date,
    if_range_matches,
    not_modified,
    parse_range,
    plan_download,
    request_headers,
)

MODIFIED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
MODIFIED_HTTP = "Fri, 02 Jan 2026 03:04:05 GMT"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", ByteRange(0, 9)),  # first bytes
        ("bytes=10-19", ByteRange(10, 19)),  # middle
        ("bytes=-10", ByteRange(90, 99)),  # suffix
        ("bytes=-1000", ByteRange(0, 99)),  # suffix longer than the object
        ("bytes=95-", ByteRange(95, 99)),  # open-ended
        ("bytes=90-1000", ByteRange(90, 99)),  # clamped
        ("bytes=99-99", ByteRange(99, 99)),
        ("BYTES = 1 - 2", ByteRange(1, 2)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole object
        ("bytes=0-1,200-300", None),
        ("bytes=5-1", None),  # invalid: ignored
        ("bytes=abc", None),
        ("bytes=-", None),
        ("bytes=", None),
        ("items=0-9", None),  # another unit: ignored
        ("bytes=٣-٤", None),  # non-ASCII digits
        ("0-9", None),
        (None, None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=100-,200-", 100),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_byte_range_helpers() -> None:
    r = ByteRange(10, 19)
    assert r.length == 10
    assert r.content_range(100) == "bytes 10-19/100"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"if-none-match": '"abc"'}, True),
        ({"if-none-match": 'W/"abc"'}, True),  # weak comparison
        ({"if-none-match": '"x", "abc"'}, True),
        ({"if-none-match": "*"}, True),
        ({"if-none-match": '"x"'}, False),
        # If-None-Match wins over If-Modified-Since
        ({"if-none-match": '"x"', "if-modified-since": MODIFIED_HTTP}, False),
        ({"if-modified-since": MODIFIED_HTTP}, True),
        ({"if-modified-since": "Sat, 03 Jan 2026 00:00:00 GMT"}, True),
        ({"if-modified-since": "Thu, 01 Jan 2026 00:00:00 GMT"}, False),
        ({"if-modified-since": "yesterday"}, False),
        ({}, False),
    ],
)
def test_not_modified(headers: dict[str, str], expected: bool) -> None:
    assert not_modified(headers, '"abc"', MODIFIED) is expected


def test_not_modified_without_validators() -> None:
    assert not not_modified({"if-none-match": '"abc"'}, None, None)
    assert not not_modified({"if-modified-since": MODIFIED_HTTP}, None, None)


@pytest.mark.parametrize(
    ("if_range", "etag", "expected"),
    [
        (None, '"abc"', True),
        ('"abc"', '"abc"', True),
        ('"other"', '"abc"', False),
        ('W/"abc"', 'W/"abc"', False),  # weak tags never match for ranges
        ('"abc"', 'W/"abc"', False),
        (MODIFIED_HTTP, '"abc"', True),
        ("Thu, 01 Jan 2026 00:00:00 GMT", '"abc"', False),
        ("garbage", '"abc"', False),
    ],
)
def test_if_range(if_range: str | None, etag: str, expected: bool) -> None:
    headers = {} if if_range is None else {"if-range": if_range}
    assert if_range_matches(headers, etag, MODIFIED) is expected


def test_format_etag_and_http_date() -> None:
    assert format_etag('"0"') == '"0"'
    assert format_etag("23435e-660f-bb8") == '"23435e-660f-bb8"'
    assert format_etag('we"ird\n') == '"weird"'
    assert format_etag(None) is None
    assert format_etag("") is None
    assert http_date(MODIFIED) == MODIFIED_HTTP
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert http_date(naive) == MODIFIED_HTTP


def test_request_headers_are_lower_case_and_joined() -> None:
    scope = {
        "headers": [
            (b"Range", b"bytes=0-1"),
            (b"If-None-Match", b'"a"'),
            (b"if-none-match", b'"b"'),
        ]
    }
    assert request_headers(scope) == {"range": "bytes=0-1", "if-none-match": '"a", "b"'}


def meta(**overrides: object) -> FileMeta:
    values: dict[str, object] = {
        "size": 100,
        "content_type": "application/pdf",
        "filename": "Résumé final.pdf",
        "etag": "abc",
        "last_modified": MODIFIED,
    }
    values.update(overrides)
    return FileMeta(**values)  # type: ignore[arg-type]


def test_download_headers() -> None:
    headers = download_headers(meta())
    assert headers == {
        "content-type": "application/pdf",
        "content-disposition": (
            "inline; filename=\"R_sum_ final.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20final.pdf"
        ),
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "cache-control": "private, no-cache",
        "etag": '"abc"',
        "last-modified": MODIFIED_HTTP,
    }
    chosen = download_headers(
        meta(cache_control="max-age=60"), disposition="attachment", filename="x.pdf"
    )
    assert chosen["content-disposition"].startswith('attachment; filename="x.pdf"')
    assert chosen["cache-control"] == "max-age=60"
    assert download_headers(meta(), cache_control="no-store")["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "image/svg+xml", "application/javascript", "TEXT/HTML; charset=utf-8"],
)
def test_active_content_is_always_an_attachment(content_type: str) -> None:
    headers = download_headers(meta(content_type=content_type), disposition="inline")
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["content-security-policy"] == "sandbox"
    assert headers["x-content-type-options"] == "nosniff"


def test_unusable_content_types_are_replaced() -> None:
    headers = download_headers(meta(content_type="text/plain\r\nx-evil: 1", filename="a.png"))
    assert headers["content-type"] == "image/png"
    headers = download_headers(meta(content_type="", filename="a.bin"))
    assert headers["content-type"] == "application/octet-stream"


def test_plan_whole_object() -> None:
    plan = plan_download(meta(), {})
    assert plan.status == 200
    assert plan.whole
    assert plan.range == ByteRange(0, 99)
    assert plan.headers["content-length"] == "100"
    assert "content-range" not in plan.headers
    empty = plan_download(meta(size=0), {})
    assert (empty.status, empty.range, empty.headers["content-length"]) == (200, None, "0")


def test_plan_range_not_modified_and_unsatisfiable() -> None:
    partial = plan_download(meta(), {"range": "bytes=-10"})
    assert (partial.status, partial.range, partial.whole) == (206, ByteRange(90, 99), False)
    assert partial.headers["content-range"] == "bytes 90-99/100"
    assert partial.headers["content-length"] == "10"

    cached = plan_download(meta(), {"if-none-match": '"abc"', "range": "bytes=0-1"})
    assert cached.status == 304
    assert cached.range is None
    assert cached.headers["etag"] == '"abc"'
    assert "content-length" not in cached.headers

    refused = plan_download(meta(), {"range": "bytes=100-"})
    assert refused.status == 416
    assert refused.range is None
    assert refused.headers["content-range"] == "bytes */100"

    stale = plan_download(meta(), {"range": "bytes=0-1", "if-range": '"old"'})
    assert (stale.status, stale.whole) == (200, True)
