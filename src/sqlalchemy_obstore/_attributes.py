"""Object attributes written with an upload: type, disposition, caching, user metadata."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote

from ._keys import DEFAULT_FILENAME, sanitize_filename

__all__ = (
    "ACTIVE_CONTENT_TYPES",
    "DEFAULT_CONTENT_TYPE",
    "DOWNLOAD_SECURITY_HEADERS",
    "INLINE_CONTENT_TYPES",
    "content_disposition",
    "guess_content_type",
    "object_attributes",
    "response_content_type",
    "serves_inline",
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

INLINE_CONTENT_TYPES = frozenset(
    {
        # Raster images: a browser hands them to an image decoder, never to a script
        # engine (SVG is a document with scripts, so it is not here).
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        # Audio and video: played by the media pipeline.
        "audio/mpeg",
        "audio/mp4",
        "audio/aac",
        "audio/ogg",
        "audio/opus",
        "audio/wav",
        "audio/wave",
        "audio/x-wav",
        "audio/webm",
        "audio/flac",
        "audio/x-flac",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        # Plain text: shown as text (with nosniff, never upgraded to HTML).
        "text/plain",
    }
)
"""The only types a browser is ever asked to display inline (deny by default).

Every other type, known or not (HTML, SVG, XML and every `+xml` type, XSLT,
JavaScript, PDF, `text/x-anything`, ...), is sent and stored as an `attachment`. PDF is
left out on purpose: it is an active format (JavaScript, forms, links, embedded files)
rendered by a viewer whose abilities differ between browsers, and Chromium refuses to
render a PDF under `Content-Security-Policy: sandbox`; pages that preview PDFs fetch
the bytes (`fetch`, `<embed>` of a viewer such as pdf.js), which a disposition does not
affect.
"""

ACTIVE_CONTENT_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/wasm",
        "application/x-shockwave-flash",
        "application/pdf+html",
    }
)
"""Types a browser executes or renders as a page.

Not what decides inline serving (that is the allow-list
[`INLINE_CONTENT_TYPES`][sqlalchemy_obstore._attributes.INLINE_CONTENT_TYPES]); upload
policies use it, together with every `+xml` type, to keep `type/*` wildcards from
matching active content that sniffing can report.
"""

DOWNLOAD_SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox",
}
"""Sent with every file the web integrations serve, inline or not.

`nosniff` stops a browser from guessing a type other than the one sent;
`Content-Security-Policy: sandbox` gives whatever the browser renders a unique opaque
origin with scripts, forms, plugins and pop-ups disabled, should it ever render it.
"""

# With nosniff, browsers run a script (or worker) only if its type is one of the
# JavaScript MIME types of the WHATWG MIME Sniffing standard, and apply a style sheet
# only if it is text/css: served under these types, an uploaded file could be loaded
# as script or style of the application's own pages (a way round their CSP).
_SUBRESOURCE_TYPES = frozenset(
    {
        "application/ecmascript",
        "application/javascript",
        "application/x-ecmascript",
        "application/x-javascript",
        "text/ecmascript",
        "text/javascript",
        "text/javascript1.0",
        "text/javascript1.1",
        "text/javascript1.2",
        "text/javascript1.3",
        "text/javascript1.4",
        "text/javascript1.5",
        "text/jscript",
        "text/livescript",
        "text/x-ecmascript",
        "text/x-javascript",
        "text/css",
        "application/wasm",
    }
)

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Names `sanitize_filename` returns unchanged (checked by a test): printable ASCII
# without separators or quotes, no leading or trailing dot or space, at most 200 bytes,
# no doubled spaces or dots next to dots or spaces.
_PLAIN_NAME = re.compile(
    r"[A-Za-z0-9_\-+()@~,=](?:[A-Za-z0-9_\-+()@~,=. ]{0,198}[A-Za-z0-9_\-+()@~,=])?"
)
_UNTIDY = re.compile(r"  |\.\.|\. | \.")
# Outside printable ASCII, the quote and backslash (quoted-string), and "%" (some
# browsers percent-decode the legacy parameter).
_ASCII_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\%]')


def guess_content_type(filename: str | None) -> str:
    """Guess a content type from a filename's extension, else `application/octet-stream`."""
    if filename and type(filename) is str:
        return _guess_cached(filename, len(mimetypes.types_map) + len(mimetypes.common_types))
    return _guess(filename)


@lru_cache(maxsize=1024)
def _guess_cached(filename: str, _generation: int) -> str:
    # Keyed by the size of the type maps too, so extensions registered later with
    # `mimetypes.add_type` (strict or not) are seen.
    return _guess(filename)


