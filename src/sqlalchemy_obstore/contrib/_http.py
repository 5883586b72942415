"""Framework-neutral HTTP for the web integrations: downloads, ranges, the signed-URL route.

Everything here speaks plain ASGI (`scope`, `receive`, `send`), so the Litestar and the
Starlette/FastAPI integrations share one implementation and differ only in how they hand
a request over:

* [`parse_range`][], [`not_modified`][], [`if_range_matches`][] and [`plan_download`][]
  decide, without I/O, what a download answers: `200` with the whole object, `206` with
  one range and `Content-Range`, `304` for a matching `If-None-Match` /
  `If-Modified-Since`, or `416` with `Content-Range: bytes */<size>`; plus the entity
  headers (`Content-Type`, `Content-Length`, `ETag`, `Last-Modified`,
  `Content-Disposition`, `Accept-Ranges`, `X-Content-Type-Options`,
  `Content-Security-Policy`, `Cache-Control`). No request header, however malformed,
  makes them raise: what cannot be parsed is ignored, as RFC 9110 allows.
* [`FileDownload`][] streams a `FileObject` with that plan (bounded memory: the whole
  object through `iter_chunks_async`, a range through successive `get_range_async`).
* [`SignedStorageRoute`][] serves URLs signed by
  [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner]: `GET`/`HEAD` download,
  `PUT` streams the request body into the backend (multipart, never whole in memory),
  within the size limit and never over an existing object.

Every download opens the object (its first bytes, or a `head`) before the response
starts, so an object that has gone from the store is a `404`, never a `200` whose body
breaks off. Inline display is deny-by-default (see
[`serves_inline`][sqlalchemy_obstore._attributes.serves_inline]): only raster images,
audio, video and plain text are `inline`; every file response carries
`X-Content-Type-Options: nosniff` and `Content-Security-Policy: sandbox`.

Multiple ranges in one request are answered with the whole object (`200`), as RFC 9110
allows, unless none of them can be satisfied (`416`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .._attributes import (
    DOWNLOAD_SECURITY_HEADERS,
    content_disposition,
    guess_content_type,
    response_content_type,
)
from ..backends import Backend
from ..errors import (
    BackendNotFoundError,
    ConfigurationError,
    FileTooLargeError,
    InvalidFileObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    SignedURLError,
    StoragePermissionError,
)
from ..file_object import FileObject
from ..registry import BackendRegistry
from ..remote import filename_from_content_disposition
from ..signing import HmacUrlSigner

if TYPE_CHECKING:
    from ..tickets import UploadTickets

__all__ = (
    "DEFAULT_HTTP_CHUNK_SIZE",
    "ByteRange",
    "Disposition",
    "DownloadPlan",
    "FileDownload",
    "FileMeta",
    "SignedStorageRoute",
    "body_chunks",
    "download_headers",
    "format_etag",
    "http_date",
    "if_range_matches",
    "not_modified",
    "open_body",
    "parse_range",
    "plan_download",
    "request_headers",
    "send_plan",
    "send_text",
)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Disposition: TypeAlias = Literal["inline", "attachment"]

DEFAULT_HTTP_CHUNK_SIZE = 1024 * 1024
"""Bytes read from the store per chunk of a download (1 MiB): the memory a download holds."""

_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$", re.ASCII)
_MAX_RANGES = 100  # more ranges in one header are ignored (the whole object is sent)
_BEYOND = 1 << 62  # any position written with more than 18 digits: past every object
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_ETAG = re.compile(r'^(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"$')
_MIME = re.compile(
    r"^[\w!#$&^.+-]+/[\w!#$&^.+-]+(?:\s*;\s*[\w!#$&^.+-]+=[\w!#$&^.+\"-]+)*$", re.ASCII
)
_NO_STORE = {"cache-control": "no-store", **DOWNLOAD_SECURITY_HEADERS}
_EXISTS = "An object already exists here; it is never replaced."
_REDEEMED = "This upload ticket was already redeemed; ask the application for a new one."


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


def _safe_content_type(content_type: str | None, name: str) -> str:
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
    content_type = _safe_content_type(meta.content_type, name)
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


# -- sending ------------------------------------------------------------------------------------
async def body_chunks(
    backend: Backend, path: str, plan: DownloadPlan, chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The body of `plan`, read from the store chunk by chunk (bounded memory)."""
    wanted = plan.range
    if wanted is None:
        return
    if plan.whole:
        chunks = backend.iter_chunks_async(path, chunk_size=chunk_size)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return
    position = wanted.start
    while position <= wanted.end:
        data = await backend.get_range_async(
            path, position, min(chunk_size, wanted.end - position + 1)
        )
        if not data:
            return
        yield data
        position += len(data)


