"""The framework-neutral HTTP decisions behind downloads: ranges, conditions, headers."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlalchemy_obstore._attributes import (
    INLINE_CONTENT_TYPES,
    content_disposition,
    serves_inline,
)
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
        ({"if-modified-since": "Fri, 31 Dec 9999 23:59:59 GMT"}, False),  # future: ignored
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
    headers = download_headers(meta(content_type="image/png", filename="Résumé final.png"))
    assert headers == {
        "content-type": "image/png",
        "content-disposition": (
            "inline; filename=\"R_sum_ final.png\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20final.png"
        ),
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
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


PASSIVE = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
    "video/webm",
    "text/plain",
    "Text/Plain; charset=utf-8",
    "IMAGE/PNG",
]
NOT_PASSIVE = [
    "text/html",
    "TEXT/HTML; charset=utf-8",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/xsl",
    "application/xslt+xml",
    "application/rss+xml",
    "application/vnd.whatever+xml",
    "text/x-anything",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/pdf",
    "application/json",
    "application/x-unknown",
    "multipart/x-mixed-replace",
    "image/x-unknown-raster",
    "application/octet-stream",
]


@pytest.mark.parametrize("content_type", NOT_PASSIVE)
def test_inline_is_deny_by_default(content_type: str) -> None:
    """Every type outside the passive allow-list is an attachment, whatever is asked."""
    for disposition in ("inline", None, "attachment"):
        headers = download_headers(meta(content_type=content_type), disposition=disposition)
        assert headers["content-disposition"].startswith("attachment;"), disposition
        assert headers["content-security-policy"] == "sandbox"
        assert headers["x-content-type-options"] == "nosniff"
    assert content_disposition("a.bin", content_type).startswith("attachment;")
    assert not serves_inline(content_type)


@pytest.mark.parametrize("content_type", PASSIVE)
def test_passive_types_display_inline_unless_asked_otherwise(content_type: str) -> None:
    headers = download_headers(meta(content_type=content_type))
    assert headers["content-disposition"].startswith("inline;")
    # inline responses are sandboxed and nosniff too
    assert headers["content-security-policy"] == "sandbox"
    assert headers["x-content-type-options"] == "nosniff"
    forced = download_headers(meta(content_type=content_type), disposition="attachment")
    assert forced["content-disposition"].startswith("attachment;")
    assert serves_inline(content_type)
    assert content_disposition("a", content_type).startswith("inline;")
    assert content_disposition("a", content_type, inline=False).startswith("attachment;")


def test_the_passive_allow_list_is_small_and_has_no_active_type() -> None:
    assert "image/svg+xml" not in INLINE_CONTENT_TYPES
    assert "application/pdf" not in INLINE_CONTENT_TYPES
    assert {t.split("/")[0] for t in INLINE_CONTENT_TYPES} == {"image", "audio", "video", "text"}
    assert [t for t in INLINE_CONTENT_TYPES if t.startswith("text/")] == ["text/plain"]
    assert not [t for t in INLINE_CONTENT_TYPES if "xml" in t or "html" in t or "script" in t]


@pytest.mark.parametrize(
    "content_type",
    ["text/javascript", "application/javascript", "text/css", "application/wasm"],
)
def test_script_and_style_types_are_sent_as_octet_stream(content_type: str) -> None:
    headers = download_headers(meta(content_type=content_type, filename="x.js"))
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("\u202egnp.exe", "gnp.exe"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("a\x00b.txt", "ab.txt"),
        ("line\r\nX-Evil: 1.txt", "lineX-Evil: 1.txt"),
        ("bad\ud800.txt", "bad.txt"),
        ("..", "file"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
    ],
)
def test_download_names_are_sanitised(raw: str, name: str) -> None:
    for headers in (
        download_headers(meta(filename=raw)),
        download_headers(meta(), filename=raw),
    ):
        value = headers["content-disposition"]
        value.encode("latin-1")  # a valid header value...
        assert all(32 <= ord(ch) < 127 for ch in value)  # ...of printable ASCII only
        assert value.endswith("filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~"))
        fallback = value.split('filename="', 1)[1].split('"', 1)[0]
        assert "/" not in fallback
        assert "\\" not in fallback
        assert "%" not in fallback


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


def test_304_and_416_carry_the_security_headers() -> None:
    for plan in (
        plan_download(meta(), {"if-none-match": '"abc"'}),
        plan_download(meta(), {"range": "bytes=500-"}),
    ):
        assert plan.status in (304, 416)
        assert plan.headers["x-content-type-options"] == "nosniff"
        assert plan.headers["content-security-policy"] == "sandbox"


# -- malformed request headers never raise --------------------------------------------------------
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"bytes=0-{HUGE}", ByteRange(0, 99)),  # last past the end: clamped
        (f"bytes=-{HUGE}", ByteRange(0, 99)),  # suffix longer than the object
        ("bytes=" + "0" * 5000 + "5-" + "0" * 5000 + "9", ByteRange(5, 9)),  # leading zeros
        ("bytes=" + ",".join(["0-1"] * 5000), None),  # too many ranges: ignored
    ],
)
def test_huge_numbers_in_range_headers(header: str, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}5"])
def test_a_5000_digit_start_is_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)
    plan = plan_download(meta(), {"range": header})
    assert plan.status == 416
    assert plan.headers["content-range"] == "bytes */100"


HEADER_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet='bytes=-,0123456789 ٣W/"*', max_size=60),
    st.builds(
        lambda n, s: f"bytes={n}-{s}", st.text("0123456789", max_size=6000), st.text(max_size=20)
    ),
    st.sampled_from(
        [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            "Mon, 01 Jan 0001 00:00:00 +2359",
            "Fri, 31 Dec 9999 23:59:59 -2359",
            "Sun, 06 Nov 1994 99999999999999999999:49:37 GMT",
            "*",
            'W/"x", "y"',
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    range_=HEADER_TEXT,
    if_range=HEADER_TEXT,
    if_none_match=HEADER_TEXT,
    if_modified_since=HEADER_TEXT,
    size=st.integers(min_value=0, max_value=2**40),
)
def test_header_parsers_never_raise(
    range_: str, if_range: str, if_none_match: str, if_modified_since: str, size: int
) -> None:
    """Whatever the client sends, the plan is one of 200/206/304/416 (never an error)."""
    headers = {
        "range": range_,
        "if-range": if_range,
        "if-none-match": if_none_match,
        "if-modified-since": if_modified_since,
    }
    for subset in ({"range": range_}, {"range": range_, "if-range": if_range}, headers):
        plan = plan_download(meta(size=size), subset)
        assert plan.status in {200, 206, 304, 416}
        if plan.status == 206:
            assert plan.range is not None
            assert 0 <= plan.range.start <= plan.range.end < size
    only_dates = {"if-modified-since": if_modified_since}
    assert isinstance(not_modified(only_dates, '"abc"', MODIFIED), bool)
    assert isinstance(if_range_matches({"if-range": if_range}, '"abc"', MODIFIED), bool)


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="ab.Z9 _-+()@~,=", max_size=40),
        st.text(alphabet="ab. _", min_size=190, max_size=210),
        st.text(max_size=40),
    )
)
def test_the_plain_name_shortcut_agrees_with_sanitize_filename(name: str) -> None:
    from sqlalchemy_obstore._attributes import _display_name
    from sqlalchemy_obstore.keys import sanitize_filename

    assert _display_name(name) == sanitize_filename(name)
