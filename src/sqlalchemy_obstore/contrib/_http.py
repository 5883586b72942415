"""What a download answers, decided without I/O: ranges, conditional requests, headers.

The web integrations share this HTTP core (and the ASGI applications of
[`_asgi`][sqlalchemy_obstore.contrib._asgi] that act on it):
[`parse_range`][], [`not_modified`][], [`if_range_matches`][] and [`plan_download`][]
decide what a download answers: `200` with the whole object, `206` with one range and
`Content-Range`, `304` for a matching `If-None-Match` / `If-Modified-Since`, or `416`
with `Content-Range: bytes */<size>`; plus the entity headers (`Content-Type`,
`Content-Length`, `ETag`, `Last-Modified`, `Content-Disposition`, `Accept-Ranges`,
`X-Content-Type-Options`, `Content-Security-Policy`, `Cache-Control`). No request
header, however malformed, makes them raise: what cannot be parsed is ignored, as RFC
9110 allows.

Inline display is deny-by-default (see
[`serves_inline`][sqlalchemy_obstore._attributes.serves_inline]): only raster images,
audio, video and plain text are `inline`; every file response carries
`X-Content-Type-Options: nosniff` and `Content-Security-Policy: sandbox`.

Multiple ranges in one request are answered with the whole object (`200`), as RFC 9110
allows, unless none of them can be satisfied (`416`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal, TypeAlias

from .._attributes import (
    DOWNLOAD_SECURITY_HEADERS,
    content_disposition,
    guess_content_type,
    response_content_type,
)

__all__ = (
    "ByteRange",
    "Disposition",
    "DownloadPlan",
    "FileMeta",
    "Message",
    "RangeNotSatisfiable",
    "Receive",
    "Scope",
    "Send",
    "content_length",
    "download_headers",
    "format_etag",
    "http_date",
    "if_range_matches",
    "not_modified",
    "parse_range",
    "plan_download",
    "request_headers",
    "safe_content_type",
)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Disposition: TypeAlias = Literal["inline", "attachment"]

_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$", re.ASCII)
_MAX_RANGES = 100  # more ranges in one header are ignored (the whole object is sent)
_BEYOND = 1 << 62  # any position written with more than 18 digits: past every object
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_ETAG = re.compile(r'^(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"$')
_MIME = re.compile(
    r"^[\w!#$&^.+-]+/[\w!#$&^.+-]+(?:\s*;\s*[\w!#$&^.+-]+=[\w!#$&^.+\"-]+)*$", re.ASCII
)


# -- request parsing ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range `start`..`end` of an object, as in `Content-Range`."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes the range covers."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The `Content-Range` value of this range in an object of `size` bytes."""
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    """The `Range` header asks only for bytes the object does not have (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Parse a `Range` header against an object of `size` bytes.

    Supports `bytes=first-last`, open ranges `bytes=first-` and suffix ranges
    `bytes=-count`; `last` past the end is clamped.

    Returns:
        The one range to serve, or `None` to serve the whole object: no header, a unit
        other than `bytes`, a malformed header (ignored, as RFC 9110 allows), or several
        ranges of which at least one can be served.

    Raises:
        RangeNotSatisfiable: If no requested range overlaps the object.

    Example:
        >>> parse_range("bytes=0-9", 100), parse_range("bytes=-10", 100)
        (ByteRange(start=0, end=9), ByteRange(start=90, end=99))
        >>> parse_range("bytes=90-", 100), parse_range("bytes=0-1,5-6", 100)
        (ByteRange(start=90, end=99), None)
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or specs.count(",") >= _MAX_RANGES:
        return None
    ranges: list[ByteRange | None] = []
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if match is None:
            return None
        first, last = match.groups()
        if first:
            start = _position(first)
            end = _position(last) if last else size - 1
            if last and end < start:
                return None  # syntactically invalid: ignore the header
            ranges.append(ByteRange(start, min(end, size - 1)) if start < size else None)
        elif last:
            count = _position(last)
            ranges.append(ByteRange(max(size - count, 0), size - 1) if count and size else None)
        else:
            return None
    satisfiable = [r for r in ranges if r is not None]
    if not satisfiable:
        raise RangeNotSatisfiable(header)
    return satisfiable[0] if len(ranges) == 1 else None


def _position(digits: str) -> int:
    """A byte position from ASCII digits: exact up to 18 digits, else past every object.

    (Python refuses to convert more than 4300 digits, and no object is 10**18 bytes.)
    """
    significant = digits.lstrip("0") or "0"
    return int(significant) if _DIGITS.fullmatch(significant) else _BEYOND


def _etag_tokens(header: str) -> list[str]:
    return [token.strip() for token in header.split(",") if token.strip()]


def _opaque(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _http_datetime(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
        aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        aware.timestamp()  # (a time zone offset can push a date out of range)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return aware


def _seconds(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return int(aware.timestamp())


def not_modified(
    headers: Mapping[str, str], etag: str | None, last_modified: datetime | None
) -> bool:
    """Whether a `GET`/`HEAD` is answered `304 Not Modified` (RFC 9110 section 13.1).

    `If-None-Match` (weak comparison, `*` matches any object) takes precedence; only
    without it is `If-Modified-Since` compared with `last_modified` (to the second).
    A date that cannot be parsed, or lies in the future, is ignored.

    Args:
        headers: The request headers, names lower-case.
        etag: The object's `ETag` as sent (see [`format_etag`][]).
        last_modified: The object's modification time.
    """
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        if etag is None:
            return False
        return any(_opaque(t) == _opaque(etag) for t in _etag_tokens(if_none_match))
    since = headers.get("if-modified-since")
    if since is None or last_modified is None:
        return False
    moment = _http_datetime(since)
    # RFC 9110 section 13.1.3: a date that is not valid, or later than now, is ignored.
    if moment is None or moment.timestamp() > time.time():
        return False
    return _seconds(last_modified) <= int(moment.timestamp())


def if_range_matches(
    headers: Mapping[str, str], etag: str | None, last_modified: datetime | None
) -> bool:
    """Whether the `Range` header may be honoured under the request's `If-Range`.

    Without `If-Range` it may. An entity tag must match strongly (weak tags never do);
    a date must equal `last_modified` to the second. Otherwise the whole object is
    sent, as RFC 9110 section 13.1.5 requires.
    """
    value = headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(("W/", '"')):
        return etag is not None and not etag.startswith("W/") and value == etag
    moment = _http_datetime(value)
    return (
        moment is not None
        and last_modified is not None
        and _seconds(last_modified) == int(moment.timestamp())
    )


def request_headers(scope: Scope) -> dict[str, str]:
    """The headers of an ASGI request, names lower-case, repeated ones joined by `, `."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def content_length(value: str | None) -> int | None:
    """A `Content-Length` value, if it is a plain ASCII number (else unknown)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return _position(value)


# -- response headers ---------------------------------------------------------------------------
def format_etag(etag: str | None) -> str | None:
    """An entity tag as an `ETag` header value: quoted (stores differ), or `None`.

    Example:
        >>> format_etag('"abc"'), format_etag("abc"), format_etag('W/"x"')
        ('"abc"', '"abc"', 'W/"x"')
    """
    if not etag:
        return None
    if _ETAG.match(etag):
        return etag
    cleaned = "".join(ch for ch in etag if 0x21 <= ord(ch) <= 0x7E and ch != '"')
    return f'"{cleaned}"' if cleaned else None


def http_date(moment: datetime) -> str:
    """Format a time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).

    Example:
        >>> http_date(datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc))
        'Sun, 06 Nov 1994 08:49:37 GMT'
    """
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return format_datetime(aware.astimezone(timezone.utc), usegmt=True)


def safe_content_type(content_type: str | None, name: str) -> str:
    """`content_type` when it is a well-formed ASCII MIME type, else the type of `name`."""
    if content_type and _MIME.match(content_type.strip()) and content_type.isascii():
        return content_type.strip()
    return guess_content_type(name)


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What a download needs to know about an object.

    Attributes:
        size: Size in bytes.
        content_type: The MIME type to send.
        filename: The name offered in `Content-Disposition`.
        etag: The entity tag (as the store reports it), if any.
        last_modified: The modification time, if known.
        cache_control: A `Cache-Control` value stored with the object, if any.
        content_encoding: The object's `Content-Encoding` (`"gzip"` for a file stored
            compressed), sent as it is: the client decodes it.
    """

    size: int
    content_type: str
    filename: str
    etag: str | None = None
    last_modified: datetime | None = None
    cache_control: str | None = None
    content_encoding: str | None = None