async def open_body(
    backend: Backend,
    path: str,
    plan: DownloadPlan,
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
    *,
    head: bool = False,
    confirmed: bool = False,
) -> AsyncIterator[bytes] | None:
    """Open the object before the response starts; return the body to send, if any.

    A response whose headers promise a body must be able to send it: with a body, the
    first chunk is read here (one request that fails with `ObjectNotFoundError` if the
    object has gone); without one (`HEAD`, `304`, `416`, an empty object) a `head`
    confirms the object exists, unless `confirmed` says a store request just did.

    Raises:
        ObjectNotFoundError: If the object does not exist (answer `404`).
    """
    if head or plan.range is None:
        if not confirmed:
            await backend.head_async(path)
        return None
    chunks = body_chunks(backend, path, plan, chunk_size)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except BaseException:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
        raise
    return _prepend(first, chunks)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_plan(
    send: Send, status: int, headers: Mapping[str, str], body: AsyncIterator[bytes] | None
) -> None:
    """Send a response: status and headers, then `body` chunk by chunk (if any)."""
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
    )
    if body is not None:
        try:
            async for chunk in body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_text(
    send: Send, status: int, text: str, headers: Mapping[str, str] | None = None
) -> None:
    """Send a short plain-text response (errors); never cached."""
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    all_headers = {
        "content-type": "text/plain; charset=utf-8",
        "content-length": str(len(body)),
        **_NO_STORE,
        **(headers or {}),
    }
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- downloads of a FileObject ------------------------------------------------------------------
def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1] or "file"


async def _file_meta(file: FileObject, backend: Backend, path: str) -> tuple[FileMeta, bool]:
    """The download metadata of `file`, and whether a store request just confirmed it."""
    if file.size is not None and file.etag and file.last_modified:
        # Keys are immutable: what the column recorded is what the store holds.
        meta = FileMeta(
            size=file.size,
            content_type=file.content_type,
            filename=file.filename,
            etag=file.etag,
            last_modified=file.last_modified,
            content_encoding=file.content_encoding,
        )
        return meta, False
    info = await backend.head_async(path)
    meta = FileMeta(
        size=info.size,
        content_type=file.content_type or info.content_type or guess_content_type(path),
        filename=file.filename,
        etag=info.etag or file.etag,
        last_modified=info.last_modified,
        cache_control=info.attributes.get("Cache-Control"),
        content_encoding=file.content_encoding or info.attributes.get("Content-Encoding"),
    )
    return meta, True


@dataclass
class FileDownload:
    """An ASGI application streaming one stored `FileObject` with HTTP semantics.

    Honours `Range` (206/416), `If-None-Match`/`If-Modified-Since` (304) and `If-Range`;
    answers `HEAD` with the headers only. Metadata comes from the column when it records
    size, etag and modification time (keys are immutable), else from one `head`
    request. The object is opened before the response starts (see [`open_body`][]):
    if it has gone from the store the answer is `404`, never headers that promise
    bytes the store no longer has.

    The framework helpers (`contrib.litestar.file_response`,
    `contrib.starlette.file_response`) wrap it in their response types.
    """

    file: FileObject
    disposition: Disposition | None = None
    filename: str | None = None
    cache_control: str | None = None
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
    backend: Backend = field(init=False)
    path: str = field(init=False)

    def __post_init__(self) -> None:
        if self.disposition not in (None, "inline", "attachment"):
            raise ValueError(
                f"disposition must be 'inline', 'attachment' or None, not {self.disposition!r}."
            )
        # Raise in the handler (NoContentError, BackendNotFoundError), not mid-response.
        self.backend, self.path = self.file._stored()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request in `scope`."""
        try:
            meta, confirmed = await _file_meta(self.file, self.backend, self.path)
            plan = plan_download(
                meta,
                request_headers(scope),
                disposition=self.disposition,
                filename=self.filename,
                cache_control=self.cache_control,
            )
            body = await open_body(
                self.backend,
                self.path,
                plan,
                self.chunk_size,
                head=scope.get("method", "GET") == "HEAD",
                confirmed=confirmed,
            )
        except ObjectNotFoundError:
            await send_text(send, 404, "The file does not exist (any more).")
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        await send_plan(send, plan.status, plan.headers, body)


_REFUSED_KEYS = (InvalidFileObjectError, StoragePermissionError)
"""A key the backend refuses to touch: malformed (`InvalidObjectPathError`), or leading
out of a local-files root (`PathEscapeError`), or a store that denies access."""


def _refused_key(exc: Exception) -> tuple[int, str]:
    """The status and text that answer a refused key (400 malformed, 403 refused)."""
    if isinstance(exc, InvalidFileObjectError):
        return 400, "The object path is malformed."
    return 403, "Forbidden: the store refuses this object."


# -- the signed-URL route -----------------------------------------------------------------------
class _Disconnected(Exception):
    """The client went away in the middle of its upload."""


def _upload_limit(backend: Backend, *limits: int | None) -> int | None:
    present = [
        limit
        for limit in (*limits, backend.policy.max_size if backend.policy else None)
        if limit is not None
    ]
    return min(present) if present else None


def _content_length(value: str | None) -> int | None:
    """A `Content-Length` value, if it is a plain ASCII number (else unknown)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return _position(value)