def _guess(filename: str | None) -> str:
    if filename:
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        if guessed:
            return guessed
    return DEFAULT_CONTENT_TYPE


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def serves_inline(content_type: str | None) -> bool:
    """Whether a file of `content_type` may be displayed inline by a browser.

    The one rule for every response and every stored `Content-Disposition`: only the
    passive types of
    [`INLINE_CONTENT_TYPES`][sqlalchemy_obstore._attributes.INLINE_CONTENT_TYPES]
    (raster images, audio, video, plain text) are; everything else is an attachment.

    Example:
        >>> serves_inline("image/png"), serves_inline("text/plain; charset=utf-8")
        (True, True)
        >>> serves_inline("text/xsl"), serves_inline("image/svg+xml"), serves_inline(None)
        (False, False, False)
    """
    return _base_type(content_type) in INLINE_CONTENT_TYPES


def response_content_type(content_type: str) -> str:
    """The `Content-Type` to send for a stored file of `content_type`.

    The stored type, except for the types a browser would run as a script, worker or
    style sheet of a page (JavaScript, CSS, WebAssembly): those are sent as
    `application/octet-stream`, so that an uploaded file can never be loaded as code
    of the application's own pages, whatever their Content Security Policy allows
    from the same origin.

    Example:
        >>> response_content_type("text/javascript"), response_content_type("image/png")
        ('application/octet-stream', 'image/png')
    """
    if _base_type(content_type) in _SUBRESOURCE_TYPES:
        return DEFAULT_CONTENT_TYPE
    return content_type


def content_disposition(filename: str, content_type: str, *, inline: bool | None = None) -> str:
    """Build a `Content-Disposition` value (RFC 6266) carrying a sanitised filename.

    Inline only for the passive types of
    [`serves_inline`][sqlalchemy_obstore._attributes.serves_inline], and only when
    `inline` is not `False`; every other type is an `attachment`, whatever `inline`
    asks, so neither a signed GET nor a download route ever renders it in the browser.

    The name is display data from the uploader: directories, `..`, control characters,
    NUL and bidi overrides are removed first
    ([`sanitize_filename`][sqlalchemy_obstore.keys.sanitize_filename]). It is then
    given twice: the exact UTF-8 name percent-encoded in `filename*=` (RFC 5987), which
    every current browser prefers, and an ASCII fallback in `filename=`.

    Example:
        >>> content_disposition("résumé.txt", "text/plain")
        'inline; filename="r_sum_.txt"; filename*=UTF-8\\'\\'r%C3%A9sum%C3%A9.txt'
        >>> content_disposition("../../evil\\u202egnp.exe", "application/pdf")
        'attachment; filename="evilgnp.exe"; filename*=UTF-8\\'\\'evilgnp.exe'
    """
    if type(filename) is str and type(content_type) is str:
        return _disposition_cached(filename, content_type, inline)
    return _disposition(filename, content_type, inline)


@lru_cache(maxsize=1024)
def _disposition_cached(filename: str, content_type: str, inline: bool | None) -> str:
    return _disposition(filename, content_type, inline)


def _display_name(filename: object) -> str:
    if (
        isinstance(filename, str)
        and _PLAIN_NAME.fullmatch(filename)
        and not _UNTIDY.search(filename)
    ):
        return filename  # already what sanitize_filename returns (and ~20x cheaper)
    return sanitize_filename(filename if isinstance(filename, str) else "")


def _disposition(filename: str, content_type: str, inline: bool | None) -> str:
    kind = "inline" if inline is not False and serves_inline(content_type) else "attachment"
    name = _display_name(filename)
    fallback = _ASCII_FALLBACK_UNSAFE.sub("_", name) or DEFAULT_FILENAME
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _header_safe(text: str) -> bool:
    return all(32 <= ord(ch) < 127 for ch in text)


def object_attributes(
    *,
    filename: str,
    content_type: str,
    metadata: Mapping[str, str],
    cache_control: str | None = None,
    inline: bool | None = None,
    include_metadata: bool = True,
) -> dict[str, str]:
    """The attributes stored with an object.

    User metadata entries are included when both key and value can travel as HTTP
    header text (ASCII, the key a token); the column keeps every entry regardless.
    """
    attributes = {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(filename, content_type, inline=inline),
    }
    if cache_control:
        attributes["Cache-Control"] = cache_control
    if include_metadata:
        for key, value in metadata.items():
            if (
                _TOKEN.match(key)
                and _header_safe(value)
                and key.lower() not in {k.lower() for k in attributes}
            ):
                attributes[key.lower()] = value
    return attributes
