"""Object attributes written with an upload: type, disposition, caching, user metadata."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote

__all__ = (
    "ACTIVE_CONTENT_TYPES",
    "DEFAULT_CONTENT_TYPE",
    "content_disposition",
    "guess_content_type",
    "object_attributes",
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

ACTIVE_CONTENT_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
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
"""Types a browser would execute or render as a page: served as attachments by default."""

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ASCII_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


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


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def content_disposition(filename: str, content_type: str, *, inline: bool | None = None) -> str:
    """Build a `Content-Disposition` value (RFC 6266) carrying the original filename.

    The name is given twice: an ASCII fallback in `filename=` and the exact UTF-8 name
    percent-encoded in `filename*=` (RFC 5987), which every current browser prefers.
    Active content (HTML, SVG, XML, JavaScript) is an `attachment` unless `inline` is
    forced, so a signed GET never renders it in the browser.

    Example:
        >>> content_disposition("résumé.pdf", "application/pdf")
        'inline; filename="r_sum_.pdf"; filename*=UTF-8\\'\\'r%C3%A9sum%C3%A9.pdf'
    """
    if type(filename) is str and type(content_type) is str:
        return _disposition_cached(filename, content_type, inline)
    return _disposition(filename, content_type, inline)


@lru_cache(maxsize=1024)
def _disposition_cached(filename: str, content_type: str, inline: bool | None) -> str:
    return _disposition(filename, content_type, inline)


def _disposition(filename: str, content_type: str, inline: bool | None) -> str:
    if inline is None:
        inline = _base_type(content_type) not in ACTIVE_CONTENT_TYPES
    kind = "inline" if inline else "attachment"
    fallback = _ASCII_FALLBACK_UNSAFE.sub("_", filename) or "file"
    encoded = quote(filename, safe="!#$&+-.^_`|~")
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