async def _request_body(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        if message["type"] != "http.request":
            continue
        chunk = bytes(message.get("body", b""))
        total += len(chunk)
        if limit is not None and total > limit:
            raise FileTooLargeError(limit=limit, size_seen=total)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class _TicketRedeemed(Exception):
    """The upload ticket of the URL was redeemed while its upload streamed."""


@dataclass
class SignedStorageRoute:
    """Serves URLs signed by an [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner].

    `GET`/`HEAD` stream the object like [`FileDownload`][] (ranges, conditional
    requests, the same deny-by-default disposition and security headers); `PUT`
    streams the request body into the backend as a multipart upload. A `PUT` never
    replaces an object (`409 Conflict`), and a body longer than the smallest of
    `max_upload_size`, the backend policy's `max_size` and the `max_size` signed into
    the URL is refused with `413` before or while it streams, leaving nothing stored.
    Refused signatures (including non-canonical spellings) get `403` and no data; an
    unknown backend or missing object `404`.

    The `PUT` URL of an upload ticket carries its size limit and the ticket's id
    inside the signature. Once that ticket is redeemed (or while it is being
    redeemed), the route answers `409` to every `PUT` through the URL: it asks
    `tickets` (the [`UploadTickets`][sqlalchemy_obstore.tickets.UploadTickets] that
    issued the ticket, sharing its replay guard); without `tickets` such a `PUT` is
    refused with `403`, since the route cannot tell. The check runs before the body
    is read and again before a streamed body is moved into place; an upload that was
    already streaming when the ticket was redeemed can at worst leave an object no row
    refers to (the garbage collector removes it), never change the redeemed file.

    Type and content checks of uploads happen where the upload becomes a file (the
    upload tickets' `redeem`), as for uploads that go straight to S3. The stored
    `Content-Type` is the request's (when well-formed) and the stored
    `Content-Disposition` follows the same deny-by-default rule as downloads.

    Args:
        registry: Resolves the backend key in the URL.
        signer: Verifies the signatures (it needs the secret that signed them).
        chunk_size: Download read size.
        max_upload_size: Largest accepted `PUT` body in bytes (`None`: only the backend
            policy's `max_size` and the URL's own limit apply).
        tickets: The upload-ticket issuer whose tickets' URLs this route serves.
    """

    registry: BackendRegistry
    signer: HmacUrlSigner
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
    max_upload_size: int | None = None
    tickets: UploadTickets | None = None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, backend_key: str, path: str
    ) -> None:
        """Answer the request in `scope` for the object `path` of backend `backend_key`.

        The framework adapter extracts both from the URL path (percent-decoded).
        """
        method = str(scope.get("method", "GET")).upper()
        if method not in {"GET", "HEAD", "PUT"}:
            await send_text(send, 405, "Use GET, HEAD or PUT.", {"allow": "GET, HEAD, PUT"})
            return
        try:
            params = self.signer.parse_query(scope.get("query_string", b"").decode("latin-1"))
            self.signer.verify(
                backend_key,
                path,
                method=method,
                expires=params["expires"],
                signature=params["signature"],
                max_size=params["max_size"],
                ticket=params["ticket"],
            )
            backend = self.registry.get_backend(backend_key)
        except SignedURLError as exc:
            await send_text(send, 403, f"Forbidden: {exc}")
            return
        except BackendNotFoundError:
            await send_text(send, 404, f"No storage backend {backend_key!r}.")
            return
        if method == "PUT":
            url_limit = params["max_size"]
            await self._put(
                scope,
                receive,
                send,
                backend,
                path,
                url_limit=None if url_limit is None else int(url_limit),
                ticket=params["ticket"],
            )
        else:
            await self._get(scope, send, backend, path, head=method == "HEAD")

    async def _get(
        self, scope: Scope, send: Send, backend: Backend, path: str, *, head: bool
    ) -> None:
        try:
            info = await backend.head_async(path)
            stored_disposition = info.attributes.get("Content-Disposition", "")
            meta = FileMeta(
                size=info.size,
                content_type=info.content_type or guess_content_type(path),
                # The original name, as recorded when the object was written (it is
                # sanitised again when the header is built).
                filename=filename_from_content_disposition(stored_disposition) or _leaf(path),
                etag=info.etag,
                last_modified=info.last_modified,
                cache_control=info.attributes.get("Cache-Control"),
                content_encoding=info.attributes.get("Content-Encoding"),
            )
            disposition: Disposition | None = (
                "attachment"
                if stored_disposition.strip().lower().startswith("attachment")
                else None
            )
            plan = plan_download(meta, request_headers(scope), disposition=disposition)
            body = await open_body(backend, path, plan, self.chunk_size, head=head, confirmed=True)
        except ObjectNotFoundError:
            await send_text(send, 404, "The object does not exist.")
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        await send_plan(send, plan.status, plan.headers, body)

    async def _ticket_refusal(self, ticket: str | None) -> tuple[int, str] | None:
        """Why a `PUT` through a ticket's URL is refused now (status, text), if it is."""
        if ticket is None:
            return None
        if self.tickets is None:
            return 403, (
                "This URL belongs to an upload ticket, and this route was not given the "
                "UploadTickets that issued it (pass tickets= to storage_routes or "
                "ObstoreConfig), so it cannot tell whether the ticket was redeemed."
            )
        try:
            redeemed = await self.tickets.is_redeemed_async(ticket)
        except ConfigurationError as exc:
            return 403, str(exc)
        return (409, _REDEEMED) if redeemed else None

    async def _put(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        backend: Backend,
        path: str,
        *,
        url_limit: int | None,
        ticket: str | None,
    ) -> None:
        headers = request_headers(scope)
        limit = _upload_limit(backend, self.max_upload_size, url_limit)
        declared = _content_length(headers.get("content-length"))
        if limit is not None and declared is not None and declared > limit:
            await send_text(send, 413, f"The upload is too large: the limit is {limit} bytes.")
            return
        refusal = await self._ticket_refusal(ticket)
        if refusal is not None:
            await send_text(send, *refusal)
            return
        try:
            exists = await backend.exists_async(path)
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        if exists:
            await send_text(send, 409, _EXISTS)
            return
        content_type = _safe_content_type(headers.get("content-type"), _leaf(path))
        attributes = {
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(_leaf(path), content_type),
        }
        try:
            if declared is not None and declared <= self.chunk_size:
                # Small and of known length: one create-only put (the body, at most
                # `chunk_size` bytes, is buffered by obstore for the conditional write).
                body_limit = declared if limit is None else min(limit, declared)
                await backend.put_async(
                    path,
                    _request_body(receive, body_limit),
                    attributes=attributes,
                    create_only=True,
                )
            else:
                await self._put_streaming(receive, backend, path, attributes, limit, ticket)
        except FileTooLargeError as exc:
            await send_text(send, 413, f"The upload is too large: the limit is {exc.limit} bytes.")
            return
        except ObjectExistsError:
            await send_text(send, 409, _EXISTS)
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        except _TicketRedeemed:
            await send_text(send, 409, _REDEEMED)
            return
        except _Disconnected:
            return
        answer = {"content-length": "0", "cache-control": "no-store"}
        etag = format_etag((await backend.head_async(path)).etag)
        if etag is not None:
            answer["etag"] = etag
        await send_plan(send, 200, answer, None)

    async def _put_streaming(
        self,
        receive: Receive,
        backend: Backend,
        path: str,
        attributes: Mapping[str, str],
        limit: int | None,
        ticket: str | None,
    ) -> None:
        # A create-only put cannot be a multipart upload: obstore would buffer the whole
        # body for it. Stream it as a multipart upload to a private staging key instead,
        # then copy it into place without overwriting (a hard link on local files, a
        # shared buffer in memory) and drop the staging key, whatever happens.
        staging = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            await backend.put_async(
                staging, _request_body(receive, limit), attributes=attributes, use_multipart=True
            )
            if await self._ticket_refusal(ticket) is not None:
                raise _TicketRedeemed  # redeemed while the body streamed: keep nothing
            await backend.copy_async(staging, path, overwrite=False)
        finally:
            await backend.delete_async(staging)