def download_headers(
    meta: FileMeta,
    *,
    disposition: Disposition | None = None,
    filename: str | None = None,
    cache_control: str | None = None,
) -> dict[str, str]:
    """The entity headers of a download (everything but `Content-Length`/`Content-Range`).

    Inline display is deny-by-default: a file is `inline` only if its type is one of
    the passive types of
    [`INLINE_CONTENT_TYPES`][sqlalchemy_obstore._attributes.INLINE_CONTENT_TYPES]
    (raster images, audio, video, plain text) and `disposition` does not ask for an
    attachment; everything else (HTML, SVG, XML, XSLT, PDF, unknown types, ...) is an
    `attachment`, whatever `disposition` asks. Every download also carries
    `X-Content-Type-Options: nosniff` (no type guessing) and
    `Content-Security-Policy: sandbox` (should a browser render it anyway, it runs no
    script, in an opaque origin). The filename is sanitised (no directories, control
    characters or bidi overrides), and script or style sheet types are sent as
    `application/octet-stream` (see
    [`response_content_type`][sqlalchemy_obstore._attributes.response_content_type]).

    Args:
        meta: The object.
        disposition: `"inline"` or `"attachment"`; by default inline when the type
            allows it.
        filename: The name to offer instead of `meta.filename`.
        cache_control: `Cache-Control` to send; defaults to the stored value, else
            `private, no-cache` (revalidate with the `ETag` before reuse).

    Example:
        >>> meta = FileMeta(size=3, content_type="text/xsl", filename="page.xsl")
        >>> headers = download_headers(meta, disposition="inline")
        >>> headers["content-disposition"].split(";")[0], headers["x-content-type-options"]
        ('attachment', 'nosniff')
        >>> headers["content-security-policy"]
        'sandbox'
    """
    name = filename if filename is not None else meta.filename
    content_type = safe_content_type(meta.content_type, name)
    headers = {
        "content-type": response_content_type(content_type),
        "content-disposition": content_disposition(
            name, content_type, inline=disposition != "attachment"
        ),
        "accept-ranges": "bytes",
        **DOWNLOAD_SECURITY_HEADERS,
        "cache-control": cache_control or meta.cache_control or "private, no-cache",
    }
    if meta.content_encoding:  # (the stored bytes are sent as they are)
        headers["content-encoding"] = meta.content_encoding
    etag = format_etag(meta.etag)
    if etag is not None:
        headers["etag"] = etag
    if meta.last_modified is not None:
        headers["last-modified"] = http_date(meta.last_modified)
    return headers


@dataclass(slots=True)
class DownloadPlan:
    """What to answer to a download request.

    Attributes:
        status: 200, 206, 304 or 416.
        headers: Response headers, names lower-case.
        range: The bytes to send, or `None` for no body.
        whole: Whether `range` is the whole object (streamed in one read).
    """

    status: int
    headers: dict[str, str]
    range: ByteRange | None = None
    whole: bool = False


def plan_download(
    meta: FileMeta,
    headers: Mapping[str, str],
    *,
    disposition: Disposition | None = None,
    filename: str | None = None,
    cache_control: str | None = None,
) -> DownloadPlan:
    """Decide the answer to a `GET`/`HEAD` of an object (no I/O).

    Args:
        meta: The object.
        headers: The request headers, names lower-case (see [`request_headers`][]).
        disposition: See [`download_headers`][].
        filename: See [`download_headers`][].
        cache_control: See [`download_headers`][].

    Example:
        >>> meta = FileMeta(size=100, content_type="text/plain", filename="a.txt", etag='"1"')
        >>> plan = plan_download(meta, {"range": "bytes=10-19"})
        >>> plan.status, plan.headers["content-range"], plan.headers["content-length"]
        (206, 'bytes 10-19/100', '10')
        >>> plan_download(meta, {"if-none-match": '"1"'}).status
        304
        >>> plan_download(meta, {"range": "bytes=200-"}).headers["content-range"]
        'bytes */100'
    """
    entity = download_headers(
        meta, disposition=disposition, filename=filename, cache_control=cache_control
    )
    etag = entity.get("etag")
    if not_modified(headers, etag, meta.last_modified):
        kept = ("etag", "last-modified", "cache-control", *DOWNLOAD_SECURITY_HEADERS)
        return DownloadPlan(304, {k: entity[k] for k in kept if k in entity})
    wanted: ByteRange | None = None
    if "range" in headers and if_range_matches(headers, etag, meta.last_modified):
        try:
            wanted = parse_range(headers["range"], meta.size)
        except RangeNotSatisfiable:
            return DownloadPlan(
                416,
                {
                    "content-range": f"bytes */{meta.size}",
                    "content-length": "0",
                    "accept-ranges": "bytes",
                    **DOWNLOAD_SECURITY_HEADERS,
                },
            )
    if wanted is not None:
        entity["content-range"] = wanted.content_range(meta.size)
        entity["content-length"] = str(wanted.length)
        return DownloadPlan(206, entity, wanted)
    entity["content-length"] = str(meta.size)
    whole = ByteRange(0, meta.size - 1) if meta.size else None
    return DownloadPlan(200, entity, whole, whole=True)
